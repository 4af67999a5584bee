import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from aepo.core import group_advantage, select_reinforce_samples


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_reward_filter_keeps_only_positives():
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    sel = select_reinforce_samples(rewards, list("aabbcc"), budget=10)
    assert sel.indices.tolist() == [0, 2, 5]
    assert sel.signal.tolist() == [1.0, 1.0, 1.0]
    assert sel.num_candidates == 3


def test_threshold_for_non_binary_rewards():
    rewards = torch.tensor([0.2, 0.9, 0.5, 1.0])
    sel = select_reinforce_samples(rewards, [0, 0, 1, 1], budget=10, reward_threshold=0.5)
    assert sel.indices.tolist() == [1, 2, 3]
    assert torch.allclose(sel.signal, torch.tensor([0.9, 0.5, 1.0]))


def test_budget_caps_and_is_deterministic_under_a_seed():
    rewards = torch.ones(40)
    a = select_reinforce_samples(rewards, list(range(40)), budget=7, generator=seeded(3))
    b = select_reinforce_samples(rewards, list(range(40)), budget=7, generator=seeded(3))
    c = select_reinforce_samples(rewards, list(range(40)), budget=7, generator=seeded(4))
    assert len(a) == 7 and a.num_candidates == 40
    assert a.indices.tolist() == b.indices.tolist() != c.indices.tolist()
    # Not simply the first rows: the subset is uniform over the batch.
    assert a.indices.max() > 7


def test_zero_positives_selects_nothing():
    sel = select_reinforce_samples(torch.zeros(8), [0] * 8, budget=60)
    assert len(sel) == 0 and sel.signal.numel() == 0


def test_advantage_filter_drops_groups_where_all_were_right():
    # Group a: all right (advantage 0) -> dropped; group b: mixed -> the right one kept.
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    sel = select_reinforce_samples(rewards, list("aaabbb"), budget=10, positive_filter="advantage")
    assert sel.indices.tolist() == [3]
    assert sel.signal.tolist() == [1.0]


def test_advantage_signal_keeps_negatives():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    sel = select_reinforce_samples(rewards, list("aabb"), budget=10, signal="advantage")
    assert sel.indices.tolist() == [0, 1, 2, 3]
    assert (sel.signal[[0, 3]] > 0).all() and (sel.signal[[1, 2]] < 0).all()


def test_group_advantage_matches_grpo_definition():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5])
    groups = [0, 0, 0, 1, 1, 1, 2]
    adv = group_advantage(rewards, groups)
    r = rewards[:3]
    assert torch.allclose(adv[:3], (r - r.mean()) / (r.std() + 1e-6))
    assert torch.all(adv[3:6] == 0)
    assert adv[6].item() == pytest.approx(0.5)  # singleton: mean 0, std 1 as in verl


@given(
    rewards=st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=64),
    budget=st.integers(0, 80),
    seed=st.integers(0, 10),
)
def test_selection_invariants(rewards, budget, seed):
    r = torch.tensor(rewards)
    groups = [i // 4 for i in range(len(rewards))]
    sel = select_reinforce_samples(r, groups, budget, generator=seeded(seed))
    assert len(sel) == min(budget, int(r.sum()))
    assert torch.all(r[sel.indices] == 1)
    assert sel.indices.unique().numel() == len(sel)


def test_the_step_records_the_rate_at_the_plans_temperature_and_selection_does_not():
    from aepo.core import AEPOConfig, AEPOStep, UpdateLayout, select_from_extra_rollout

    step = AEPOStep(AEPOConfig(algorithm="aepo_advantage", samples_down=5, t_low=0.8))
    # above the default target 0.5: lower entropy, sample at T = 0.8
    plan = step.measured(step.begin(1, num_prompts=8, samples_per_prompt=4), 0.9).plan
    assert plan.rollout.temperature == 0.8
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    groups = [0] * 4 + [1] * 4
    before = step.positive_rates.state_dict()
    select_from_extra_rollout(step.cfg, 5, rewards, groups, seeded(0))
    assert step.positive_rates.state_dict() == before  # no tracker behind the caller's back
    layout = UpdateLayout("token-mean", 1, 1, lambda rows: torch.zeros(rows, dtype=torch.long))
    rows = step.reinforce(
        plan,
        rewards,
        groups,
        torch.ones(8, 2),
        grpo_advantage=torch.zeros(32),
        grpo_lengths=torch.full((32,), 2),
        layout=layout,
    )
    # Advantage signal: 4 of the 8 samples are below their group mean; 5 kept of 8 must
    # include at least one of them.
    assert len(rows) == 5 and (rows.advantages < 0).any()
    assert rows.metrics["aepo/positive_rate"] == 1.0
    assert rows.metrics["aepo/reinforce_samples"] == 5.0
    assert step.positive_rates.rate(0.8) == 1.0 and step.positive_rates.rate(1.2) == 0.5
    sel, metrics = select_from_extra_rollout(AEPOConfig(), 10, rewards, [0] * 8)
    assert sel.indices.tolist() == [0, 2, 3, 6] and metrics["aepo/positive_rate"] == 0.5
