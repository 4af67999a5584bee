"""Low targets made safe: a loop gain that does not grow as H* falls, a push that can go to
zero, an integral that does not wind up, and the reward guard."""

import json
import logging
from pathlib import Path

import pytest
import torch

from aepo.core import LOWER, RAISE, AEPOConfig, AEPOStep, ControllerState
from aepo.core import controller as ctl

from .test_core_step import reinforce

PROPORTIONAL = {"gain": "proportional", "proportional_gain": 4.0}
TRACES = Path(__file__).parent / "data" / "reward_traces.json"


def cfg_at(target: float, **controller) -> AEPOConfig:
    return AEPOConfig(target_entropy=target, controller={**PROPORTIONAL, **controller})


def strength(target: float, entropy: float) -> float:
    cfg = cfg_at(target)
    state = ctl.observe(cfg, ControllerState(), entropy, target)
    return ctl.decide(cfg, state, 1, target).strength


@pytest.mark.parametrize("offset", [0.02, 0.05, -0.05, 0.1])
def test_the_push_per_nat_of_error_does_not_grow_as_the_target_falls(offset):
    # The old relative error gave 0.25 four times the push of 1.0 for the same miss in nats.
    pushes = [strength(t, t + offset) for t in (0.25, 0.5, 0.75, 1.0)]
    assert pushes == pytest.approx([min(1.0, 4.0 * abs(offset))] * 4)
    # above 1 nat the error is relative again: a wider target is not pushed harder
    assert strength(2.0, 2.0 + offset) == pytest.approx(min(1.0, 4.0 * abs(offset) / 2.0))


def test_the_push_goes_to_zero_at_the_target_and_is_continuous_under_batch_share():
    assert strength(0.25, 0.25) == 0.0  # no floor: no push at the target
    cfg = cfg_at(0.25).model_copy(update={"alpha_meaning": "batch_share", "alpha": 16.0})
    cfg = cfg.model_copy(update={"samples_down": 12, "samples_up": 12})
    step = AEPOStep(cfg)
    plan = step.measured(step.begin(1, num_prompts=8, samples_per_prompt=4), 0.26).plan
    d = plan.decision
    # 0.01 nats above: strength 0.04, 0.48 rows' worth of push: one row at 0.48 x alpha
    assert (d.direction, d.budget) == (LOWER, 1)
    assert d.strength == pytest.approx(0.04) and d.row_weight == pytest.approx(0.48)
    rows = reinforce(step, plan, torch.ones(plan.num_samples), [0] * plan.num_samples)
    assert len(rows) == 1
    assert rows.advantages.max().item() == pytest.approx(16.0 * 0.48)


def test_integral_does_not_wind_up_while_the_push_is_saturated():
    # 0.1 nats below 0.5, within the band: the proportional part alone is 0.8; the integral
    # may add the 0.2 that saturates the push, then must stop (it used to run to the limit,
    # and then held the entropy above the target for as many steps as it took to unwind).
    cfg = cfg_at(0.5, proportional_gain=8.0, integral_gain=0.5)
    state = ControllerState()
    for _ in range(30):
        state = ctl.observe(cfg, state, 0.45, 0.5)  # 0.05 nats below: P = 0.4
    assert state.integral == pytest.approx(ctl.INTEGRAL_LIMIT)  # unsaturated: it sums
    state = ControllerState()
    for _ in range(30):
        state = ctl.observe(cfg, state, 0.4, 0.5)
    assert ctl.decide(cfg, state, 1, 0.5).strength == 1.0
    assert state.integral <= 0.2 + 0.5 * 0.1 + 1e-9


def test_integral_unwinds_outside_its_band_and_never_past_zero():
    cfg = cfg_at(0.5, integral_gain=0.5)
    state = ControllerState()
    for _ in range(10):
        state = ctl.observe(cfg, state, 0.45, 0.5)
    wound = state.integral
    assert wound > 0.1
    state = ctl.observe(cfg, state, 0.7, 0.5)  # 40% above: outside the band, opposite sign
    assert 0 <= state.integral < wound  # it unwinds by 0.5 x 0.2 = 0.1
    assert state.integral == pytest.approx(wound - 0.1)
    for _ in range(10):
        state = ctl.observe(cfg, state, 0.7, 0.5)
    assert state.integral == 0.0  # and stops at zero: no standing push from far away
    for _ in range(10):
        state = ctl.observe(cfg, state, 0.3, 0.5)  # 40% below: outside, same sign as nothing
    assert state.integral == 0.0


