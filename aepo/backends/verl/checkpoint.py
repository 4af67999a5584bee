"""The AEPO state file beside verl's checkpoint: ``global_step_N/aepo_state.json``.

verl's checkpoint holds the model, optimizer and dataloader; the entropy controller's
measurement, positive-rate estimates and selection RNG live here, so a resumed run
continues the same entropy trajectory.
"""

from __future__ import annotations

import json
import os
from typing import Any

STATE_FILE = "aepo_state.json"
STATE_FORMAT = 1


class CheckpointStateError(RuntimeError):
    """The checkpoint cannot be resumed as an AEPO run; the message names the file."""


def state_path(folder: str) -> str:
    return os.path.join(folder, STATE_FILE)


def write_state(folder: str, state: dict[str, Any]) -> str:
    """Write atomically: a crash mid-write must not leave a truncated file behind."""
    os.makedirs(folder, exist_ok=True)
    path = state_path(folder)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"format": STATE_FORMAT, **state}, f, indent=1, allow_nan=True)
    os.replace(tmp, path)
    return path


def read_state(folder: str) -> dict[str, Any] | None:
    """The saved state, None if there is no file; CheckpointStateError if unreadable."""
    path = state_path(folder)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointStateError(f"{path}: cannot read AEPO state ({err})") from err
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointStateError(
            f"{path}: not an AEPO state file of format {STATE_FORMAT} "
            f"(got format {state.get('format') if isinstance(state, dict) else type(state).__name__})"
        )
    return state
