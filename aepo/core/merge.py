"""Where the selected REINFORCE rows go in the GRPO batch.

verl 0.9.1 needs the batch to stay divisible by the data-parallel size and by
``ppo_mini_batch_size * n``, so the extra rows *take the place* of GRPO rows whose advantage
is exactly zero (groups where every response got the same reward contribute no policy
gradient), spread evenly across the contiguous chunks that become ranks and mini-batches.
Only when there are too few such rows do they displace the rows with the smallest |A|.

This module plans row indices only; each engine applies the plan to its own batch type.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MERGE_MODES = ("replace_zero_advantage", "replace_first", "append")


@dataclass(frozen=True)
class MergePlan:
    replace_rows: torch.Tensor
    """rows of the GRPO batch overwritten by extra rows 0..k-1 (in that order)"""
    append_rows: int
    """extra rows k.. appended after the batch"""
    pad_rows: int
    """no-op rows (zero response mask) appended after those, to keep divisibility"""
    displaced_nonzero: int
    """how many overwritten GRPO rows had a non-zero advantage"""

    @property
    def num_extra(self) -> int:
        return int(self.replace_rows.numel()) + self.append_rows

    def reinforce_rows(self, num_grpo_rows: int) -> torch.Tensor:
        """Which rows of the merged batch are REINFORCE rows: those that replaced a GRPO row
        and those appended after the ``num_grpo_rows`` GRPO rows (padding is not)."""
        total = num_grpo_rows + self.append_rows + self.pad_rows
        reinforce = torch.zeros(total, dtype=torch.bool)
        reinforce[self.replace_rows] = True
        reinforce[num_grpo_rows : num_grpo_rows + self.append_rows] = True
        return reinforce


def plan_merge(
    sequence_advantage: torch.Tensor,
    num_extra: int,
    *,
    mode: str = "replace_zero_advantage",
    num_chunks: int = 1,
    batch_multiple: int = 1,
) -> MergePlan:
    """Plan the merge of ``num_extra`` rows into a batch with these per-row advantages.

    ``sequence_advantage``: one value per GRPO row (GRPO's advantage is constant over a
    response, so any token's value will do). ``num_chunks``: how many contiguous equal
    parts the batch is cut into downstream (data-parallel ranks x mini-batches); extra
    rows are spread round-robin over them. ``batch_multiple``: ``append`` pads to it.
    """
    adv = sequence_advantage.detach().reshape(-1).float()
    n = adv.numel()
    if num_extra < 0:
        raise ValueError(f"num_extra must be >= 0, got {num_extra}")
    if mode == "append":
        total = n + num_extra
        pad = (-total) % max(1, batch_multiple)
        return MergePlan(torch.empty(0, dtype=torch.long), num_extra, pad, 0)
    if num_extra > n:
        raise ValueError(f"cannot place {num_extra} extra rows into a batch of {n} by replacement")
    if mode == "replace_first":
        rows = torch.arange(num_extra, dtype=torch.long)
        return MergePlan(rows, 0, 0, int((adv[rows] != 0).sum()))
    if mode != "replace_zero_advantage":
        raise ValueError(f"unknown merge mode {mode!r}; expected one of {MERGE_MODES}")

    if num_chunks < 1 or n % num_chunks:
        raise ValueError(f"batch of {n} rows cannot be cut into {num_chunks} equal chunks")
    zero = (adv == 0).tolist()
    magnitude = adv.abs().tolist()
    chunk_size = n // num_chunks
    # Sort key: zero-advantage rows first, taken round-robin over chunks (k-th zero row of
    # every chunk before the (k+1)-th of any); then the rows with the smallest |A|.
    seen_in_chunk = [0] * num_chunks
    keys = []
    for i in range(n):
        chunk = i // chunk_size
        if zero[i]:
            keys.append((0, seen_in_chunk[chunk], 0.0, chunk, i))
            seen_in_chunk[chunk] += 1
        else:
            keys.append((1, 0, magnitude[i], chunk, i))
    rows = torch.tensor(sorted(range(n), key=keys.__getitem__)[:num_extra], dtype=torch.long)
    displaced = sum(not zero[i] for i in rows.tolist())
    return MergePlan(rows, 0, 0, displaced)
