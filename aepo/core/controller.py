"""The entropy controller: from a measured entropy to this step's temperature and budget.

The paper's rule is bang-bang: ``T = t_low + (t_high - t_low) * 1[H < H*]`` with a fixed
number of REINFORCE samples (60 up, 30 down). ``controller.gain: proportional`` scales the
push with the error ``H* - H`` in units of ``max(H*, ERROR_UNIT)`` nats, so that one config
holds entropy on models whose natural drift differs in strength, without oscillating around
the target, and so that the push per nat of error does not grow as the target falls. An
integral term removes the offset a proportional push leaves against a steady drift; it does
not wind up while the push is saturated or dropped.

A guard watches the reward (:func:`watch`): when it collapses, the controller stops pushing
entropy down until the reward recovers. When no sample is positive for a while, the policy may
be dead (every sample wrong: GRPO has no gradient and REINFORCE no sample, an absorbing state),
so the guard revives it with an entropy bonus, the one push that needs no positive
(:func:`_revival`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

from aepo.core.config import AEPOConfig
from aepo.core.entropy_methods import adaptive_coef_step

RAISE = 1
LOWER = -1

logger = logging.getLogger(__name__)


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
    """1.0 under ``gain: fixed``; in [0, 1] under ``gain: proportional``; 0 when the push is
    dropped (:func:`settle`: the measurement says it is wrong; the guard: it would lower the
    entropy of a policy whose reward has collapsed)"""
    temperature_entropy: float | None = None
    """the measurement the temperature was chosen from (``entropy`` until :meth:`settle`
    re-sizes the push from a newer one: the previous step's under ``previous_step``)"""
    row_weight: float = 1.0
    """factor on alpha of every REINFORCE row under ``alpha_meaning: batch_share``, where each
    row is a whole unit of push: the budget is ``ceil(max_samples x strength)`` rows, and this
    spreads the fraction of the last one over them all, so that the push is ``max_samples x
    strength`` rows' worth and goes to zero with the strength"""
    guard: bool = False
    """the reward guard was active when the push was sized"""

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
            "aepo/guard": float(self.guard),
        }


ERROR_UNIT = 1.0
"""nats: the proportional error is (H* - H) / max(H*, ERROR_UNIT). Relative to H*, as it was,
the push saturated at |H - H*| >= H* / proportional_gain, four times sooner at H* = 0.25 than
at 1.0; in nats below 1 nat, the loop's gain is the same at every target up to 1 nat."""
INTEGRAL_BAND = 0.25
"""relative errors |H - H*| / H* beyond this only unwind the integral (no wind-up on the way
in, no standing push kept from an old target)"""
INTEGRAL_LIMIT = 0.5
"""most strength the integral may add or remove"""
REWARD_MOMENTUM = 0.9
"""the guard's moving average of the reward: each step weighs 0.1 (about 10 steps)"""
REVIVAL_MAX_COEF = 1.0
"""most the revival bonus's coefficient may reach (adaptive entropy control's max_coef)"""


@dataclass(frozen=True)
class GuardState:
    """The reward guard's memory (saved with the checkpoint)."""

    reward: float | None = None
    """moving average of the GRPO group's mean reward (REWARD_MOMENTUM)"""
    best: float = 0.0
    """highest moving average so far"""
    dry_steps: int = 0
    """consecutive steps without a positive sample in the GRPO group"""
    active: bool = False
    """the reward has collapsed: pushes that lower entropy are dropped"""
    warned: bool = False
    start_entropy: float | None = None
    """the run's first measurement: the revival bonus lifts the entropy no higher"""
    revival_coef: float = 0.0
    """the revival bonus's coefficient for the next dry step (adaptive entropy control's c)"""
    revival_bonus: float = 0.0
    """the entropy bonus coefficient this step's update applies (0 unless dry)"""


