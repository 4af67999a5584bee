"""Token log-probabilities and entropies from logits, at a given temperature.

Computed in chunks of rows: a full ``[batch, len, vocab]`` log-softmax in float32 is what
made entropy spike memory in verl (PR #1100) and TRL (PR #4013).
"""

from __future__ import annotations

import torch


def token_logprobs_and_entropy(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_rows: int = 16,
    with_entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of ``tokens`` and the entropy of the distribution at each position.

    ``logits``: ``[batch, len, vocab]`` already aligned with ``tokens`` ``[batch, len]``.
    Old log-probs and the entropy the controller reads are taken at temperature 1: both
    describe pi_old itself, and reading them at the sampling temperature (T_high, T_low)
    would skew the ratio and the measurement by up to a nat.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logps, ents = [], []
    for start in range(0, logits.shape[0], chunk_rows):
        block = logits[start : start + chunk_rows].float() / temperature
        log_softmax = torch.log_softmax(block, dim=-1)
        idx = tokens[start : start + chunk_rows].unsqueeze(-1)
        logps.append(log_softmax.gather(-1, idx).squeeze(-1))
        if with_entropy:
            ents.append(-(log_softmax.exp() * log_softmax).sum(-1))
    logp = torch.cat(logps, 0)
    return logp, (torch.cat(ents, 0) if with_entropy else None)
