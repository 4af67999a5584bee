"""The entropy controller: from a measured entropy to this step's temperature and budget.

The paper's rule is bang-bang: ``T = t_low + (t_high - t_low) * 1[H < H*]`` with a fixed
number of REINFORCE samples (60 up, 30 down). ``gain: proportional`` scales the push with
the relative error ``|H - H*| / H*`` (and optionally its integral), so one config holds
entropy on models whose natural drift differs in strength.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aepo.core.config import AEPOConfig

RAISE = 1
LOWER = -1


@dataclass(frozen=True)
class Decision:
    """What the controller decided for one step; engines log it as ``aepo/*`` scalars."""

    step: int
    entropy: float
    """the (possibly EMA-smoothed) entropy the decision was based on"""
    target: float
    direction: int
    """+1 raise entropy (sample hot), -1 lower it (sample cold)"""
    temperature: float
    budget: int
    """most REINFORCE samples that may enter this step's update"""
    strength: float
    """1.0 under ``gain: fixed``; in [min_strength, 1] under ``gain: proportional``"""

    def metrics(self) -> dict[str, float]:
        return {
            "aepo/entropy": self.entropy,
            "aepo/target_entropy": self.target,
            "aepo/temperature": self.temperature,
            "aepo/direction": float(self.direction),
            "aepo/budget": float(self.budget),
            "aepo/strength": self.strength,
        }


class EntropyController:
    """Keeps the last measurement and decides each step's temperature and sample budget.

    There is no decision before the first measurement (``has_measurement`` is False): on
    step 1 engines measure pi_old's entropy first, since a guess would push the wrong way
    on a model whose entropy is already above (or below) the target.
    """

    def __init__(self, cfg: AEPOConfig):
        self.cfg = cfg
        self.entropy: float | None = None
        self.raw_entropy: float | None = None
        self.integral = 0.0
        self.history: list[Decision] = []
        """this process's decisions, for logs and tests; not saved in ``state_dict``, which
        stays the same size however long a run is"""

    @property
    def has_measurement(self) -> bool:
        return self.entropy is not None

    def observe(self, entropy: float) -> float:
        """Record pi_old's token-mean entropy at temperature 1; returns the smoothed value."""
        entropy = float(entropy)
        if not math.isfinite(entropy) or entropy < 0:
            raise ValueError(f"measured entropy must be finite and >= 0, got {entropy}")
        self.raw_entropy = entropy
        ema = self.cfg.entropy_ema
        if ema is None or self.entropy is None:
            self.entropy = entropy
        else:
            self.entropy = ema * entropy + (1 - ema) * self.entropy
        return self.entropy

    def decide(self, step: int) -> Decision:
        if self.entropy is None:
            raise RuntimeError(
                "EntropyController.decide() before any observe(): measure pi_old's entropy first"
            )
        cfg = self.cfg
        target = cfg.target_entropy
        error = (target - self.entropy) / target  # > 0: entropy too low
        if cfg.gain == "fixed":
            direction = RAISE if self.entropy < target else LOWER
            strength = 1.0
        else:
            self.integral = self._integrate(error)
            control = cfg.proportional_gain * error + cfg.integral_gain * self.integral
            direction = RAISE if control > 0 or (control == 0 and error > 0) else LOWER
            strength = min(1.0, max(cfg.min_strength, abs(control)))

        max_samples = cfg.samples_up if direction == RAISE else cfg.samples_down
        far_temperature = cfg.t_high if direction == RAISE else cfg.t_low
        budget = max_samples
        temperature = far_temperature
        if cfg.gain == "proportional":
            if cfg.scale_budget:
                budget = int(round(max_samples * strength))
            if cfg.scale_temperature:
                temperature = 1.0 + (far_temperature - 1.0) * strength
        decision = Decision(
            step=step,
            entropy=self.entropy,
            target=target,
            direction=direction,
            temperature=temperature,
            budget=budget,
            strength=strength,
        )
        self.history.append(decision)
        return decision

    def _integrate(self, error: float) -> float:
        # Clamping the accumulated error is the anti-windup: after a long excursion the
        # controller must not keep pushing the same way long after the target is crossed.
        limit = self.cfg.integral_limit
        return max(-limit, min(limit, self.integral + error))

    def state_dict(self) -> dict[str, Any]:
        return {
            "entropy": self.entropy,
            "raw_entropy": self.raw_entropy,
            "integral": self.integral,
            "config": self.cfg.model_dump(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.entropy = state["entropy"]
            self.raw_entropy = state["raw_entropy"]
            self.integral = float(state["integral"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"corrupt entropy-controller state: {err!r}") from err
