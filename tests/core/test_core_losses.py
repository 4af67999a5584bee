"""The AEPO objective is GRPO's PPO-clip loss on a batch whose selected rows carry
advantage alpha * R: check that equals J_GRPO + alpha * J_REINFORCE computed separately."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aepo.core import (
    aggregate,
    entropy_shaped_advantages,
    plan_merge,
    ppo_clip_loss,
    reinforce_advantages,
    select_reinforce_samples,
    token_logprobs_and_entropy,
)

EPS = 0.2


def clipped_reinforce_sum(log_prob, old_log_prob, reward, mask):
    """The paper's term, written out: sum_o (1/|o|)... here as a token sum of
    -min(r R, clip(r, 1-eps, 1+eps) R), with R one value per row."""
    r = torch.exp(log_prob - old_log_prob)
    R = reward.reshape(-1, 1)
    per_token = torch.minimum(r * R, torch.clamp(r, 1 - EPS, 1 + EPS) * R)
    return -(per_token * mask).sum()


def make_batch(gen, rows, length):
    mask = (torch.rand(rows, length, generator=gen) < 0.8).float()
    mask[:, 0] = 1
    old = -torch.rand(rows, length, generator=gen) * 3
    new = (old + 0.4 * torch.randn(rows, length, generator=gen)).requires_grad_()
    return new, old, mask


def merged_and_separate(seed, alpha, num_rows=16, num_extra_candidates=10, length=7):
    gen = torch.Generator().manual_seed(seed)
    g_new, g_old, g_mask = make_batch(gen, num_rows, length)
    seq_adv = torch.randn(num_rows, generator=gen)
    seq_adv[torch.randperm(num_rows, generator=gen)[: num_rows // 2]] = 0.0  # uniform groups
    g_adv = seq_adv.reshape(-1, 1) * g_mask

    x_new, x_old, x_mask = make_batch(gen, num_extra_candidates, length)
    rewards = (torch.rand(num_extra_candidates, generator=gen) < 0.6).float()
    sel = select_reinforce_samples(rewards, list(range(num_extra_candidates)), budget=5)
    k = len(sel)
    plan = plan_merge(seq_adv, k, num_chunks=2)

    merged_new = g_new.clone()
    merged_old, merged_mask, merged_adv = g_old.clone(), g_mask.clone(), g_adv.clone()
    rows = plan.replace_rows
    merged_new[rows] = x_new[sel.indices]
    merged_old[rows] = x_old[sel.indices]
    merged_mask[rows] = x_mask[sel.indices]
    merged_adv[rows] = reinforce_advantages(sel.signal, alpha, x_mask[sel.indices])

    merged, _ = ppo_clip_loss(merged_new, merged_old, merged_adv, merged_mask, agg="token-sum")
    keep = torch.ones(num_rows, dtype=torch.bool)
    keep[rows] = False
    grpo, _ = ppo_clip_loss(g_new[keep], g_old[keep], g_adv[keep], g_mask[keep], agg="token-sum")
    reinforce = clipped_reinforce_sum(
        x_new[sel.indices], x_old[sel.indices], sel.signal, x_mask[sel.indices]
    )
    return merged, grpo, reinforce, plan, (g_new, x_new)


@given(seed=st.integers(0, 10_000), alpha=st.sampled_from([0.5, 1.0, 4.0, 16.0]))
@settings(max_examples=25, deadline=None)
def test_merged_loss_is_grpo_plus_alpha_reinforce(seed, alpha):
    merged, grpo, reinforce, plan, leaves = merged_and_separate(seed, alpha)
    assert plan.displaced_nonzero == 0  # enough zero-advantage rows: J_GRPO untouched
    torch.testing.assert_close(merged, grpo + alpha * reinforce)
    g_merged = torch.autograd.grad(merged, leaves, allow_unused=True)
    g_separate = torch.autograd.grad(grpo + alpha * reinforce, leaves, allow_unused=True)
    for a, b in zip(g_merged, g_separate, strict=True):
        torch.testing.assert_close(a, b)


def test_alpha_zero_gives_grpo_exactly():
    merged, grpo, _, plan, leaves = merged_and_separate(seed=3, alpha=0.0)
    assert len(plan.replace_rows) > 0
    # Same terms, summed in another order: equal to float rounding; gradients bit-exact.
    torch.testing.assert_close(merged, grpo, rtol=0, atol=1e-6)
    grad_merged = torch.autograd.grad(merged, leaves[0])[0]
    grad_grpo = torch.autograd.grad(grpo, leaves[0])[0]
    assert torch.equal(grad_merged, grad_grpo)


def test_no_positives_gives_finite_loss_and_no_rows():
    sel = select_reinforce_samples(torch.zeros(6), list(range(6)), budget=60)
    plan = plan_merge(torch.zeros(8), len(sel))
    assert plan.num_extra == 0
    gen = torch.Generator().manual_seed(0)
    new, old, mask = make_batch(gen, 8, 5)
    loss, _ = ppo_clip_loss(new, old, torch.zeros_like(mask), mask)
    assert torch.isfinite(loss) and loss.item() == 0.0
    empty = torch.zeros(0, 5)
    loss, _ = ppo_clip_loss(empty, empty, empty, empty)
    assert torch.isfinite(loss)


@given(log_ratio=st.floats(-3, 3), a=st.floats(0.01, 20))
def test_ppo_clip_with_positive_advantage_is_scaled_clipped_reinforce(log_ratio, a):
    lr = torch.tensor([[log_ratio]])
    r = torch.exp(lr)
    loss, _ = ppo_clip_loss(lr, torch.zeros_like(lr), torch.full_like(lr, a), torch.ones_like(lr))
    expected = -a * torch.minimum(r, torch.clamp(r, 1 - EPS, 1 + EPS))
    torch.testing.assert_close(loss, expected.reshape(()))


def test_aggregation_modes():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate(loss, mask, "token-sum").item() == pytest.approx(10)
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(loss, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate(loss, mask, "mean")


def test_entropy_shaping_is_bounded_and_keeps_sign():
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]])
    ent = torch.tensor([[0.5, 10.0], [0.5, 10.0], [3.0, 3.0]])
    shaped = entropy_shaped_advantages(adv, ent, torch.ones_like(adv), beta=0.4, kappa=2.0)
    expected = torch.tensor([[1.2, 1.5], [-0.8, -0.5], [0.0, 0.0]])
    torch.testing.assert_close(shaped, expected)


def test_token_entropy_matches_categorical_at_each_temperature():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 4, 11, generator=gen) * 3
    tokens = torch.randint(0, 11, (5, 4), generator=gen)
    for t in (1.0, 0.8, 1.2):
        logp, ent = token_logprobs_and_entropy(logits, tokens, temperature=t, chunk_rows=2)
        dist = torch.distributions.Categorical(logits=logits / t)
        torch.testing.assert_close(ent, dist.entropy())
        torch.testing.assert_close(logp, dist.log_prob(tokens))
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs_and_entropy(logits, tokens, temperature=0)
