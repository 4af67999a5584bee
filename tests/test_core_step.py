"""The one AEPO step object both engines call: seeded from ``aepo.seed``, one state_dict."""

import pytest
import torch

from aepo.core import AEPOConfig, AEPOStep


def run_steps(step: AEPOStep, entropies, start=1):
    out = []
    for i, h in enumerate(entropies, start=start):
        step.observe(h)
        plan = step.plan(i, num_prompts=16, samples_per_prompt=4)
        rewards = (torch.arange(plan.num_samples) % 3 == 0).float()
        groups = [p for p in plan.prompts for _ in range(4)]
        sel, _ = step.select(plan, rewards, groups)
        out.append((plan, sel.indices.tolist()))
    return out


def test_plans_and_selections_follow_aepo_seed():
    cfg = AEPOConfig(samples_up=3, samples_down=3, extra_rollout={"budget": "fixed"})
    a = run_steps(AEPOStep(cfg), [0.2, 0.7, 0.3])
    b = run_steps(AEPOStep(cfg), [0.2, 0.7, 0.3])
    c = run_steps(AEPOStep(cfg.model_copy(update={"seed": 1})), [0.2, 0.7, 0.3])
    assert a == b
    assert [p.prompts for p, _ in a] != [p.prompts for p, _ in c]


def test_state_dict_round_trip_continues_the_same_steps():
    cfg = AEPOConfig(samples_up=3, samples_down=3, extra_rollout={"budget": "fixed"})
    straight = AEPOStep(cfg)
    run_steps(straight, [0.2, 0.7])
    resumed = AEPOStep(cfg)
    resumed.load_state_dict(straight.state_dict())
    assert run_steps(resumed, [0.3, 0.6], start=3) == run_steps(straight, [0.3, 0.6], start=3)


def test_state_without_rng_is_refused_naming_the_entry():
    step = AEPOStep(AEPOConfig())
    state = step.state_dict()
    del state["rng_state"]
    with pytest.raises(ValueError, match="no 'rng_state' entry"):
        AEPOStep(AEPOConfig()).load_state_dict(state)


def test_paper_meaning_scales_alpha_by_the_proportional_strength():
    cfg = AEPOConfig(
        controller={"gain": "proportional", "proportional_gain": 1.0}, alpha=2.0, target_entropy=0.5
    )
    step = AEPOStep(cfg)
    step.observe(0.4)  # relative error 0.2 -> strength 0.2
    plan = step.plan(1, num_prompts=8, samples_per_prompt=4)
    assert plan.decision.strength == pytest.approx(0.2)
    sel, _ = step.select(plan, torch.ones(plan.num_samples), [0] * plan.num_samples)
    mask = torch.ones(len(sel), 3)
    assert torch.allclose(step.advantages(plan, sel, mask), torch.full_like(mask, 0.4))
    share = AEPOStep(cfg.model_copy(update={"alpha_meaning": "batch_share"}))
    share.observe(0.4)
    plan = share.plan(1, num_prompts=8, samples_per_prompt=4)
    assert torch.allclose(share.advantages(plan, sel, mask), torch.full_like(mask, 2.0))


def test_a_state_written_before_the_step_object_still_loads():
    """verl's aepo_state.json from earlier versions: the same three entries, the controller's
    with the fields it no longer keeps (history, integral, raw_entropy)."""
    cfg = AEPOConfig()
    current = AEPOStep(cfg).state_dict()
    old = {
        "algorithm": "aepo",
        "global_step": 4,
        "controller": {"entropy": 0.31, "raw_entropy": 0.3, "integral": 0.0, "history": []},
        "positive_rates": current["positive_rates"],
        "rng_state": current["rng_state"],
    }
    step = AEPOStep(cfg)
    step.load_state_dict(old)
    assert step.controller.entropy == 0.31 and step.plans_before_generation


def test_previous_step_plans_are_settled_by_the_measurement_that_follows_them():
    cfg = AEPOConfig(
        target_entropy=0.5,
        entropy_source="previous_step",
        samples_up=8,
        samples_down=8,
        controller={"gain": "proportional", "proportional_gain": 2.0},
    )
    step = AEPOStep(cfg)
    step.observe(0.3)
    first = step.plan(1, num_prompts=16, samples_per_prompt=4)
    assert step.settle(first) is first  # made after its measurement: nothing to redo
    assert step.plans_before_generation
    second = step.plan(2, num_prompts=16, samples_per_prompt=4)  # from step 1's 0.3
    step.observe(0.7)  # step 2's own measurement crossed the target
    settled = step.settle(second)
    assert settled.rollout == second.rollout and settled.prompts == second.prompts
    assert (settled.decision.budget, settled.decision.strength) == (0, 0.0)
    rewards = torch.ones(second.num_samples)
    groups = [p for p in second.prompts for _ in range(4)]
    selection, _ = step.select(settled, rewards, groups)
    assert len(selection) == 0  # hot samples would have raised entropy further
    assert step.settle(settled) is settled


def _track(settle: bool, steps: int = 200) -> list[float]:
    """Entropy of a simulated policy under AEPOStep in previous_step mode: each update moves
    it by a constant drift (GRPO's collapse) plus a strong REINFORCE push, strength-scaled
    (strong enough that a push decided one update late overshoots)."""
    import random

    cfg = AEPOConfig(
        target_entropy=0.5,
        entropy_source="previous_step",
        samples_up=12,
        samples_down=12,
        controller={"gain": "proportional", "proportional_gain": 4.0},
    )
    step, noise = AEPOStep(cfg), random.Random(0)
    entropy, trace = 0.9, []
    for t in range(1, steps + 1):
        plan = step.plan(t, num_prompts=32, samples_per_prompt=8) if t > 1 else None
        step.observe(entropy)
        trace.append(entropy)
        if plan is None:
            plan = step.plan(t, num_prompts=32, samples_per_prompt=8)
        elif settle:
            plan = step.settle(plan)
        push = plan.decision.direction * plan.decision.strength
        entropy = max(0.0, entropy - 0.03 + 0.3 * push + noise.gauss(0, 0.005))
    return trace[steps // 2 :]


def test_settling_removes_the_lag_of_previous_step_on_a_simulated_policy():
    def rms(trace):
        return (sum((h - 0.5) ** 2 for h in trace) / len(trace)) ** 0.5 / 0.5

    lagged, settled = rms(_track(settle=False)), rms(_track(settle=True))
    assert settled < 0.6 * lagged, (settled, lagged)  # measured 0.25 against 0.54
