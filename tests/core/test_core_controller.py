import pytest
from hypothesis import given
from hypothesis import strategies as st

from aepo.core import LOWER, RAISE, AEPOConfig, AEPOStep, ControllerState
from aepo.core import controller as ctl_fn


class EntropyController:
    """Test-only driver of the pure controller functions at the constant target
    ``target_entropy``: holds the state they pass along and the decisions made."""

    def __init__(self, cfg: AEPOConfig):
        self.cfg, self.state, self.history = cfg, ControllerState(), []

    @property
    def has_measurement(self) -> bool:
        return self.state.has_measurement

    @property
    def integral(self) -> float:
        return self.state.integral

    def observe(self, entropy: float) -> None:
        self.state = ctl_fn.observe(self.cfg, self.state, entropy, self.cfg.target_entropy)

    def decide(self, step: int):
        decision = ctl_fn.decide(self.cfg, self.state, step, self.cfg.target_entropy)
        self.history.append(decision)
        return decision

    def settle(self, decision):
        settled = ctl_fn.settle(self.cfg, self.state, decision)
        if self.history and self.history[-1] == decision:
            self.history[-1] = settled
        return settled


def controller(**kw) -> EntropyController:
    return EntropyController(AEPOConfig(target_entropy=0.5, **kw))


def test_below_target_samples_hot_with_the_raise_budget():
    ctl = controller()
    ctl.observe(0.3)
    d = ctl.decide(step=1)
    assert (d.direction, d.temperature, d.budget) == (RAISE, 1.2, 60)


def test_above_target_samples_cold_with_the_lower_budget():
    ctl = controller()
    ctl.observe(0.7)
    d = ctl.decide(step=1)
    assert (d.direction, d.temperature, d.budget) == (LOWER, 0.8, 30)


def test_at_target_lowers_as_the_paper_rule_says():
    ctl = controller()
    ctl.observe(0.5)
    assert ctl.decide(1).direction == LOWER


def test_no_decision_before_a_measurement():
    ctl = controller()
    assert not ctl.has_measurement
    with pytest.raises(RuntimeError, match="measure"):
        ctl.decide(1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1])
def test_bad_measurements_are_rejected(bad):
    with pytest.raises(ValueError, match="entropy"):
        controller().observe(bad)


def test_decisions_are_recorded_with_metric_names():
    ctl = controller()
    for step, h in enumerate([0.4, 0.6, 0.3], start=1):
        ctl.observe(h)
        ctl.decide(step)
    assert [d.direction for d in ctl.history] == [RAISE, LOWER, RAISE]
    m = ctl.history[-1].metrics()
    assert m["aepo/entropy"] == 0.3 and m["aepo/target_entropy"] == 0.5
    assert m["aepo/temperature"] == 1.2 and m["aepo/direction"] == 1.0


def test_proportional_budget_grows_with_error_and_is_bounded():
    ctl = controller(controller={"gain": "proportional", "proportional_gain": 2.0})
    budgets = []
    for h in [0.49, 0.45, 0.35, 0.1, 0.0]:
        ctl.observe(h)
        budgets.append(ctl.decide(1).budget)
    assert budgets == sorted(budgets)
    # 0.01 nats below: strength 2 x 0.01 = 0.02, one row's worth 60 x 0.02 = 1.2 (no floor)
    assert budgets[0] == 2 and ctl.history[0].strength == pytest.approx(0.02)
    assert ctl.history[0].row_weight == pytest.approx(0.6)  # 1.2 rows' worth over 2 rows
    assert budgets[-1] == 60  # capped at samples_up
    assert all(d.temperature == 1.2 for d in ctl.history)


def test_the_controller_is_a_function_of_state_measurement_and_target():
    cfg = AEPOConfig(controller={"gain": "proportional", "integral_gain": 0.2})
    state = ctl_fn.observe(cfg, ControllerState(), 0.45, target=0.5)
    again = ctl_fn.observe(cfg, ControllerState(), 0.45, target=0.5)
    assert state == again and state.integral == pytest.approx(0.01)  # 0.2 x 0.05 nats
    # The target comes in as an argument: the same state decides differently for another.
    up = ctl_fn.decide(cfg, state, 3, target=0.5)
    down = ctl_fn.decide(cfg, state, 3, target=0.3)
    assert (up.direction, down.direction) == (RAISE, LOWER)
    assert ctl_fn.decide(cfg, state, 3, target=0.5) == up  # deciding changes nothing


@given(
    target=st.floats(0.01, 3.0),
    entropy=st.floats(0.0, 5.0),
    t_low=st.floats(0.1, 1.0),
    gap=st.floats(0.01, 1.0),
)
def test_fixed_gain_is_the_papers_bang_bang_rule(target, entropy, t_low, gap):
    cfg = AEPOConfig(target_entropy=target, t_low=t_low, t_high=t_low + gap)
    ctl = EntropyController(cfg)
    ctl.observe(entropy)
    d = ctl.decide(1)
    assert d.temperature == cfg.t_low + (cfg.t_high - cfg.t_low) * (entropy < target)
    assert d.budget == (cfg.samples_up if entropy < target else cfg.samples_down)


