"""Token-level loss terms on ``[batch, response_len]`` tensors with a response mask.

The PPO-clip loss is written here rather than imported from verl so that ``aepo.core``
has no verl dependency (the local engine must run without verl's trainer stack); a test
checks it against ``verl.trainer.ppo.core_algos`` number for number. Why PPO-clip rows with
advantage ``alpha * R`` realise Eq. 1 is stated once, in ``aepo.core.objective``;
``eq1_row_scale`` weighs those rows for the engine's aggregation.
"""

from __future__ import annotations

import torch

AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum")
VERL_AGG_MODES = (*AGG_MODES, "seq-mean-token-sum-norm")
"""every ``loss_agg_mode`` of verl 0.9.1's ``agg_loss``; the local engine offers the first four"""


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def aggregate(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    horizon: float | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss to a scalar, as verl's ``agg_loss`` does on one device
    (``horizon``: the divisor of ``seq-mean-token-sum-norm``, verl's ``loss_scale_factor``)."""
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
    if mode == "seq-mean-token-sum-norm":
        if not horizon:
            raise ValueError("seq-mean-token-sum-norm needs the horizon it divides by")
        return (loss_mat * mask).sum(-1)[has_tokens].sum() / num_seqs / horizon
    raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {VERL_AGG_MODES}")


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
    horizon: float | None = None,
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
    loss = aggregate(per_token, mask, agg, horizon)
    with torch.no_grad():
        metrics = {
            "actor/pg_clipfrac": float(masked_mean((clipped > unclipped).float(), mask)),
            "actor/ppo_kl": float(masked_mean(-log_ratio, mask)),
        }
    return loss, metrics


def _row_coefficients(
    lengths: torch.Tensor, mode: str, num_seqs: float, horizon: float | None
) -> torch.Tensor:
    """``c`` with ``aggregate(loss, mask, mode) == sum_i c_i * sum_t loss_it`` for one batch."""
    lengths = lengths.double()
    if mode == "token-mean":
        return torch.full_like(lengths, 1.0 / max(float(lengths.sum()), 1.0))
    if mode == "token-sum":
        return torch.ones_like(lengths)
    seqs = max(float(num_seqs), 1.0)
    if mode == "seq-mean-token-sum":
        return torch.full_like(lengths, 1.0 / seqs)
    if mode == "seq-mean-token-sum-norm":
        if not horizon:
            raise ValueError("seq-mean-token-sum-norm needs the horizon it divides by")
        return torch.full_like(lengths, 1.0 / (seqs * horizon))
    if mode == "seq-mean-token-mean":
        return 1.0 / (seqs * lengths.clamp_min(1.0))
    raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {VERL_AGG_MODES}")


def eq1_row_scale(
    lengths: torch.Tensor,
    reinforce: torch.Tensor,
    minibatch: torch.Tensor,
    *,
    mode: str,
    rows_per_minibatch: int | None = None,
    horizon: float | None = None,
) -> torch.Tensor:
    """Per-row factors for the advantages of a merged batch so that, whatever ``mode``,
    the step minimises ``L_GRPO + alpha * L_REINFORCE`` (Eq. 1,
    ``aepo.core.objective.aepo_objective``) in every update:

    - ``L_GRPO``: ``mode``'s aggregate over the GRPO rows of that mini-batch alone;
    - ``L_REINFORCE``: the step's mean over its K REINFORCE rows of each row's token mean,
      ``(1/K) sum_o (1/|o|) sum_t``; a mini-batch holding k of them gets ``B * k / K`` of
      it (B mini-batches), so the B updates together apply it B times, as they apply
      ``L_GRPO``'s B parts -- and a mini-batch that drew no positive does not make the push
      weaker. ``plan_merge`` spreads the rows evenly, so normally ``k = K / B``.

    alpha itself already sits in those rows' advantages; ``s = wanted coefficient / the one
    the aggregate gives``, per row.

    ``lengths``: response tokens per row. ``reinforce``: rows carrying the REINFORCE term.
    ``minibatch``: the optimiser step each row falls in (the global mini-batch, over all
    data-parallel ranks). ``rows_per_minibatch``: the sequence count the aggregate divides
    by (verl: ``ppo_mini_batch_size * n``, empty rows included); ``None``: the rows with a
    token (the local engine's ``aggregate``). ``horizon``: ``seq-mean-token-sum-norm``'s
    divisor.
    """
    lengths = lengths.detach().reshape(-1).double()
    reinforce = reinforce.reshape(-1).to(torch.bool)
    minibatch = minibatch.reshape(-1)
    scale = torch.zeros_like(lengths)
    batches = torch.unique(minibatch).tolist()
    total_k = int((reinforce & (lengths > 0)).sum())
    for b in batches:
        rows = (minibatch == b).nonzero().reshape(-1)
        length = lengths[rows]
        is_rf = reinforce[rows]
        has_tokens = length > 0
        if rows_per_minibatch is None:
            seqs, grpo_seqs = has_tokens.sum(), (has_tokens & ~is_rf).sum()
        else:
            seqs, grpo_seqs = rows_per_minibatch, rows_per_minibatch - int(is_rf.sum())
        actual = _row_coefficients(length, mode, seqs, horizon)
        wanted = torch.zeros_like(length)
        grpo = ~is_rf
        if grpo.any():
            wanted[grpo] = _row_coefficients(length[grpo], mode, grpo_seqs, horizon)
        if total_k:
            wanted[is_rf] = len(batches) / (total_k * length[is_rf].clamp_min(1.0))
        scale[rows] = torch.where(has_tokens, wanted / actual, torch.zeros_like(actual))
    return scale.float()


def entropy_bonus_loss(
    entropy: torch.Tensor, mask: torch.Tensor, coef: float, agg: str = "token-mean"
) -> torch.Tensor:
    """Entropy-Reg: ``-lambda * H`` added to the loss (maximises entropy of pi_theta)."""
    return -coef * aggregate(entropy, mask, agg)
