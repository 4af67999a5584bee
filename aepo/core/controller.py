"""The entropy controller: from a measured entropy to this step's temperature and budget.

The paper's rule is bang-bang: ``T = t_low + (t_high - t_low) * 1[H < H*]`` with a fixed
number of REINFORCE samples (60 up, 30 down). ``controller.gain: proportional`` scales the
push with the relative error ``|H - H*| / H*``, so one config holds entropy on models whose
natural drift differs in strength, without oscillating around the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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
    :func:`settle` dropped a push that the measurement says is wrong"""
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


@dataclass(frozen=True)
class ControllerState:
    """What the controller carries from one step to the next (saved with the checkpoint)."""

    entropy: float | None = None
    """the latest measurement of pi_old's token-mean entropy at T = 1"""
    integral: float = 0.0
    """``controller.integral_gain`` x the summed relative errors near the target, within
    +-INTEGRAL_LIMIT: the standing push that a steady drift needs"""

    @property
    def has_measurement(self) -> bool:
        return self.entropy is not None


def observe(cfg: AEPOConfig, state: ControllerState, entropy: float, target: float):
    """The state after measuring ``entropy`` at a step whose target is ``target``: the one
    place the integral changes, once per measurement."""
    entropy = float(entropy)
    if not math.isfinite(entropy) or entropy < 0:
        raise ValueError(f"measured entropy must be finite and >= 0, got {entropy}")
    integral = state.integral
    error = (target - entropy) / target
    gain = cfg.controller.integral_gain
    # Only near the target: the descent from a warm start's entropy would otherwise wind the
    # sum up and overshoot for as many steps as it took to unwind.
    if gain > 0 and abs(error) < INTEGRAL_BAND:
        integral = min(INTEGRAL_LIMIT, max(-INTEGRAL_LIMIT, integral + gain * error))
    return ControllerState(entropy=entropy, integral=integral)


def _command(cfg: AEPOConfig, state: ControllerState, target: float) -> float:
    """Signed push: > 0 raise, <= 0 lower; its size is the strength before the floor and cap.
    Without integral gain its sign is the paper's rule (H < H* raises)."""
    if state.entropy is None:
        raise RuntimeError("the entropy controller has no measurement: measure pi_old first")
    error = (target - state.entropy) / target
    if cfg.controller.gain != "proportional":
        return 1.0 if error > 0 else -1.0
    return cfg.controller.proportional_gain * error + state.integral


def _push(cfg: AEPOConfig, direction: int, command: float) -> tuple[float, int]:
    """(strength, budget) of a push in ``direction`` for a signed ``command``."""
    max_samples = cfg.samples_up if direction == RAISE else cfg.samples_down
    if cfg.controller.gain != "proportional":
        return 1.0, max_samples
    strength = min(1.0, max(MIN_STRENGTH, abs(command)))
    return strength, int(round(max_samples * strength))


def decide(cfg: AEPOConfig, state: ControllerState, step: int, target: float) -> Decision:
    """This step's temperature and budget from the latest measurement. There is no decision
    before the first measurement: on step 1 engines measure pi_old's entropy first, since a
    guess would push the wrong way on a model already above (or below) the target."""
    command = _command(cfg, state, target)
    direction = RAISE if command > 0 else LOWER
    strength, budget = _push(cfg, direction, command)
    return Decision(
        step=step,
        entropy=state.entropy,
        target=target,
        direction=direction,
        temperature=cfg.t_high if direction == RAISE else cfg.t_low,
        budget=budget,
        strength=strength,
    )


def settle(cfg: AEPOConfig, state: ControllerState, decision: Decision) -> Decision:
    """``decision`` with its push re-decided from the latest measurement, keeping its
    temperature (the extra pass is already sampled at it).

    Under ``entropy_source: previous_step`` the temperature is chosen before this step's
    entropy is measured, one update late; the REINFORCE rows enter the update only after the
    measurement, so their number and weight can follow it. If the measurement has crossed the
    target since, the samples push the wrong way and none is used (budget and strength 0);
    otherwise the budget and strength are those the measurement gives.
    """
    command = _command(cfg, state, decision.target)
    direction = RAISE if command > 0 else LOWER
    if direction != decision.direction:
        strength, budget = 0.0, 0
    else:
        strength, budget = _push(cfg, direction, command)
    return replace(decision, entropy=state.entropy, budget=budget, strength=strength)
