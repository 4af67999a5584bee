"""The AEPO objective, Eq. 1 of arXiv 2510.08141, as the paper writes it.

The tests use :func:`aepo_objective` as the reference that both engines' merged batches must
reproduce (``tests/core/test_core_objective.py``).

How the engines realise it without a loss of their own: PPO-clip's per-token surrogate for an
advantage ``a > 0`` is ``min(r * a, clip(r, 1-eps, 1+eps) * a) = a * min(r, clip(r))``, so a
row with advantage ``alpha * R`` in the ordinary PPO-clip batch *is* ``alpha`` times the clipped
REINFORCE term of that sample. The REINFORCE rows therefore enter the GRPO batch (in place of
rows whose GRPO advantage is exactly zero, ``merge.plan_merge``), and since PPO-clip's per-token
loss is ``-A`` times a function of the ratio, scaling a row's advantage by ``s > 0`` scales its
loss and gradient by ``s``: ``losses.eq1_row_scale`` picks the ``s`` that gives every row the
weight this function gives it, whatever the engine's loss aggregation and mini-batches.
"""

from __future__ import annotations

import torch

from aepo.core.losses import ppo_clip_loss


def aepo_objective(
    grpo_log_prob: torch.Tensor,
    grpo_old_log_prob: torch.Tensor,
    grpo_advantages: torch.Tensor,
    grpo_mask: torch.Tensor,
    reinforce_log_prob: torch.Tensor,
    reinforce_old_log_prob: torch.Tensor,
    reinforce_rewards: torch.Tensor,
    reinforce_mask: torch.Tensor,
    *,
    alpha: float,
    clip_ratio: float = 0.2,
    agg: str = "token-mean",
    horizon: float | None = None,
) -> torch.Tensor:
    """``J_AEPO = J_GRPO + alpha * J_REINFORCE`` (Eq. 1), to maximise, where

    - ``J_GRPO``: PPO-clip on the GRPO rows with their group advantages (verl's ``vanilla``
      surrogate, dual clip included), aggregated by ``agg`` (any of verl's
      ``loss_agg_mode``; ``horizon`` is ``seq-mean-token-sum-norm``'s divisor);
    - ``J_REINFORCE = E_{o ~ pi_old^T} (1/|o|) sum_t min(r_t R, clip(r_t, 1-eps, 1+eps) R)``
      over the positive samples drawn at the controller's temperature T, with
      ``r_t = pi_theta / pi_old`` at T = 1 and ``R`` their rewards.

    Log-probs, advantages and masks are ``[rows, response_len]``; ``reinforce_rewards`` has
    one value per REINFORCE row.
    """
    grpo_loss, _ = ppo_clip_loss(
        grpo_log_prob,
        grpo_old_log_prob,
        grpo_advantages,
        grpo_mask,
        clip_low=clip_ratio,
        clip_high=clip_ratio,
        agg=agg,
        horizon=horizon,
    )
    ratio = torch.exp(reinforce_log_prob - reinforce_old_log_prob)
    reward = reinforce_rewards.reshape(-1, 1).to(ratio.dtype)
    clipped = torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    per_token = torch.minimum(ratio * reward, clipped * reward)
    mask = reinforce_mask.to(ratio.dtype)
    per_sample = (per_token * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
    return -grpo_loss + alpha * per_sample.mean()
