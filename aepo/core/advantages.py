"""Per-token advantages: GRPO's group advantage, AEPO's ``alpha * R`` rows and Entropy-Adv's
shaping. Each returns a ``[rows, response_len]`` tensor (or one value per row) that the
PPO-clip loss in :mod:`aepo.core.losses` consumes."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def group_advantage(
    rewards: torch.Tensor,
    group_ids: Sequence,
    eps: float = 1e-6,
    norm_by_std: bool = True,
) -> torch.Tensor:
    """GRPO's outcome advantage per sample: (r - group mean) / (group std + eps).

    Matches verl's ``compute_grpo_outcome_advantage`` (unbiased std, singleton groups get
    mean 0 and std 1); kept here so that ``aepo.core`` stays free of verl.
    """
    rewards = rewards.detach().float()
    if len(group_ids) != rewards.numel():
        raise ValueError(f"{len(group_ids)} group ids for {rewards.numel()} rewards")
    members: dict = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    advantages = torch.empty_like(rewards)
    for idx in members.values():
        r = rewards[idx]
        if len(idx) == 1:
            mean, std = torch.zeros(()), torch.ones(())
        else:
            mean, std = r.mean(), r.std()
        centred = r - mean
        advantages[idx] = centred / (std + eps) if norm_by_std else centred
    return advantages


def reinforce_advantages(signal: torch.Tensor, alpha: float, mask: torch.Tensor) -> torch.Tensor:
    """Token advantages ``alpha * R`` for selected rows (``signal``: one value per row)."""
    return alpha * signal.reshape(-1, 1).float() * mask.float()


def entropy_shaped_advantages(
    advantages: torch.Tensor,
    old_entropy: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float = 0.4,
    kappa: float = 2.0,
) -> torch.Tensor:
    """Entropy-Adv: ``A + min(beta * H_t, |A| / kappa)`` with H_t of pi_old, detached.

    The ``|A| / kappa`` cap keeps the bonus from flipping the sign of a negative advantage.
    """
    bonus = torch.minimum(beta * old_entropy.detach(), advantages.abs() / kappa)
    return (advantages + bonus) * mask.to(advantages.dtype)
