"""The forward-only passes AEPO adds to fit()'s: the REINFORCE rows' old and reference
log-probs, and DCPO's old log-probs at T_high/T_low.

Each is ``RayPPOTrainer``'s own pass called on the trainer unbound, so that
``AEPORayTrainer._compute_old_log_prob`` (the entropy measurement) never sees these rows.
The REINFORCE rows always get passes of their own, after the selection, whichever generate
call produced them: at the paper's 7B shape appending them to fit()'s passes instead would
save under 0.1 % of a step (docs/verl_startup.md), not worth a second way to the same
log-probs.
"""

from __future__ import annotations

import math

import torch
from verl import DataProto
from verl.protocol import pad_dataproto_to_divisor
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from aepo.backends.verl._verl_internals import log_prob_pass_divisor


def add_reinforce_log_probs(trainer: RayPPOTrainer, rows: DataProto) -> int:
    """Old (and, when ``rows`` carry the key, reference) log-probs of the REINFORCE rows at
    ``rollout.temperature`` (1.0), the pass the GRPO rows got (the rollout's own log-probs
    are at T_high/T_low); written into ``rows``. Returns the worker calls it made."""
    needs_ref = "ref_log_prob" in rows.batch.keys()
    divisor = log_prob_pass_divisor(trainer, "actor")
    if needs_ref:
        divisor = math.lcm(divisor, log_prob_pass_divisor(trainer, "ref"))
    padded, _ = pad_dataproto_to_divisor(rows, divisor)
    padded.meta_info = dict(rows.meta_info)
    padded.meta_info["temperature"] = trainer.config.actor_rollout_ref.rollout.temperature
    padded.meta_info["global_token_num"] = padded.batch["attention_mask"].sum(-1).tolist()
    k = len(rows)
    old, _ = RayPPOTrainer._compute_old_log_prob(trainer, padded)
    rows.batch["old_log_probs"] = old.batch["old_log_probs"][:k]
    if not needs_ref:
        return 1
    ref = RayPPOTrainer._compute_ref_log_prob(trainer, padded)
    rows.batch["ref_log_prob"] = ref.batch["ref_log_prob"][:k]
    return 2


def log_probs_at(trainer: RayPPOTrainer, batch: DataProto, temperature: float) -> torch.Tensor:
    """DCPO's second old-log-prob pass: verl's actor scores the same rows once more with
    ``meta_info["temperature"]`` set to ``temperature`` (its engine divides the logits by
    it); no generation."""
    at_t = DataProto(
        batch=batch.batch,
        non_tensor_batch=batch.non_tensor_batch,
        meta_info={**batch.meta_info, "temperature": temperature},
    )
    output, _ = RayPPOTrainer._compute_old_log_prob(trainer, at_t)
    return output.batch["old_log_probs"]
