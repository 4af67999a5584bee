"""The AEPO state file beside verl's checkpoint: ``global_step_N/aepo_state.json``.

verl's checkpoint holds the model, optimizer and dataloader; the entropy controller's
measurement, positive-rate estimates and selection RNG live here, so a resumed run
continues the same entropy trajectory.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

STATE_FILE = "aepo_state.json"
STATE_FORMAT = 1
TRACKER_FILE = "latest_checkpointed_iteration.txt"
"""the file verl writes last in a checkpoint, naming the newest step folder"""
STEP_PREFIX = "global_step_"


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


RESUMED_PREFIX = "aepo: resumed state"
"""start of the line the trainer prints after restoring a checkpoint's AEPO state"""


def state_summary(state: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must carry on with, comparable between the file and the restored
    trainer: the controller's measurement, integral and last target, the positive-rate
    estimates, the adaptive entropy coefficient, and a digest of the selection RNG."""
    import hashlib

    controller = {k: v for k, v in state.get("controller", {}).items() if k != "config"}
    rng = bytes(state.get("rng_state", []))
    return {
        "controller": controller,
        "positive_rates": state.get("positive_rates"),
        "adaptive_entropy": state.get("adaptive_entropy"),
        "rng_sha256": hashlib.sha256(rng).hexdigest(),
    }


# What RayPPOTrainer._load_checkpoint's AEPO side reads from the file (trainer.py).
STATE_KEYS = ("controller", "positive_rates", "rng_state")


def _complete(folder: str) -> bool:
    """verl saves the actor shards (every rank, blocking), then ``data.pt``, then the tracker
    (ray_trainer.py): a folder whose ``data.pt`` loads holds a whole checkpoint."""
    import torch

    if not os.path.isdir(os.path.join(folder, "actor")):
        return False
    try:
        torch.load(os.path.join(folder, "data.pt"), weights_only=False)
    except Exception:  # missing or cut short by a kill mid-write
        return False
    return True


def repair_tracker(checkpoint_dir: str) -> str | None:
    """Make verl's latest-step file readable again after a kill in the middle of writing it.

    verl rewrites ``latest_checkpointed_iteration.txt`` in place (``open(path, "w")``,
    ray_trainer.py): a kill between the truncation and the write leaves an empty file,
    on which ``find_latest_ckpt_path`` raises ``ValueError`` and no resume starts. Such a
    file is pointed (atomically) at the newest complete ``global_step_N`` folder; a readable
    file is left alone. Returns the repaired step's folder, None when nothing was repaired;
    CheckpointStateError when no folder holds a complete checkpoint."""
    checkpoint_dir = os.path.abspath(checkpoint_dir)
    tracker = os.path.join(checkpoint_dir, TRACKER_FILE)
    try:
        with open(tracker, "rb") as f:
            int(f.read().decode())
        return None
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        pass
    steps = sorted(
        (
            int(name[len(STEP_PREFIX) :])
            for name in os.listdir(checkpoint_dir)
            if name.startswith(STEP_PREFIX) and name[len(STEP_PREFIX) :].isdigit()
        ),
        reverse=True,
    )
    for step in steps:
        folder = os.path.join(checkpoint_dir, f"{STEP_PREFIX}{step}")
        if _complete(folder):
            tmp = f"{tracker}.tmp"
            with open(tmp, "w") as f:
                f.write(str(step))
            os.replace(tmp, tracker)
            logger.warning(
                "%s was unreadable (a kill mid-write): it now names step %d", tracker, step
            )
            return folder
    raise CheckpointStateError(
        f"{tracker} is unreadable and no {STEP_PREFIX}N folder under {checkpoint_dir} holds a "
        "complete checkpoint (actor/ and a readable data.pt): start afresh with "
        "trainer.resume_mode=disable or remove the folder"
    )


def resume_folder(trainer_config) -> str | None:
    """The ``global_step_N`` folder verl 0.9.1 will resume from, found with its own rules
    (``RayPPOTrainer._load_checkpoint``, ray_trainer.py: ``resume_mode``, then
    ``latest_checkpointed_iteration.txt`` under ``default_local_dir``); None when it will
    train from scratch. Relative paths are taken against this process's directory."""
    mode = trainer_config.resume_mode
    if mode == "disable":
        return None
    if mode == "resume_path":
        folder = trainer_config.resume_from_path
        if not isinstance(folder, str):
            return None  # verl's own assertion names resume_from_path
    else:
        from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

        repair_tracker(trainer_config.default_local_dir)
        folder = find_latest_ckpt_path(os.path.abspath(trainer_config.default_local_dir))
        if folder is None:
            return None
    return os.path.abspath(folder)


def resume_problems(trainer_config, aepo_config) -> tuple[list[str], str]:
    """``(problems, changes)`` of the resume verl will make, found before Ray starts rather
    than after the workers have loaded the model. Problems: the AEPO state is missing or
    unreadable for an algorithm with an entropy controller (the trainer warns and goes on for
    the others), or it was written by another ``aepo.algorithm``. Changes: a one-line list of
    the other ``aepo`` settings that differ from the checkpoint's ('' when none)."""
    from aepo.core.recipes import recipe_for
    from aepo.core.resume_changes import ResumeRefused, resume_changes

    folder = resume_folder(trainer_config)
    if folder is None:
        return [], ""
    algorithm = aepo_config.algorithm
    uses_controller = recipe_for(aepo_config).has_state
    path = state_path(folder)
    try:
        state = read_state(folder)
    except CheckpointStateError as err:
        if not uses_controller:
            return [], ""
        return [f"trainer.resume_mode={trainer_config.resume_mode}: {err}"], ""
    if state is None:
        if not uses_controller:
            return [], ""
        return [
            f"{path} is missing: resuming algorithm {algorithm!r} from {folder} would restart "
            "the entropy controller from scratch. Restore the file from the run that wrote "
            "this checkpoint, resume a checkpoint saved by aepo's trainer, or start afresh "
            "with trainer.resume_mode=disable"
        ], ""
    saved, current = saved_run_config(state), {"aepo": aepo_config.model_dump(mode="json")}
    if "run_config" not in state:
        current = {"aepo": {"algorithm": algorithm}}  # an older file records only this
    try:
        changes = resume_changes(saved, current) if saved else []
    except ResumeRefused as refused:
        return [
            f"{path} was written by {refused.key}={refused.saved!r}, the config says "
            f"{refused.current!r}: a run cannot change {refused.key} (the controller, tracker "
            "and optimiser state belong to the algorithm that trained them); resume with "
            f"{refused.key}={refused.saved}, or start afresh with trainer.resume_mode=disable"
        ], ""
    if uses_controller:
        absent = [key for key in STATE_KEYS if key not in state]
        if absent:
            return [f"{path}: corrupt AEPO state (no {', '.join(absent)})"], ""
    return [], "; ".join(changes)


def saved_run_config(state: dict[str, Any]) -> dict[str, Any]:
    """The ``aepo`` settings a state file was written with; a file written before they were
    recorded gives its algorithm only (and a file that names none gives nothing)."""
    recorded = state.get("run_config")
    if isinstance(recorded, dict):
        return recorded
    return {"aepo": {"algorithm": state["algorithm"]}} if "algorithm" in state else {}


def state_to_resume(folder: str, algorithm: str, *, uses_controller: bool) -> dict | None:
    """The AEPO state a run resuming ``folder`` with ``algorithm`` loads, or None when it has
    none to load: a missing or unreadable file is an error only for an algorithm with
    controller state (``uses_controller``; ``Recipe.has_state``), a warning otherwise."""
    path = state_path(folder)
    try:
        state = read_state(folder)
    except CheckpointStateError:
        if uses_controller:
            raise
        logger.warning(
            "ignoring unreadable %s: algorithm %s needs no controller state", path, algorithm
        )
        return None
    if state is None:
        if uses_controller:
            raise CheckpointStateError(
                f"{path} is missing: resuming algorithm {algorithm!r} from {folder} would "
                "restart the entropy controller from scratch. Restore the file from the run "
                "that wrote this checkpoint, or resume a checkpoint saved by aepo's trainer."
            )
        logger.warning("%s is missing; algorithm %s needs no controller state", path, algorithm)
        return None
    if state.get("algorithm", algorithm) != algorithm:
        # start-up refuses this before Ray starts; a trainer built some other way must too
        raise CheckpointStateError(
            f"{path} was written by aepo.algorithm={state['algorithm']!r}, the config says "
            f"{algorithm!r}: a run cannot change aepo.algorithm"
        )
    if uses_controller or state.get("uses_controller"):
        return state
    return None
