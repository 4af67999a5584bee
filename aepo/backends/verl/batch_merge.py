"""Turn selected extra samples into training rows and merge them into fit()'s batch.

The row plan itself (which GRPO rows make room) is the core's
``plan_merge``; this module only applies it to a verl ``DataProto``.
"""

from __future__ import annotations

import numpy as np
import torch
from verl import DataProto

from aepo.backends.verl._verl_internals import UNSUPPORTED_WITH_EXTRA_ROWS, update_layout
from aepo.core import MergePlan, Reinforcement, StepPlan


def sequence_advantage(batch: DataProto) -> torch.Tensor:
    """One advantage magnitude per row: exactly zero iff the row gives no policy gradient."""
    adv = batch.batch["advantages"]
    mask = batch.batch["response_mask"].to(torch.bool)
    return torch.where(mask, adv, torch.zeros_like(adv)).abs().amax(dim=-1)


def select_reinforcement(
    trainer, plan: StepPlan, grpo: DataProto, outputs: DataProto, group_uids, rows: int
) -> Reinforcement:
    """The step's REINFORCE selection over the scored extra samples ``outputs``: the step's
    third call into the core (``AEPOStep.reinforce``), made here for both verl trainers.
    ``grpo``: the GRPO batch (its advantages say which rows give no gradient); ``rows``: the
    rows of the actor update it is merged into."""
    response_mask = grpo.batch["response_mask"]
    return trainer.aepo.reinforce(
        plan,
        outputs.batch["rm_scores"].sum(dim=-1),
        group_uids,
        outputs.batch["response_mask"],
        grpo_advantage=sequence_advantage(grpo),
        grpo_lengths=response_mask.sum(-1).cpu(),
        layout=update_layout(trainer, rows, response_mask.shape[-1]),
    )


def first_row_by_uid(uids: np.ndarray) -> dict[str, int]:
    """uid -> the first row holding it, in order of first appearance (one row per prompt)."""
    first_row: dict[str, int] = {}
    for i, uid in enumerate(uids.tolist()):
        first_row.setdefault(str(uid), i)
    return first_row


def template_rows(batch: DataProto, source_uids: list[str]) -> np.ndarray:
    """For each extra sample, a row of the batch with the same prompt (same uid)."""
    first_row = first_row_by_uid(batch.non_tensor_batch["uid"])
    missing = sorted({u for u in source_uids if u not in first_row})
    if missing:
        raise KeyError(
            f"extra samples refer to prompts not in the training batch: uids {missing[:3]}"
        )
    return np.asarray([first_row[u] for u in source_uids], dtype=np.int64)


def build_reinforce_rows(
    batch: DataProto,
    samples: DataProto,
    *,
    source_uids: list[str],
    group_uids: list[str],
    advantages: torch.Tensor,
) -> DataProto:
    """Training rows for the selected samples, with every key the GRPO batch has.

    Keys the agent loop produced come from the samples; prompt-level keys from the dataset
    come from a GRPO row of the same prompt; rewards and advantages are set here.
    ``old_log_probs`` / ``ref_log_prob`` still hold the template's values until the caller
    scores these rows (``log_prob_passes.add_reinforce_log_probs``).
    """
    unsupported = sorted(UNSUPPORTED_WITH_EXTRA_ROWS & set(batch.batch.keys()))
    if unsupported:
        raise ValueError(
            f"AEPO extra rows cannot be merged into a batch with {unsupported} "
            "(critic values, router replay, sum_pi_squared or REMAX baselines)"
        )
    rows = rows_like(batch, samples, source_uids=source_uids, group_uids=group_uids)
    scores = samples.batch["rm_scores"].to(batch.batch["token_level_scores"].dtype)
    rows.batch["token_level_scores"] = scores
    rows.batch["token_level_rewards"] = scores
    rows.batch["advantages"] = advantages.to(batch.batch["advantages"].dtype)
    if "returns" in rows.batch.keys():
        rows.batch["returns"] = rows.batch["advantages"].clone()
    if "rollout_is_weights" in rows.batch.keys():
        # IS weights of pi_old / pi_rollout make no sense for samples drawn at T != 1.
        rows.batch["rollout_is_weights"] = torch.ones_like(rows.batch["rollout_is_weights"])
    return rows


def rows_like(
    batch: DataProto, samples: DataProto, *, source_uids: list[str], group_uids: list[str]
) -> DataProto:
    """Rows with exactly the keys of ``batch`` (so that ``DataProto.concat`` takes them):
    what the samples have comes from the samples, the rest (prompt-level keys from the
    dataset, keys a pass added) from a row of ``batch`` with the same prompt."""
    rows = batch.select_idxs(template_rows(batch, source_uids))
    rows.meta_info = dict(batch.meta_info)
    for key in batch.batch.keys():
        if key in samples.batch.keys():
            rows.batch[key] = samples.batch[key].to(batch.batch[key].dtype)
    for key in samples.non_tensor_batch.keys() & rows.non_tensor_batch.keys():
        rows.non_tensor_batch[key] = samples.non_tensor_batch[key].copy()
    rows.non_tensor_batch["uid"] = np.asarray(group_uids, dtype=object)
    return rows


def apply_merge(batch: DataProto, rows: DataProto, plan: MergePlan) -> DataProto:
    """A new batch: ``rows`` written over ``plan.replace_rows`` and/or appended, plus
    zero-mask padding rows. fit()'s own batch is left as it was (it feeds fit's metrics)."""
    merged = batch.select_idxs(np.arange(len(batch)))
    merged.meta_info = dict(batch.meta_info)
    k = int(plan.replace_rows.numel())
    if k:
        where = plan.replace_rows
        for key in merged.batch.keys():
            merged.batch[key][where] = rows.batch[key][:k]
        idx = where.numpy()
        for key in merged.non_tensor_batch.keys():
            merged.non_tensor_batch[key][idx] = rows.non_tensor_batch[key][:k]
    parts = [merged]
    if plan.append_rows:
        appended = rows.slice(k, k + plan.append_rows)
        appended.meta_info = merged.meta_info
        parts.append(appended)
    if plan.pad_rows:
        parts.append(noop_rows(batch, plan.pad_rows, merged.meta_info))
    if len(parts) > 1:
        merged = DataProto.concat(parts)
    merged.meta_info["global_token_num"] = merged.batch["attention_mask"].sum(-1).tolist()
    return merged


def noop_rows(batch: DataProto, count: int, meta_info: dict) -> DataProto:
    """Copies of real rows that contribute nothing: response mask and advantage zero.

    The attention mask stays valid so that the forward pass is an ordinary one; the engine
    counts loss tokens from the response mask, so token-mean losses are unchanged.
    """
    idx = np.arange(count) % len(batch)
    pad = batch.select_idxs(idx)
    pad.meta_info = meta_info
    pad.batch["response_mask"] = torch.zeros_like(pad.batch["response_mask"])
    pad.batch["advantages"] = torch.zeros_like(pad.batch["advantages"])
    if "returns" in pad.batch.keys():
        pad.batch["returns"] = torch.zeros_like(pad.batch["returns"])
    return pad
