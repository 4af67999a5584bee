"""Eq. 1 under every loss aggregation: with ``alpha_meaning: paper`` each update's merged loss
(and its gradient) is ``L_GRPO + alpha * L_REINFORCE`` computed separately, where
``L_REINFORCE`` is the step's mean over its REINFORCE samples of their token-mean clipped
term, each of the B mini-batches carrying ``B * k / K`` of it for its k of the K samples --
whatever the aggregation mode, the number of mini-batches and data-parallel ranks."""

import pytest
import torch

from aepo.core import (
    AGG_MODES,
    VERL_AGG_MODES,
    aepo_objective,
    eq1_row_scale,
    plan_merge,
    ppo_clip_loss,
    reinforce_advantages,
)

EPS = 0.2
HORIZON = 9


def clipped_reinforce_mean(log_prob, old_log_prob, reward, mask):
    """The paper's REINFORCE term alone (alpha 1, no GRPO rows), as a loss."""
    none = log_prob[:0]
    return -aepo_objective(
        none, none, none, none, log_prob, old_log_prob, reward, mask, alpha=1.0, clip_ratio=EPS
    )


def merged_batch(seed, alpha, rows=32, length=HORIZON, num_extra=6, chunks=4):
    """A GRPO batch with half its rows at zero advantage, ``num_extra`` REINFORCE rows
    written over them; returns the pieces and where the REINFORCE rows went."""
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(rows, length, generator=gen) < 0.7).float()
    mask[:, 0] = 1
    old = -torch.rand(rows, length, generator=gen) * 2
    new = (old + 0.4 * torch.randn(rows, length, generator=gen)).requires_grad_()
    seq_adv = torch.randn(rows, generator=gen)
    seq_adv[torch.randperm(rows, generator=gen)[: rows // 2]] = 0.0
    adv = seq_adv.reshape(-1, 1) * mask
    plan = plan_merge(seq_adv, num_extra, num_chunks=chunks)
    reinforce = torch.zeros(rows, dtype=torch.bool)
    reinforce[plan.replace_rows] = True
    reward = torch.ones(num_extra)
    adv = adv.clone()
    adv[plan.replace_rows] = reinforce_advantages(reward, alpha, mask[plan.replace_rows])
    return new, old, mask, adv, reinforce


def separate_loss(new, old, mask, reinforce, alpha, mode, share=1.0, grpo_adv=None):
    """Eq. 1 computed on the two sets of rows separately (``aepo_objective``), as a loss;
    ``share``: this mini-batch's part of the step's REINFORCE term, ``B * k / K``."""
    g, r = ~reinforce, reinforce
    return -aepo_objective(
        new[g],
        old[g],
        grpo_adv[g],
        mask[g],
        new[r],
        old[r],
        torch.ones(int(r.sum())),
        mask[r],
        alpha=alpha * share,
        clip_ratio=EPS,
        agg=mode,
        horizon=HORIZON,
    )


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("alpha", [0.5, 1.0, 8.0])
def test_local_aggregate_is_grpo_plus_alpha_mean_reinforce(mode, alpha):
    """The local engine's ``aggregate`` over each of 4 contiguous mini-batches."""
    new, old, mask, adv, reinforce = merged_batch(seed=1, alpha=alpha)
    minibatch = torch.arange(len(new)) // 8
    scale = eq1_row_scale(mask.sum(-1), reinforce, minibatch, mode=mode)
    grpo_adv = adv  # GRPO rows keep their advantage in the separate computation
    for b in range(4):
        rows = minibatch == b
        assert reinforce[rows].any()  # plan_merge spread the rows over the mini-batches
        merged, _ = ppo_clip_loss(
            new[rows],
            old[rows],
            (adv * scale.unsqueeze(1))[rows],
            mask[rows],
            agg=mode,
        )

        share = 4 * int(reinforce[rows].sum()) / int(reinforce.sum())
        sub = (new[rows], old[rows], mask[rows], reinforce[rows])
        expected = separate_loss(*sub, alpha, mode, share, grpo_adv=grpo_adv[rows])
        torch.testing.assert_close(merged, expected, rtol=1e-5, atol=1e-6)
        g_merged = torch.autograd.grad(merged, new)[0]
        g_expected = torch.autograd.grad(expected, new)[0]
        torch.testing.assert_close(g_merged, g_expected, rtol=1e-5, atol=1e-7)


def test_batch_share_leaves_the_advantages_to_the_aggregate():
    """Under token-mean, leaving the rows to the aggregate dilutes alpha by the REINFORCE
    rows' share of the tokens (``alpha_meaning: batch_share``, the authors' code)."""
    new, old, mask, adv, reinforce = merged_batch(seed=2, alpha=1.0)
    merged, _ = ppo_clip_loss(new, old, adv, mask, agg="token-mean")
    rf = clipped_reinforce_mean(new[reinforce], old[reinforce], torch.ones(1), mask[reinforce])
    share = float(mask[reinforce].sum() / mask.sum())
    assert share < 0.3
    grpo_part = ppo_clip_loss(new[~reinforce], old[~reinforce], adv[~reinforce], mask[~reinforce])
    assert not torch.allclose(merged, grpo_part[0] + rf, rtol=1e-3)


def test_a_minibatch_without_positives_does_not_weaken_the_step():
    """3 REINFORCE rows over 4 mini-batches: the 3 that hold one carry 4/3 of the term each,
    so the 4 updates together apply alpha * L_REINFORCE 4 times, as with 4 or 8 rows."""
    new, old, mask, adv, reinforce = merged_batch(seed=5, alpha=1.0, num_extra=3)
    minibatch = torch.arange(len(new)) // 8
    scale = eq1_row_scale(mask.sum(-1), reinforce, minibatch, mode="token-sum")
    # token-sum weighs each token 1, so a row's share of the term is scale * |o|
    per_row = (scale.unsqueeze(1) * mask).sum(-1)
    torch.testing.assert_close(per_row[reinforce], torch.full((3,), 4 / 3, dtype=torch.float32))
    assert len(set(minibatch[reinforce].tolist())) == 3


def test_scale_is_independent_of_batch_size_for_the_reinforce_term():
    """The same 6 REINFORCE rows weigh the same in a batch of 32 rows and one of 128."""
    values = []
    for rows in (32, 128):
        new, old, mask, adv, reinforce = merged_batch(seed=3, alpha=1.0, rows=rows, chunks=1)
        scale = eq1_row_scale(mask.sum(-1), reinforce, torch.zeros(rows), mode="token-mean")
        per_row = (scale.unsqueeze(1) * mask / mask.sum())[reinforce].sum(-1)
        values.append(per_row.sum().item())
    assert values[0] == pytest.approx(1.0) and values[1] == pytest.approx(1.0)


core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
from verl.workers.config import FSDPActorConfig  # noqa: E402


def verl_loss(new, old, adv, mask, mode, *, dp, batch_num_tokens, global_batch_size):
    """verl 0.9.1's vanilla policy loss on one rank's rows, with the global batch info its
    engine passes (fsdp/transformer_impl.py, workers/utils/losses.py)."""
    config = FSDPActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=EPS,
        clip_ratio_low=EPS,
        clip_ratio_high=EPS,
        loss_agg_mode=mode,
    )
    config.global_batch_info.update(
        dp_size=dp,
        batch_num_tokens=batch_num_tokens,
        global_batch_size=global_batch_size,
        loss_scale_factor=HORIZON,
    )
    loss, _ = core_algos.compute_policy_loss_vanilla(
        old_log_prob=old,
        log_prob=new,
        advantages=adv,
        response_mask=mask,
        loss_agg_mode=mode,
        config=config,
    )
    return loss


def verl_minibatch_of_rows(rows, dp, mini_rows):
    """verl's layout: contiguous rank chunks, contiguous mini-batches within each chunk."""
    chunk, per_rank = rows // dp, mini_rows // dp
    return (torch.arange(rows) % chunk) // per_rank


@pytest.mark.parametrize("mode", VERL_AGG_MODES)
@pytest.mark.parametrize("dp", [1, 2])
def test_verl_aggregate_is_grpo_plus_alpha_mean_reinforce(mode, dp):
    alpha, rows, mini_rows = 2.0, 32, 16
    new, old, mask, adv, reinforce = merged_batch(seed=4, alpha=alpha, chunks=dp * 2)
    minibatch = verl_minibatch_of_rows(rows, dp, mini_rows)
    scale = eq1_row_scale(
        mask.sum(-1),
        reinforce,
        minibatch,
        mode=mode,
        rows_per_minibatch=mini_rows,
        horizon=HORIZON,
    )
    weighted = adv * scale.unsqueeze(1)
    rank = torch.arange(rows) // (rows // dp)
    for b in range(rows // mini_rows):
        in_b = minibatch == b
        tokens = int(mask[in_b].sum())
        # DDP/FSDP average the ranks' gradients; verl's dp_size factor undoes the average.
        merged = (
            sum(
                verl_loss(
                    new[in_b & (rank == r)],
                    old[in_b & (rank == r)],
                    weighted[in_b & (rank == r)],
                    mask[in_b & (rank == r)],
                    mode,
                    dp=dp,
                    batch_num_tokens=tokens,
                    global_batch_size=mini_rows,
                )
                for r in range(dp)
            )
            / dp
        )
        share = (rows // mini_rows) * int((in_b & reinforce).sum()) / int(reinforce.sum())
        sub = (new[in_b], old[in_b], mask[in_b], reinforce[in_b])
        expected = separate_loss(*sub, alpha, mode, share, grpo_adv=adv[in_b])
        torch.testing.assert_close(merged, expected, rtol=1e-5, atol=1e-6)
        g_merged = torch.autograd.grad(merged, new)[0]
        g_expected = torch.autograd.grad(expected, new)[0]
        torch.testing.assert_close(g_merged, g_expected, rtol=1e-5, atol=1e-7)


def test_the_objective_is_grpo_plus_alpha_times_the_written_out_reinforce_term():
    """``aepo_objective`` against Eq. 1 typed in from the paper: the reference the merged
    batches above are held to must itself be the paper's formula."""
    gen = torch.Generator().manual_seed(7)
    mask = (torch.rand(6, HORIZON, generator=gen) < 0.8).float()
    mask[:, 0] = 1
    old = -torch.rand(6, HORIZON, generator=gen)
    new = old + 0.5 * torch.randn(6, HORIZON, generator=gen)
    adv = torch.randn(3, 1, generator=gen) * mask[:3]
    reward = torch.tensor([1.0, 1.0, 0.5])
    r = torch.exp(new[3:] - old[3:])
    term = torch.minimum(r * reward[:, None], torch.clamp(r, 1 - EPS, 1 + EPS) * reward[:, None])
    j_reinforce = ((term * mask[3:]).sum(-1) / mask[3:].sum(-1)).mean()
    j_grpo = -ppo_clip_loss(new[:3], old[:3], adv, mask[:3], clip_low=EPS, clip_high=EPS)[0]
    for alpha in (0.0, 0.5, 4.0):
        got = aepo_objective(
            new[:3], old[:3], adv, mask[:3], new[3:], old[3:], reward, mask[3:], alpha=alpha
        )
        torch.testing.assert_close(got, j_grpo + alpha * j_reinforce)