@dataclass(frozen=True)
class ControllerState:
    """What the controller carries from one step to the next (saved with the checkpoint)."""

    entropy: float | None = None
    """the latest measurement of pi_old's token-mean entropy at T = 1"""
    integral: float = 0.0
    """``controller.integral_gain`` x the summed errors near the target, within
    +-INTEGRAL_LIMIT: the standing push that a steady drift needs"""
    guard: GuardState = GuardState()

    @property
    def has_measurement(self) -> bool:
        return self.entropy is not None


def _error(cfg: AEPOConfig, entropy: float, target: float) -> float:
    """(H* - H) in units of max(H*, ERROR_UNIT) under ``gain: proportional``, relative to
    H* under ``gain: fixed`` (only its sign counts there)."""
    if cfg.controller.gain != "proportional":
        return (target - entropy) / target
    return (target - entropy) / max(target, ERROR_UNIT)


def observe(cfg: AEPOConfig, state: ControllerState, entropy: float, target: float):
    """The state after measuring ``entropy`` at a step whose target is ``target``: the one
    place the integral changes, once per measurement (:func:`hold_integral` takes a step back
    when the push it was for is dropped)."""
    entropy = float(entropy)
    if not math.isfinite(entropy) or entropy < 0:
        raise ValueError(f"measured entropy must be finite and >= 0, got {entropy}")
    integral = state.integral
    gain = cfg.controller.integral_gain
    if gain > 0 and cfg.controller.gain == "proportional":
        error = _error(cfg, entropy, target)
        change = gain * error
        near = abs(target - entropy) < INTEGRAL_BAND * target
        command = cfg.controller.proportional_gain * error + integral
        # Wind-up: a saturated push cannot grow, so the sum must not grow in its direction
        # (it would overshoot for as many steps as it takes to unwind); far from the target
        # (the descent from a warm start, a new target) it may only shrink.
        saturated = abs(command) >= 1.0 and change * command > 0
        if near and not saturated:
            integral += change
        elif change * integral < 0:
            integral = integral + change if abs(change) < abs(integral) else 0.0
        integral = min(INTEGRAL_LIMIT, max(-INTEGRAL_LIMIT, integral))
    return replace(state, entropy=entropy, integral=integral)


def hold_integral(state: ControllerState, before: float) -> ControllerState:
    """``state`` with the integral back at ``before`` unless the last step moved it toward
    zero: a dropped push (or one with no sample to apply) must not wind the sum up."""
    if abs(state.integral) <= abs(before) and state.integral * before >= 0:
        return state
    return replace(state, integral=before)


def watch(cfg: AEPOConfig, state: ControllerState, mean_reward: float, positives: int):
    """The state after this step's GRPO group scored ``mean_reward`` with ``positives``
    samples at or above ``reward_threshold``. The guard turns on when the moving average falls
    below ``guard_fraction`` of its best or after ``guard_patience`` steps without a positive,
    and off when the average is back above halfway between that fraction and its best and the
    step had a positive; ``guard_fraction: 0`` turns it off."""
    fraction = cfg.controller.guard_fraction
    if fraction <= 0:
        return state
    g = state.guard
    mean_reward = float(mean_reward)
    average = (
        mean_reward
        if g.reward is None
        else REWARD_MOMENTUM * g.reward + (1 - REWARD_MOMENTUM) * mean_reward
    )
    best = max(g.best, average)
    dry = 0 if positives > 0 else g.dry_steps + 1
    collapsed = average < fraction * best or dry >= cfg.controller.guard_patience
    recovered = average >= 0.5 * (1 + fraction) * best and positives > 0
    active = collapsed or (g.active and not recovered)
    warned = g.warned
    start = g.start_entropy if g.start_entropy is not None else state.entropy
    bonus, coef = _revival(cfg, dry, g.revival_coef, state.entropy, start)
    if active and not warned:
        logger.warning(
            "AEPO guard: reward average %.3f (best %.3f), %d step(s) without a positive: "
            "no push lowers entropy until it recovers, and a policy without positives gets "
            "an entropy bonus (aepo/guard, aepo/revival_coef)",
            average,
            best,
            dry,
        )
        warned = True
    guard = GuardState(
        reward=average,
        best=best,
        dry_steps=dry,
        active=active,
        warned=warned,
        start_entropy=start,
        revival_coef=coef,
        revival_bonus=bonus,
    )
    return replace(state, guard=guard)


