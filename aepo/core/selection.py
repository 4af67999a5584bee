"""Which temperature samples enter the REINFORCE term, and with what signal.

``reward`` filter (the paper): keep samples with reward >= threshold (R = 1 for binary
rewards); their signal is R. ``advantage`` filter (the authors' code): keep samples whose
group advantage *within the temperature samples* exceeds a threshold, which also drops
groups where every sample was right. The ``aepo_advantage`` ablation keeps every sample
and uses its group advantage, negative ones included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from aepo.core.advantages import group_advantage
from aepo.core.config import AEPOConfig
from aepo.core.recipes import recipe_for

ADVANTAGE_THRESHOLD = 0.05
"""``positive_filter: advantage``: a sample passes above this group advantage"""


@dataclass(frozen=True)
class Selection:
    indices: torch.Tensor
    """rows of the temperature samples chosen, sorted ascending"""
    signal: torch.Tensor
    """per chosen row: R (reward filter) or the group advantage"""
    num_candidates: int
    """how many samples passed the filter before the budget cap"""

    def __len__(self) -> int:
        return int(self.indices.numel())


def select_reinforce_samples(
    rewards: torch.Tensor,
    group_ids: Sequence,
    budget: int,
    *,
    signal: str = "reward",
    positive_filter: str = "reward",
    reward_threshold: float = 1.0,
    advantage_threshold: float = ADVANTAGE_THRESHOLD,
    generator: torch.Generator | None = None,
) -> Selection:
    """Filter the temperature samples and cap them at ``budget``.

    When more samples pass than the budget allows, a uniform random subset is kept (seeded
    by ``generator``), so that no prompt is favoured by its position in the batch.
    """
    rewards = rewards.detach().float().reshape(-1)
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    candidates, values = _filter(
        rewards, group_ids, signal, positive_filter, reward_threshold, advantage_threshold
    )
    num_candidates = int(candidates.numel())
    if num_candidates > budget:
        order = torch.randperm(num_candidates, generator=generator)[:budget]
        candidates = candidates[order]
    chosen = torch.sort(candidates).values
    return Selection(indices=chosen, signal=values[chosen], num_candidates=num_candidates)


def _filter(rewards, group_ids, signal, positive_filter, reward_threshold, advantage_threshold):
    """(rows that pass the filter, ascending; every row's signal)."""
    if signal == "advantage":
        return torch.arange(rewards.numel()), group_advantage(rewards, group_ids)
    if signal != "reward":
        raise ValueError(f"unknown signal {signal!r}")
    if positive_filter == "reward":
        keep = rewards >= reward_threshold
    elif positive_filter == "advantage":
        keep = group_advantage(rewards, group_ids) > advantage_threshold
    else:
        raise ValueError(f"unknown positive_filter {positive_filter!r}")
    return torch.nonzero(keep, as_tuple=False).reshape(-1), rewards


def select_from_extra_rollout(
    cfg: AEPOConfig,
    budget: int,
    rewards: torch.Tensor,
    group_ids: Sequence,
    generator: torch.Generator | None = None,
) -> tuple[Selection, dict[str, float]]:
    """The recipe's filter and signal, capped at ``budget``; changes no state but the
    generator's (:meth:`aepo.core.AEPOStep.reinforce` records the positive rate)."""
    selection = select_reinforce_samples(
        rewards,
        group_ids,
        budget,
        signal=recipe_for(cfg).signal,
        positive_filter=cfg.positive_filter,
        reward_threshold=cfg.reward_threshold,
        generator=generator,
    )
    generated = int(rewards.numel())
    metrics = {
        "aepo/positive_rate": selection.num_candidates / max(1, generated),
        "aepo/reinforce_samples": float(len(selection)),
    }
    return selection, metrics
