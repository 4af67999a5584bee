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


def load_checkpoint_files(path: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """``(model_dir, optimizer_state, trainer_state)``, with errors naming the bad path."""
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
    return path / MODEL_DIR, loaded[0], state
