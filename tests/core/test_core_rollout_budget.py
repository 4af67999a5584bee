import pytest

from aepo.core import AEPOConfig, PositiveRateTracker, plan_extra_rollout


def plan(cfg, budget, rate, prompts=64, n=8, temperature=1.2):
    return plan_extra_rollout(
        cfg,
        budget=budget,
        temperature=temperature,
        num_prompts=prompts,
        samples_per_prompt=n,
        positive_rate=rate,
    )


def test_fixed_budget_is_a_quarter_of_the_prompts_times_n():
    p = plan(AEPOConfig(extra_rollout={"budget": "fixed"}), budget=60, rate=0.9)
    assert (p.num_prompts, p.samples_per_prompt, p.num_samples) == (16, 8, 128)


def test_auto_budget_sizes_from_the_positive_rate():
    cfg = AEPOConfig(extra_rollout={"budget": "auto", "oversample": 1.25, "max_fraction": 1.0})
    # 30 positives needed at 75% -> 50 samples -> 7 prompts x 8
    assert plan(cfg, budget=30, rate=0.75).num_samples == 56
    # a lower rate needs more
    assert plan(cfg, budget=30, rate=0.25).num_samples == 152
    # far fewer than the authors' quarter of the batch at a high rate
    assert plan(cfg, budget=30, rate=0.75).num_samples < 0.25 * 64 * 8


def test_auto_budget_is_capped_and_floored():
    cfg = AEPOConfig(extra_rollout={"max_fraction": 0.1, "min_samples": 8})
    assert plan(cfg, budget=60, rate=0.01).num_samples <= 0.1 * 64 * 8 + 8
    assert plan(cfg, budget=1, rate=1.0).num_samples == 8
    assert plan(cfg, budget=0, rate=1.0).num_samples == 0


def test_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="empty GRPO batch"):
        plan(AEPOConfig(), budget=10, rate=0.5, prompts=0)


def test_tracker_keeps_a_rate_per_temperature_and_round_trips():
    t = PositiveRateTracker(prior=0.5, momentum=0.5)
    assert t.rate(1.2) == 0.5
    t.update(1.2, num_positive=8, num_generated=10)
    t.update(1.2, num_positive=4, num_generated=10)
    t.update(0.8, num_positive=1, num_generated=10)
    t.update(0.8, num_positive=0, num_generated=0)  # nothing generated: no information
    assert t.rate(1.2) == pytest.approx(0.6) and t.rate(0.8) == pytest.approx(0.1)
    u = PositiveRateTracker(prior=0.9)
    u.load_state_dict(t.state_dict())
    assert u.rate(1.2) == t.rate(1.2) and u.momentum == 0.5


def test_plan_for_decision_samples_at_the_recipes_temperature():
    from aepo.core import ControllerState, plan_for_decision
    from aepo.core import controller as ctl

    for algorithm, expected in [("aepo", 1.2), ("aepo_no_temperature", 1.0)]:
        cfg = AEPOConfig(algorithm=algorithm, target_entropy=0.5, extra_rollout={"budget": "fixed"})
        state = ctl.observe(cfg, ControllerState(), 0.2, target=0.5)
        decision = ctl.decide(cfg, state, 1, target=0.5)
        p = plan_for_decision(
            cfg, decision, PositiveRateTracker(0.5), num_prompts=64, samples_per_prompt=8
        )
        assert p.temperature == expected and p.num_samples == 128