def _revival(cfg: AEPOConfig, dry: int, coef: float, entropy, start) -> tuple[float, float]:
    """(this step's entropy bonus, the coefficient for the next) after ``dry`` steps without
    a positive: adaptive entropy control (Skywork-OR1, ``c_k * 1[e_k <= target]``, then ``c``
    moves by its step) with the run's first measured entropy as its target, while the policy
    is dry. A policy whose every sample is wrong gives GRPO no gradient and REINFORCE no
    sample; the bonus flattens it until some sample is right again, and stops at once when
    one is (measured on the weak start at H* = 0.25: docs/low_targets.md)."""
    step = cfg.controller.revival_step
    if step <= 0 or dry < cfg.controller.guard_patience or entropy is None or start is None:
        return 0.0, 0.0
    return adaptive_coef_step(coef, entropy, start, step, 0.0, REVIVAL_MAX_COEF)


def _command(cfg: AEPOConfig, state: ControllerState, target: float) -> float:
    """Signed push: > 0 raise, <= 0 lower; its size is the strength before the cap.
    Without integral gain its sign is the paper's rule (H < H* raises)."""
    if state.entropy is None:
        raise RuntimeError("the entropy controller has no measurement: measure pi_old first")
    error = _error(cfg, state.entropy, target)
    if cfg.controller.gain != "proportional":
        return 1.0 if error > 0 else -1.0
    return cfg.controller.proportional_gain * error + state.integral


def _push(cfg: AEPOConfig, state: ControllerState, direction: int, command: float):
    """(strength, budget, row weight) of a push in ``direction`` for a signed ``command``."""
    if direction == LOWER and state.guard.active:
        return 0.0, 0, 0.0
    max_samples = cfg.samples_up if direction == RAISE else cfg.samples_down
    if cfg.controller.gain != "proportional":
        return 1.0, max_samples, 1.0
    strength = min(1.0, abs(command))
    budget = math.ceil(max_samples * strength - 1e-9)
    row_weight = max_samples * strength / budget if budget > 0 else 0.0
    return strength, budget, min(1.0, row_weight)


def decide(cfg: AEPOConfig, state: ControllerState, step: int, target: float) -> Decision:
    """This step's temperature and budget from the latest measurement. There is no decision
    before the first measurement: on step 1 engines measure pi_old's entropy first, since a
    guess would push the wrong way on a model already above (or below) the target."""
    command = _command(cfg, state, target)
    direction = RAISE if command > 0 else LOWER
    strength, budget, row_weight = _push(cfg, state, direction, command)
    return Decision(
        step=step,
        entropy=state.entropy,
        target=target,
        direction=direction,
        temperature=cfg.t_high if direction == RAISE else cfg.t_low,
        budget=budget,
        strength=strength,
        row_weight=row_weight,
        guard=state.guard.active,
    )


def settle(cfg: AEPOConfig, state: ControllerState, decision: Decision) -> Decision:
    """``decision`` with its push re-decided from the latest measurement, keeping its
    temperature (the extra pass is already sampled at it).

    Under ``entropy_source: previous_step`` the temperature is chosen before this step's
    entropy is measured, one update late; the REINFORCE rows enter the update only after the
    measurement, so their number and weight can follow it. If the measurement has crossed the
    target since, the samples push the wrong way and none is used (budget and strength 0);
    otherwise the budget and strength are those the measurement gives (and the guard's
    verdict, from this step's reward).
    """
    command = _command(cfg, state, decision.target)
    direction = RAISE if command > 0 else LOWER
    if direction != decision.direction:
        strength, budget, row_weight = 0.0, 0, 0.0
    else:
        strength, budget, row_weight = _push(cfg, state, direction, command)
    return replace(
        decision,
        entropy=state.entropy,
        budget=budget,
        strength=strength,
        row_weight=row_weight,
        guard=state.guard.active,
    )
