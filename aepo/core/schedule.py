"""The entropy target at a step: ``aepo.target_entropy``, or a schedule that ends there.

The target is a pure function of the step number, so a resumed run (both engines restore
their step counter) continues the schedule where it stopped without saving anything more.
Step 1 is the first training step; ``steps`` steps later the target has reached
``target_entropy`` and stays there.
"""

from __future__ import annotations

import math

from aepo.core.config import AEPOConfig


def schedule_progress(step: int, steps: int) -> float:
    """0 at step 1, 1 from step ``steps + 1`` on."""
    if step < 1:
        raise ValueError(f"training steps count from 1, got step {step}")
    return min(1.0, (step - 1) / steps)


def target_at(cfg: AEPOConfig, step: int) -> float:
    """H* for training step ``step`` (1-based)."""
    schedule = cfg.target_schedule
    end = cfg.target_entropy
    if schedule is None or schedule.kind == "constant":
        return end
    progress = schedule_progress(step, schedule.steps)
    if schedule.kind == "linear":
        weight = progress
    else:  # cosine: slow at both ends, half-way at half the steps
        weight = (1.0 - math.cos(math.pi * progress)) / 2.0
    return schedule.start + (end - schedule.start) * weight
