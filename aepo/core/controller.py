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
    """1.0 under ``gain: fixed``; in [MIN_STRENGTH, 1] under ``gain: proportional``; 0 when
    :meth:`EntropyController.settle` dropped a push that the measurement says is wrong"""
    temperature_entropy: float | None = None
    """the measurement the temperature was chosen from (``entropy`` until :meth:`settle`
    re-sizes the push from a newer one: the previous step's under ``previous_step``)"""

    def __post_init__(self) -> None:
        if self.temperature_entropy is None:
            object.__setattr__(self, "temperature_entropy", self.entropy)

    def metrics(self) -> dict[str, float]:
        return {
            "aepo/entropy": self.entropy,
            "aepo/temperature_entropy": self.temperature_entropy,
            "aepo/target_entropy": self.target,
            "aepo/temperature": self.temperature,
            "aepo/direction": float(self.direction),
            "aepo/budget": float(self.budget),
            "aepo/strength": self.strength,
        }


MIN_STRENGTH = 0.1
"""floor on the proportional strength, so that the push never vanishes near the target"""
INTEGRAL_BAND = 0.25
"""relative errors |H - H*| / H* beyond this are not integrated (no wind-up on the way in)"""
INTEGRAL_LIMIT = 0.5
"""most strength the integral may add or remove"""


class EntropyController:
    """Keeps the last measurement and decides each step's temperature and sample budget.

    There is no decision before the first measurement (``has_measurement`` is False): on
    step 1 engines measure pi_old's entropy first, since a guess would push the wrong way
    on a model whose entropy is already above (or below) the target.
    """

    def __init__(self, cfg: AEPOConfig):
        self.cfg = cfg
        self.entropy: float | None = None
        self.integral = 0.0
        """``controller.integral_gain`` x the summed relative errors near the target, within
        +-INTEGRAL_LIMIT: the standing push that a steady drift needs"""
        self._integrated = True  # whether the latest measurement is in ``integral`` yet
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
        self._integrated = False
        return entropy

    def _command(self, target: float) -> float:
        """Signed push: > 0 raise, <= 0 lower; its size is the strength before the floor and
        cap. Without integral gain its sign is the paper's rule (H < H* raises)."""
        assert self.entropy is not None
        error = (target - self.entropy) / target
        ctl = self.cfg.controller
        if not self._integrated:
            self._integrated = True
            # Only near the target: the descent from a warm start's entropy would otherwise
            # wind the sum up and overshoot for as many steps as it took to unwind.
            if ctl.integral_gain > 0 and abs(error) < INTEGRAL_BAND:
                self.integral = min(
                    INTEGRAL_LIMIT, max(-INTEGRAL_LIMIT, self.integral + ctl.integral_gain * error)
                )
        if ctl.gain != "proportional":
            return 1.0 if error > 0 else -1.0
        return ctl.proportional_gain * error + self.integral

    def decide(self, step: int) -> Decision:
        if self.entropy is None:
            raise RuntimeError(
                "EntropyController.decide() before any observe(): measure pi_old's entropy first"
            )
        cfg = self.cfg
        target = target_at(cfg, step)  # aepo.target_schedule, or target_entropy
        command = self._command(target)
        direction = RAISE if command > 0 else LOWER
        strength, budget = self._push(direction, command)
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

    def _push(self, direction: int, command: float) -> tuple[float, int]:
        """(strength, budget) of a push in ``direction`` for a signed ``command``."""
        cfg = self.cfg
        max_samples = cfg.samples_up if direction == RAISE else cfg.samples_down
        if cfg.controller.gain != "proportional":
            return 1.0, max_samples
        strength = min(1.0, max(MIN_STRENGTH, abs(command)))
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
        command = self._command(decision.target)
        direction = RAISE if command > 0 else LOWER
        if direction != decision.direction:
            strength, budget = 0.0, 0
        else:
            strength, budget = self._push(direction, command)
        settled = replace(decision, entropy=self.entropy, budget=budget, strength=strength)
        if self.history and self.history[-1] == decision:
            self.history[-1] = settled
        return settled

    def state_dict(self) -> dict[str, Any]:
        # The target needs no state (a function of the step, which both engines restore);
        # the last one is saved so a checkpoint shows where a schedule stood.
        return {
            "entropy": self.entropy,
            "integral": self.integral,
            "integrated": self._integrated,
            "config": self.cfg.model_dump(),
            "last_step": self.last_step,
            "last_target": self.last_target,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A state saved before the integral term existed loads with an empty integral."""
        try:
            entropy = state["entropy"]
            self.entropy = None if entropy is None else float(entropy)
            # Absent from checkpoints written before target schedules existed.
            last_step, last_target = state.get("last_step"), state.get("last_target")
            self.last_step = None if last_step is None else int(last_step)
            self.last_target = None if last_target is None else float(last_target)
            # Absent from checkpoints written before the integral term existed.
            integral = float(state.get("integral", 0.0))
            integrated = state.get("integrated", True)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"corrupt entropy-controller state: {err!r}") from err
        if not math.isfinite(integral) or not isinstance(integrated, bool):
            raise ValueError(
                f"corrupt entropy-controller state: integral={integral!r}, "
                f"integrated={integrated!r}"
            )
        self.integral, self._integrated = integral, integrated
