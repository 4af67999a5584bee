"""The entropy controller: from a measured entropy to this step's temperature and budget.

The paper's rule is bang-bang: ``T = t_low + (t_high - t_low) * 1[H < H*]`` with a fixed
number of REINFORCE samples (60 up, 30 down). ``controller.gain: proportional`` scales the
push with the relative error ``|H - H*| / H*``, so one config holds entropy on models whose
natural drift differs in strength, without oscillating around the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aepo.core.config import AEPOConfig
from aepo.core.schedule import target_at

RAISE = 1
LOWER = -1


@dataclass(frozen=True)
class Decision:
    """What the controller decided for one step; engines log it as ``aepo/*`` scalars."""

    step: int
    entropy: float
    """the measured entropy the decision was based on"""
    target: float
    direction: int
    """+1 raise entropy (sample hot), -1 lower it (sample cold)"""
    temperature: float
    budget: int
    """most REINFORCE samples that may enter this step's update"""
    strength: float
    """1.0 under ``gain: fixed``; in [MIN_STRENGTH, 1] under ``gain: proportional``"""

    def metrics(self) -> dict[str, float]:
        return {
            "aepo/entropy": self.entropy,
            "aepo/target_entropy": self.target,
            "aepo/temperature": self.temperature,
            "aepo/direction": float(self.direction),
            "aepo/budget": float(self.budget),
            "aepo/strength": self.strength,
        }


MIN_STRENGTH = 0.1
"""floor on the proportional strength, so that the push never vanishes near the target"""


class EntropyController:
    """Keeps the last measurement and decides each step's temperature and sample budget.

    There is no decision before the first measurement (``has_measurement`` is False): on
    step 1 engines measure pi_old's entropy first, since a guess would push the wrong way
    on a model whose entropy is already above (or below) the target.
    """

    def __init__(self, cfg: AEPOConfig):
        self.cfg = cfg
        self.entropy: float | None = None
        self.last_step: int | None = None
        self.last_target: float | None = None
        """step and target of the last decision (saved; a resumed run reports them too)"""
        self.history: list[Decision] = []
        """this process's decisions, for logs and tests; not saved in ``state_dict``, which
        stays the same size however long a run is"""

    @property
    def has_measurement(self) -> bool:
        return self.entropy is not None

    def observe(self, entropy: float) -> float:
        """Record pi_old's token-mean entropy at temperature 1."""
        entropy = float(entropy)
        if not math.isfinite(entropy) or entropy < 0:
            raise ValueError(f"measured entropy must be finite and >= 0, got {entropy}")
        self.entropy = entropy
        return entropy

    def decide(self, step: int) -> Decision:
        if self.entropy is None:
            raise RuntimeError(
                "EntropyController.decide() before any observe(): measure pi_old's entropy first"
            )
        cfg = self.cfg
        target = target_at(cfg, step)  # aepo.target_schedule, or target_entropy
        direction = RAISE if self.entropy < target else LOWER
        max_samples = cfg.samples_up if direction == RAISE else cfg.samples_down
        strength = 1.0
        budget = max_samples
        if cfg.controller.gain == "proportional":
            error = abs(target - self.entropy) / target
            strength = min(1.0, max(MIN_STRENGTH, cfg.controller.proportional_gain * error))
            budget = int(round(max_samples * strength))
        decision = Decision(
            step=step,
            entropy=self.entropy,
            target=target,
            direction=direction,
            temperature=cfg.t_high if direction == RAISE else cfg.t_low,
            budget=budget,
            strength=strength,
        )
        self.history.append(decision)
        self.last_step, self.last_target = step, target
        return decision

    def state_dict(self) -> dict[str, Any]:
        # The target needs no state (a function of the step, which both engines restore);
        # the last one is saved so a checkpoint shows where a schedule stood.
        return {
            "entropy": self.entropy,
            "config": self.cfg.model_dump(),
            "last_step": self.last_step,
            "last_target": self.last_target,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            entropy = state["entropy"]
            self.entropy = None if entropy is None else float(entropy)
            # Absent from checkpoints written before target schedules existed.
            last_step, last_target = state.get("last_step"), state.get("last_target")
            self.last_step = None if last_step is None else int(last_step)
            self.last_target = None if last_target is None else float(last_target)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"corrupt entropy-controller state: {err!r}") from err