def _collapse(step: AEPOStep, means, entropy=0.4, positives=None):
    """Run ``step`` through GRPO groups of 64 samples with the given mean rewards."""
    decisions = []
    for i, mean in enumerate(means, start=len(decisions) + 1):
        k = round(64 * mean) if positives is None else positives[i - 1]
        rewards = torch.zeros(64)
        rewards[:k] = 1.0
        begun = step.begin(i, num_prompts=16, samples_per_prompt=4)
        decisions.append(step.measured(begun, entropy, rewards))
    return decisions


def test_guard_fires_on_a_reward_collapse_stops_pushing_down_and_warns_once(caplog):
    cfg = cfg_at(0.25, integral_gain=0.1)
    step = AEPOStep(cfg)
    healthy, collapse = [0.25] * 30, [0.02] * 20
    with caplog.at_level(logging.WARNING, logger="aepo.core.controller"):
        measured = _collapse(step, healthy + collapse)
    guard = [m.metrics["aepo/guard"] for m in measured]
    assert guard[:30] == [0.0] * 30
    # the 10-step average halves within 7 steps of the collapse
    first = guard.index(1.0)
    assert 30 < first <= 37 and all(g == 1.0 for g in guard[first:])
    for m in measured[first:]:  # the entropy is above the target: every push would lower it
        assert (m.plan.decision.direction, m.plan.decision.budget) == (LOWER, 0)
    # previous_step: the first dropped pass was sampled before the reward fell; no later one
    assert all(m.plan.num_samples == 0 for m in measured[first + 1 :])
    assert measured[first - 1].plan.decision.budget > 0
    # the dropped pushes do not wind the integral up
    assert step.controller.integral == pytest.approx(measured[first - 1].metrics["aepo/integral"])
    warnings = [r for r in caplog.records if "AEPO guard" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    # a push up is not the guard's business
    for i in (51, 52):  # (previous_step: the first plan was still cold)
        up = step.measured(
            step.begin(i, num_prompts=16, samples_per_prompt=4), 0.1, torch.zeros(64)
        )
    assert up.metrics["aepo/guard"] == 1.0
    assert up.plan.decision.direction == RAISE and up.plan.decision.budget > 0
    # the reward comes back: the guard lets go
    measured = _collapse(step, [0.3] * 40)
    assert measured[-1].metrics["aepo/guard"] == 0.0 and measured[-1].plan.decision.budget > 0


def test_guard_fires_after_guard_patience_steps_without_a_positive():
    cfg = cfg_at(0.25, guard_patience=3)
    step = AEPOStep(cfg)
    # a low but steady reward, then three groups without a single positive
    counts = [2] * 20 + [0, 0, 0]
    measured = _collapse(step, [c / 64 for c in counts], positives=counts)
    guard = [m.metrics["aepo/guard"] for m in measured]
    assert guard[:22] == [0.0] * 22 and guard[22] == 1.0


def test_guard_fraction_zero_turns_it_off_and_previous_step_plans_are_dropped():
    off = AEPOStep(cfg_at(0.25, guard_fraction=0.0))
    assert all(m.metrics["aepo/guard"] == 0.0 for m in _collapse(off, [0.5] * 20 + [0.0] * 20))
    prev = AEPOStep(cfg_at(0.25).model_copy(update={"entropy_source": "previous_step"}))
    measured = _collapse(prev, [0.5] * 20 + [0.0] * 10)
    # the plan was sampled cold before this step's reward; the guard drops its rows
    last = measured[-1].plan
    assert last.decision.guard and last.decision.budget == 0


def test_guard_state_is_checkpointed_and_old_checkpoints_still_load():
    cfg = cfg_at(0.25)
    step = AEPOStep(cfg)
    _collapse(step, [0.5] * 10 + [0.0] * 10)
    assert step.controller.guard.active
    state = json.loads(json.dumps(step.state_dict()))  # as aepo_state.json holds it
    resumed = AEPOStep(cfg)
    resumed.load_state_dict(state)
    assert resumed.controller == step.controller
    del state["controller"]["guard"]  # written before the guard existed
    old = AEPOStep(cfg)
    old.load_state_dict(state)
    assert old.controller.guard == ctl.GuardState()
    assert old.controller.integral == step.controller.integral
    state["controller"]["guard"] = {"reward": 0.1, "typo": 1}
    with pytest.raises(ValueError, match="malformed AEPO state"):
        AEPOStep(cfg).load_state_dict(state)


def _replay(step: AEPOStep, means, entropy: float, group: int = 256):
    """The guard's verdicts on a recorded run: each step's GRPO group of ``group`` binary
    rewards with the recorded mean."""
    verdicts = []
    for i, mean in enumerate(means, start=1):
        rewards = torch.zeros(group)
        rewards[: round(group * mean)] = 1.0
        begun = step.begin(i, num_prompts=group // 8, samples_per_prompt=8)
        verdicts.append(step.measured(begun, entropy, rewards).metrics["aepo/guard"])
    return verdicts


def test_guard_fires_on_the_recorded_collapse_before_the_reward_reaches_zero():
    """The weak same_sum start at H* = 0.25 with the controller before this change: the
    reward fell from 0.28 (step 101) to below 0.02 first at step 144. Replayed, the guard
    holds from before that step on."""
    trace = json.loads(TRACES.read_text())["weak_start"]["aepo_before"]
    guard = _replay(AEPOStep(cfg_at(0.25)), trace, entropy=0.3)
    first_low = next(i for i, r in enumerate(trace, start=1) if r < 0.02)
    first_guard = guard.index(1.0) + 1
    assert first_low == 144 and 100 < first_guard < first_low


def test_guard_stays_silent_on_the_demos_runs_and_on_healthy_weak_start_runs():
    """``aepo demo``'s four AEPO runs (contains_digit, 150 steps) and, from the weak start,
    GRPO and AEPO at 0.25 after this change: recorded rewards of real local-engine runs
    (``tests/core/data/reward_traces.json`` says which); running them here would take minutes."""
    traces = json.loads(TRACES.read_text())
    runs = {f"demo {t}": (float(t), r) for t, r in traces["demo"]["runs"].items()}
    assert set(runs) == {"demo 0.25", "demo 0.5", "demo 0.75", "demo 1.0"}
    runs["weak grpo"] = (0.25, traces["weak_start"]["grpo"])
    runs["weak aepo"] = (0.25, traces["weak_start"]["aepo_after"])
    for name, (target, rewards) in runs.items():
        assert len(rewards) in (150, 400), name
        assert max(_replay(AEPOStep(cfg_at(target)), rewards, target + 0.05)) == 0.0, name


def test_revival_bonus_flattens_a_policy_without_positives_until_one_returns():
    """A dead policy (every sample wrong) gives GRPO no gradient and REINFORCE no sample: the
    guard's bonus ramps by ``revival_step`` per dry step (adaptive entropy control's rule),
    only up to the run's first entropy, and ends with the first positive."""
    cfg = cfg_at(0.25, guard_patience=3)
    step = AEPOStep(cfg)
    start = step.measured(step.begin(1, num_prompts=16, samples_per_prompt=4), 1.5, torch.ones(64))
    assert start.entropy_bonus == 0.0 and start.metrics["aepo/revival_coef"] == 0.0
    dry = _collapse(step, [0.0] * 6, entropy=0.3, positives=[0] * 6)
    # steps 2-3: fewer than guard_patience dry steps; then c_k = 0, 0.005, 0.010, 0.015
    assert [m.entropy_bonus for m in dry] == pytest.approx([0, 0, 0, 0.005, 0.010, 0.015])
    assert [m.metrics["aepo/revival_coef"] for m in dry] == [m.entropy_bonus for m in dry]
    # above the run's first entropy (1.5) no bonus, and the coefficient shrinks
    hot = step.measured(step.begin(8, num_prompts=16, samples_per_prompt=4), 1.6, torch.zeros(64))
    assert hot.entropy_bonus == 0.0 and step.controller.guard.revival_coef == pytest.approx(0.015)
    back = step.measured(step.begin(9, num_prompts=16, samples_per_prompt=4), 1.2, torch.zeros(64))
    assert back.entropy_bonus == pytest.approx(0.015)
    # one positive: the bonus stops at once and starts from zero next time
    alive = _collapse(step, [1 / 64], entropy=0.3)
    assert alive[0].entropy_bonus == 0.0 and step.controller.guard.revival_coef == 0.0
    # revival_step 0 turns it off; the guard still fires
    off = AEPOStep(cfg_at(0.25, guard_patience=3, revival_step=0.0))
    dry = _collapse(off, [0.0] * 10, positives=[0] * 10)
    assert all(m.entropy_bonus == 0.0 for m in dry) and dry[-1].metrics["aepo/guard"] == 1.0


def test_revival_state_is_checkpointed():
    cfg = cfg_at(0.25, guard_patience=2)
    step = AEPOStep(cfg)
    _collapse(step, [0.0] * 5, positives=[0] * 5)
    state = json.loads(json.dumps(step.state_dict()))
    resumed = AEPOStep(cfg)
    resumed.load_state_dict(state)
    # dry steps 2-5 applied 0, 0.005, 0.010, 0.015: the next one applies 0.020
    assert resumed.controller.guard.revival_coef == pytest.approx(0.020)
    nxt = [
        s.measured(s.begin(6, num_prompts=16, samples_per_prompt=4), 0.4, torch.zeros(64))
        for s in (step, resumed)
    ]
    assert nxt[0].entropy_bonus == nxt[1].entropy_bonus == pytest.approx(0.020)
