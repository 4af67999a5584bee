"""Token-level loss terms on ``[batch, response_len]`` tensors with a response mask.

The PPO-clip loss is written here rather than imported from verl so that ``aepo.core``
has no verl dependency (the local engine must run without verl's trainer stack); a test
checks it against ``verl.trainer.ppo.core_algos`` number for number.

The AEPO term needs no loss of its own: for a positive weight ``a``,
``min(r * a, clip(r) * a) = a * min(r, clip(r))``, so PPO-clip with advantage ``alpha * R``
on the selected rows *is* ``alpha`` times the clipped REINFORCE term (design decision 2).
"""

from __future__ import annotations

import torch

AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def aggregate(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean") -> torch.Tensor:
    """Reduce a per-token loss to a scalar, as verl's ``agg_loss`` does on one device."""
    mask = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return masked_mean(loss_mat, mask)
    if mode == "token-sum":
        return (loss_mat * mask).sum()
    seq_tokens = mask.sum(-1)
    has_tokens = seq_tokens > 0
    num_seqs = has_tokens.sum().clamp_min(1)
    if mode == "seq-mean-token-mean":
        per_seq = (loss_mat * mask).sum(-1) / seq_tokens.clamp_min(1.0)
        return per_seq[has_tokens].sum() / num_seqs
    if mode == "seq-mean-token-sum":
        return (loss_mat * mask).sum(-1)[has_tokens].sum() / num_seqs
    raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {AGG_MODES}")


def ppo_clip_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    agg: str = "token-mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate with dual clip for negative advantages (verl's ``vanilla``).

    Returns the loss to minimise (the negative objective) and diagnostics.
    """
    log_ratio = torch.clamp(log_prob - old_log_prob, -20.0, 20.0)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    surrogate = torch.maximum(unclipped, clipped)
    dual = torch.minimum(-advantages * clip_ratio_c, surrogate)
    per_token = torch.where(advantages < 0, dual, surrogate)
    loss = aggregate(per_token, mask, agg)
    with torch.no_grad():
        metrics = {
            "actor/pg_clipfrac": float(masked_mean((clipped > unclipped).float(), mask)),
            "actor/ppo_kl": float(masked_mean(-log_ratio, mask)),
        }
    return loss, metrics


def reinforce_advantages(signal: torch.Tensor, alpha: float, mask: torch.Tensor) -> torch.Tensor:
    """Token advantages ``alpha * R`` for selected rows (``signal``: one value per row)."""
    return alpha * signal.reshape(-1, 1).float() * mask.float()


def entropy_bonus_loss(
    entropy: torch.Tensor, mask: torch.Tensor, coef: float, agg: str = "token-mean"
) -> torch.Tensor:
    """Entropy-Reg: ``-lambda * H`` added to the loss (maximises entropy of pi_theta)."""
    return -coef * aggregate(entropy, mask, agg)


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
