"""Checkpoints of a local run: the model (``save_pretrained``), the optimiser, and the
trainer state (step, data position, entropy controller, positive-rate tracker, RNG states),
so ``--resume`` continues the same trajectory.

A save writes ``step_N.tmp`` and renames it to ``step_N`` once every file is on disk, so a
directory named ``step_N`` is a finished checkpoint and anything else (a save killed half-way,
even a complete ``.tmp`` whose rename never happened) is not one: ``latest_checkpoint`` skips
and removes those with a warning instead of resuming from them."""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aepo.core.resume_changes import ResumeRefused, resume_changes

CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.pt"
STAGING_SUFFIX = ".tmp"
_FINISHED = re.compile(r"step_(\d+)")

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or cannot be read; the message names the path."""


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:06d}"


def _missing_files(path: Path) -> list[str]:
    return [name for name in (MODEL_DIR, OPTIMIZER_FILE, STATE_FILE) if not (path / name).exists()]


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest finished checkpoint of a run. Unfinished saves (``step_N.tmp``) are removed
    with a warning; a ``step_N`` directory that lacks files (never written by a save, so
    someone else's) is skipped with a warning and left in place."""
    root = Path(run_dir) / CHECKPOINT_DIR
    finished: list[tuple[int, Path]] = []
    for entry in sorted(root.glob("step_*")):
        if entry.name.endswith(STAGING_SUFFIX):
            logger.warning("removing %s: a save that did not finish (not a checkpoint)", entry)
            shutil.rmtree(entry, ignore_errors=True)
            continue
        match = _FINISHED.fullmatch(entry.name)
        if match is None or not entry.is_dir():
            continue
        missing = _missing_files(entry)
        if missing:
            logger.warning("skipping %s: not a complete checkpoint (no %s)", entry, missing[0])
            continue
        finished.append((int(match.group(1)), entry))
    if not finished:
        raise CheckpointError(f"no checkpoint to resume from under {root}")
    return max(finished)[1]


def finished_checkpoints(run_dir: str | Path) -> list[Path]:
    """The ``step_N`` directories of a run, oldest first (looked at only, nothing removed)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    found = [
        (int(m.group(1)), p)
        for p in root.glob("step_*")
        if (m := _FINISHED.fullmatch(p.name)) and p.is_dir()
    ]
    return [p for _, p in sorted(found)]


def _fsync_tree(root: Path) -> None:
    # The rename below is the commit point; the files must be on disk before it, or a power
    # loss (unlike kill -9, which keeps the page cache) could leave a finished-looking
    # checkpoint with empty files.
    for directory, _, files in os.walk(root):
        for name in files:
            fd = os.open(Path(directory) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: Path, model, tokenizer, optimizer, state: dict[str, Any]) -> Path:
    staging = path.with_name(path.name + STAGING_SUFFIX)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging / MODEL_DIR)
    tokenizer.save_pretrained(staging / MODEL_DIR)
    torch.save(optimizer.state_dict(), staging / OPTIMIZER_FILE)
    torch.save({**state, "rng": rng_state()}, staging / STATE_FILE)
    _fsync_tree(staging)
    shutil.rmtree(path, ignore_errors=True)
    staging.rename(path)  # a checkpoint directory is complete or absent
    _fsync_dir(path.parent)
    return path


def require_checkpoint_dir(path: str | Path) -> Path:
    """``path`` as a finished checkpoint directory with every file, or a CheckpointError
    naming what is wrong (read nothing yet)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.name.endswith(STAGING_SUFFIX):
        raise CheckpointError(
            f"{path} is a save that did not finish, not a checkpoint; resume from "
            f"{path.with_name(path.name[: -len(STAGING_SUFFIX)])} or an earlier step"
        )
    missing = _missing_files(path)
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: {path / missing[0]} is missing")
    return path


def load_checkpoint_files(path: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """``(model_dir, optimizer_state, trainer_state)``, with errors naming the bad path."""
    path = require_checkpoint_dir(path)
    loaded = []
    for name in (OPTIMIZER_FILE, STATE_FILE):
        try:
            # Our own files hold numpy RNG state and plain containers: not weights-only.
            loaded.append(torch.load(path / name, map_location="cpu", weights_only=False))
        except Exception as err:
            raise CheckpointError(f"cannot read checkpoint file {path / name}: {err}") from err
    state = loaded[1]
    missing = {"step", "data_position", "controller", "positive_rates", "rng"} - set(state)
    if missing:
        raise CheckpointError(f"{path / STATE_FILE} lacks {sorted(missing)}")
    if "rng_state" not in state:
        raise CheckpointError(
            f"{path / STATE_FILE} has no 'rng_state': it was written before the AEPO step kept "
            "its own RNG; resume it with the aepo version that wrote it, or start a new run"
        )
    return path / MODEL_DIR, loaded[0], state


# Keys a resumed run may change without changing what it trains: how long, where, how fast.
RUN_CONTROL_KEYS = frozenset(
    {
        "trainer.steps",
        "trainer.output_dir",
        "trainer.progress",
        "trainer.device",
        "trainer.torch_threads",
        "trainer.save_every",
        "trainer.entropy_chunk_rows",
        "trainer.cache_dir",
    }
)
# Values that come from the checkpoint whatever the config says (torch's load_state_dict
# restores the optimiser's param_groups, hyper-parameters included).
FROM_CHECKPOINT = {
    "trainer.model": "the weights come from the checkpoint",
    "trainer.warm_start": "the weights come from the checkpoint",
    "trainer.lr": "the optimiser keeps the checkpoint's value",
    "trainer.weight_decay": "the optimiser keeps the checkpoint's value",
}


def saved_run_config(path: str | Path) -> dict[str, Any] | None:
    """The ``run_config`` a checkpoint was saved with (``None`` for one that has none), read
    from the small trainer state only, before any weights are loaded."""
    file = require_checkpoint_dir(path) / STATE_FILE
    try:
        state = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint file {file}: {err}") from err
    saved = state.get("run_config") if isinstance(state, dict) else None
    return saved if isinstance(saved, dict) else None


def resume_differences(path: str | Path, saved: dict[str, Any], current: dict[str, Any]) -> str:
    """Compare the config a checkpoint was trained with to the one resuming it. Raises
    :class:`CheckpointError` for a change the run cannot continue under; returns a one-line
    description of the other changes ('' when none)."""
    try:
        changes = resume_changes(
            saved, current, not_changes=RUN_CONTROL_KEYS, kept_from_checkpoint=FROM_CHECKPOINT
        )
    except ResumeRefused as refused:
        raise CheckpointError(
            f"checkpoint {path} was trained with {refused.key}={refused.saved!r}, the config "
            f"says {refused.current!r}: a run cannot change {refused.key}; start a new run (its "
            f"trainer.model can be {Path(path) / MODEL_DIR})"
        ) from None
    return "; ".join(changes)
