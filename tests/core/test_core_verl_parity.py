"""aepo.core re-implements GRPO's advantage and PPO-clip so that it stays verl-free; these
tests pin it to verl 0.9.1's own functions number for number."""

import numpy as np
import pytest
import torch

from aepo.core import aggregate, group_advantage, ppo_clip_loss

core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
from verl.workers.config import FSDPActorConfig  # noqa: E402


def test_group_advantage_equals_verl_grpo():
    gen = torch.Generator().manual_seed(0)
    rewards = (torch.rand(24, generator=gen) < 0.5).float()
    rewards[16:20] = 1.0  # one all-correct group
    uids = np.array([f"p{i // 4}" for i in range(24)], dtype=object)
    uids[23] = "singleton"
    mask = torch.ones(24, 3)
    token_rewards = torch.zeros(24, 3)
    token_rewards[:, -1] = rewards
    verl_adv, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, mask, uids)
    ours = group_advantage(rewards, list(uids))
    torch.testing.assert_close(verl_adv[:, 0], ours)


@pytest.mark.parametrize(
    "agg", ["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum"]
)
def test_ppo_clip_equals_verl_vanilla(agg):
    gen = torch.Generator().manual_seed(1)
    rows, length = 12, 9
    mask = (torch.rand(rows, length, generator=gen) < 0.7).float()
    mask[:, 0] = 1
    old = -torch.rand(rows, length, generator=gen) * 2
    new = old + 0.5 * torch.randn(rows, length, generator=gen)
    adv = torch.randn(rows, 1, generator=gen).expand(rows, length) * 2
    config = FSDPActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=0.2,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
    )
    verl_loss, verl_metrics = core_algos.compute_policy_loss_vanilla(
        old_log_prob=old,
        log_prob=new,
        advantages=adv,
        response_mask=mask,
        loss_agg_mode=agg,
        config=config,
    )
    loss, metrics = ppo_clip_loss(new, old, adv, mask, clip_low=0.2, clip_high=0.28, agg=agg)
    torch.testing.assert_close(loss, verl_loss, rtol=1e-5, atol=1e-6)
    for key in ("actor/pg_clipfrac", "actor/ppo_kl"):
        assert metrics[key] == pytest.approx(verl_metrics[key], rel=1e-5, abs=1e-7)
    verl_agg = core_algos.agg_loss(new, mask, agg)
    torch.testing.assert_close(aggregate(new, mask, agg), verl_agg, rtol=1e-5, atol=1e-6)
