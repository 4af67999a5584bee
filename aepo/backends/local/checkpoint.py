"""Checkpoints of a local run: the model (``save_pretrained``), the optimiser, and the
trainer state (step, data position, entropy controller, positive-rate tracker, RNG states),
so ``--resume`` continues the same trajectory."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
MODEL_DIR = "model"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.pt"


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


def latest_checkpoint(run_dir: str | Path) -> Path:
    root = Path(run_dir) / CHECKPOINT_DIR
    found = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())
    if not found:
        raise CheckpointError(f"no checkpoint to resume from under {root}")
    return found[-1]


def save_checkpoint(path: Path, model, tokenizer, optimizer, state: dict[str, Any]) -> Path:
    staging = path.with_name(path.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging / MODEL_DIR)
    tokenizer.save_pretrained(staging / MODEL_DIR)
    torch.save(optimizer.state_dict(), staging / OPTIMIZER_FILE)
    torch.save({**state, "rng": rng_state()}, staging / STATE_FILE)
    shutil.rmtree(path, ignore_errors=True)
    staging.rename(path)  # a checkpoint directory is complete or absent
    return path


def load_checkpoint_files(path: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """``(model_dir, optimizer_state, trainer_state)``, with errors naming the bad path."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    for name in (MODEL_DIR, OPTIMIZER_FILE, STATE_FILE):
        if not (path / name).exists():
            raise CheckpointError(f"checkpoint {path} is incomplete: {path / name} is missing")
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