@given(entropy=st.floats(0.0, 5.0), kp=st.floats(0.0, 50.0))
def test_proportional_stays_within_bounds(entropy, kp):
    cfg = AEPOConfig(
        target_entropy=0.5, controller={"gain": "proportional", "proportional_gain": kp}
    )
    ctl = EntropyController(cfg)
    for step in range(3):
        ctl.observe(entropy)
        d = ctl.decide(step)
        assert 0 <= d.strength <= 1 and 0 <= d.row_weight <= 1
        assert 0 <= d.budget <= max(cfg.samples_up, cfg.samples_down)
        assert d.temperature in (cfg.t_low, cfg.t_high)


def test_settle_keeps_the_temperature_and_resizes_the_push_from_the_new_measurement():
    ctl = controller(controller={"gain": "proportional", "proportional_gain": 2.0})
    ctl.observe(0.3)  # 0.2 nats below: strength 0.4
    planned = ctl.decide(step=2)
    ctl.observe(0.45)  # this step's measurement, still below but closer: strength 0.1
    settled = ctl.settle(planned)
    assert (settled.direction, settled.temperature, settled.step) == (RAISE, 1.2, 2)
    assert settled.entropy == 0.45
    assert settled.strength == pytest.approx(0.1) and settled.budget == 6
    assert ctl.history == [settled]  # logs show the push that was applied


def test_settle_drops_a_push_the_new_measurement_says_is_wrong():
    for gain in ("fixed", "proportional"):
        ctl = controller(controller={"gain": gain})
        ctl.observe(0.4)
        planned = ctl.decide(step=2)  # hot samples, to raise entropy
        ctl.observe(0.6)  # but entropy is already above the target now
        settled = ctl.settle(planned)
        assert settled.temperature == planned.temperature == 1.2
        assert (settled.budget, settled.strength) == (0, 0.0)


def test_settle_needs_a_measurement():
    ctl = controller()
    ctl.observe(0.4)
    decision = ctl.decide(1)
    with pytest.raises(RuntimeError, match="measure"):
        EntropyController(ctl.cfg).settle(decision)


def _settled_entropy(integral_gain: float, steps: int = 200) -> float:
    """Mean entropy over the last half of a simulated policy that drifts down 0.03 per step
    and rises 0.12 x the push strength (a proportional push alone needs a standing error)."""
    ctl = controller(
        controller={
            "gain": "proportional",
            "proportional_gain": 4.0,
            "integral_gain": integral_gain,
        }
    )
    entropy, trace = 0.9, []
    for step in range(1, steps + 1):
        ctl.observe(entropy)
        trace.append(entropy)
        d = ctl.decide(step)
        entropy += -0.03 + 0.12 * d.direction * d.strength
    tail = trace[steps // 2 :]
    return sum(tail) / len(tail)


def test_integral_gain_removes_the_offset_a_proportional_push_leaves():
    assert abs(_settled_entropy(0.0) - 0.5) / 0.5 > 0.04  # ~6% below: the standing error
    assert abs(_settled_entropy(0.1) - 0.5) / 0.5 < 0.01


def test_integral_does_not_wind_up_far_from_the_target_and_counts_each_measurement_once():
    ctl = controller(controller={"gain": "proportional", "integral_gain": 0.5})
    ctl.observe(1.5)  # 200% above the target: outside the integration band
    ctl.decide(1)
    assert ctl.integral == 0.0
    ctl.observe(0.45)  # 10% below: 0.05 nats
    planned = ctl.decide(2)
    assert ctl.integral == pytest.approx(0.025)
    ctl.settle(planned)  # the same measurement again: not integrated twice
    ctl.decide(3)
    assert ctl.integral == pytest.approx(0.025)
    for step in range(4, 40):
        ctl.observe(0.45)
        ctl.decide(step)
    assert ctl.integral == pytest.approx(0.5)  # INTEGRAL_LIMIT


def test_integral_state_round_trips_and_a_state_without_it_is_refused():
    cfg = AEPOConfig(controller={"gain": "proportional", "integral_gain": 0.2})
    a = AEPOStep(cfg)
    for step, h in enumerate([0.45, 0.48, 0.44], start=1):
        start = a.begin(step, num_prompts=8, samples_per_prompt=4)
        a.measured(start, h)
    b = AEPOStep(cfg)
    b.load_state_dict(a.state_dict())
    assert b.controller == a.controller and a.controller.integral > 0
    sa, sb = (s.begin(4, num_prompts=8, samples_per_prompt=4) for s in (a, b))
    assert a.measured(sa, 0.52).plan == b.measured(sb, 0.52).plan
    state = a.state_dict()
    del state["controller"]["integral"]
    with pytest.raises(ValueError, match="no 'integral' entry"):
        AEPOStep(cfg).load_state_dict(state)
    state["controller"]["integral"] = float("nan")
    with pytest.raises(ValueError, match="malformed AEPO state.*integral"):
        AEPOStep(cfg).load_state_dict(state)
    state["controller"]["integral"] = "x"
    with pytest.raises(ValueError, match="malformed AEPO state"):
        AEPOStep(cfg).load_state_dict(state)
