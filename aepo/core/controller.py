"""The entropy controller: from a measured entropy to this step's temperature and budget.

The paper's rule is bang-bang: ``T = t_low + (t_high - t_low) * 1[H < H*]`` with a fixed
number of REINFORCE samples (60 up, 30 down). ``controller.gain: proportional`` scales the
push with the relative error ``|H - H*| / H*``, so one config holds entropy on models whose
natural drift differs in strength, without oscillating around the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from aepo.core.config import AEPOConfig

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
    """1.0 under ``gain: fixed``; in [MIN_STRENGTH, 1] under ``gain: proportional``; 0 when
    :meth:`EntropyController.settle` dropped a push that the measurement says is wrong"""

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
        target = cfg.target_entropy
        direction = RAISE if self.entropy < target else LOWER
        strength, budget = self._push(direction, self.entropy, target)
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
        return decision

    def _push(self, direction: int, entropy: float, target: float) -> tuple[float, int]:
        """(strength, budget) of a push in ``direction`` from ``entropy``."""
        cfg = self.cfg
        max_samples = cfg.samples_up if direction == RAISE else cfg.samples_down
        if cfg.controller.gain != "proportional":
            return 1.0, max_samples
        error = abs(target - entropy) / target
        strength = min(1.0, max(MIN_STRENGTH, cfg.controller.proportional_gain * error))
        return strength, int(round(max_samples * strength))

    def settle(self, decision: Decision) -> Decision:
        """Re-decide the push of ``decision`` from the latest measurement, keeping its
        temperature (the extra pass is already sampled at it).

        Under ``entropy_source: previous_step`` the temperature is chosen before this step's
        entropy is measured, one update late; the REINFORCE rows enter the update only after
        the measurement, so their number and weight can follow it. If the measurement has
        crossed the target since, the samples push the wrong way and none is used (budget
        and strength 0); otherwise the budget and strength are those the measurement gives.
        """
        if self.entropy is None:
            raise RuntimeError("EntropyController.settle() before any observe()")
        direction = RAISE if self.entropy < decision.target else LOWER
        if direction != decision.direction:
            strength, budget = 0.0, 0
        else:
            strength, budget = self._push(direction, self.entropy, decision.target)
        settled = replace(decision, entropy=self.entropy, budget=budget, strength=strength)
        if self.history and self.history[-1] == decision:
            self.history[-1] = settled
        return settled

    def state_dict(self) -> dict[str, Any]:
        return {"entropy": self.entropy, "config": self.cfg.model_dump()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            entropy = state["entropy"]
            self.entropy = None if entropy is None else float(entropy)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"corrupt entropy-controller state: {err!r}") from err
