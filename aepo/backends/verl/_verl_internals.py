"""Every verl name we use that is not public API, read from verl 0.9.1 and kept in
one module, so that a verl upgrade is checked in one place.

verl 0.9.1 documents the trainer, DataProto and the registries, but the agent-loop registry
dict, the trainer's DP-size query and the checkpoint-folder lookup are private. They are
collected here so that an upgrade past 0.9.1 means reading one module, not the whole
plug-in. The overridden ``RayPPOTrainer`` hooks (``init_workers``, ``_compute_old_log_prob``,
``_update_actor``, ``_save_checkpoint``, ``_load_checkpoint``) are described in
:mod:`aepo.backends.verl.trainer`; the REINFORCE rows' and DCPO's extra passes call verl's own
``_compute_old_log_prob`` and ``_compute_ref_log_prob`` (:mod:`aepo.backends.verl.log_prob_passes`).
This is the one module that cites verl's source by file and line (read from 0.9.1); a test
keeps such citations out of the others.
"""

from __future__ import annotations

import os
from typing import Any

# The module whose import creates verl's agent-loop registry (agent_loop.py:467).
AGENT_LOOP_MODULE = "verl.experimental.agent_loop.agent_loop"

# Computed per response by features AEPO rows cannot reproduce without a matching pass:
# a critic's values, MoE router replay, the optimal-token-baseline statistics, REMAX.
UNSUPPORTED_WITH_EXTRA_ROWS = frozenset(
    {"values", "routed_experts", "sum_pi_squared", "reward_baselines"}
)


def agent_loop_registry() -> dict[str, Any]:
    """verl's name -> ``{"_target_": ...}`` registry of agent loops (per process)."""
    from verl.experimental.agent_loop import agent_loop

    return agent_loop._agent_loop_registry


def actor_dp_size(trainer) -> int:
    """Data-parallel ranks the actor's batches are chunked over (ray_trainer.py:1162; the V1
    trainer has no such method and queries the same dispatch info inline, v1/trainer_base.py
    _balance_batch:1608-1617)."""
    return _dp_size(trainer, trainer.actor_rollout_wg, "actor")


def _dp_size(trainer, group, role: str) -> int:
    if hasattr(trainer, "_get_dp_size"):
        return trainer._get_dp_size(group, role)
    if role not in group._dispatch_info:
        group._dispatch_info[role] = group._query_dispatch_info(role)
    return max(group._dispatch_info[role]) + 1


def log_prob_pass_divisor(trainer, role: str) -> int:
    """Rows a forward-only pass of ``role`` (``actor`` or ``ref``) must be a multiple of:
    verl's nd-dispatch gives each DP rank an equal chunk, and without dynamic batch sizes each
    rank's chunk must be whole micro-batches of ``log_prob_micro_batch_size_per_gpu``
    (engine/utils.py:124-128). The reference worker has its own micro-batch size
    (engine_workers.py:545-584); a reference inside the actor (LoRA) uses the actor's."""
    rollout_ref = trainer.config.actor_rollout_ref
    if role == "ref" and not getattr(trainer, "ref_in_actor", False):
        dp, section = ref_dp_size(trainer), rollout_ref.ref
    else:
        dp, section = actor_dp_size(trainer), rollout_ref.rollout
    if section.get("log_prob_use_dynamic_bsz", False):
        return dp
    return dp * (section.get("log_prob_micro_batch_size_per_gpu") or 1)


def update_layout(trainer, num_rows: int, response_length: int):
    """verl's update, as the merge and the Eq. 1 weighting must see it: verl's engine gives
    each rank a contiguous chunk and cuts it into contiguous mini-batches (engine_workers.py
    train_mini_batch, actor.shuffle false), normalising by the global mini-batch's tokens or
    ``ppo_mini_batch_size * n`` rows (fsdp/transformer_impl.py)."""
    import math

    import torch

    from aepo.core import UpdateLayout

    dp = actor_dp_size(trainer)
    actor = trainer.config.actor_rollout_ref.actor
    mini = actor.ppo_mini_batch_size * trainer.config.actor_rollout_ref.rollout.n
    per_rank = max(1, mini // dp)

    def minibatch_of(total: int) -> torch.Tensor:
        return (torch.arange(total) % (total // dp)) // per_rank

    return UpdateLayout(
        loss_agg_mode=actor.get("loss_agg_mode", "token-mean"),
        num_chunks=dp * max(1, num_rows // mini),
        batch_multiple=math.lcm(dp, mini),
        minibatch_of=minibatch_of,
        rows_per_minibatch=mini,
        # verl divides seq-mean-token-sum-norm by loss_scale_factor, else by the padded
        # response length (exact here when the former is set).
        horizon=actor.get("loss_scale_factor") or response_length,
    )


def ref_dp_size(trainer) -> int:
    """DP ranks of the reference pass: the ``ref`` mesh of ``ref_policy_wg``
    (ray_trainer.py:895-907 sets it; engine_workers.py:589 registers the mesh)."""
    return _dp_size(trainer, trainer.ref_policy_wg, "ref")


def resumed_checkpoint_folder(trainer_config, global_steps: int) -> str:
    """The ``global_step_N`` folder ``RayPPOTrainer._load_checkpoint`` (ray_trainer.py:1052)
    has just resumed from, recomputed with the same rules (relative paths against cwd)."""
    if trainer_config.resume_mode == "resume_path":
        folder = trainer_config.resume_from_path
    else:
        folder = checkpoint_folder(trainer_config, global_steps)
    return folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)


def checkpoint_folder(trainer_config, global_steps: int) -> str:
    """Where ``RayPPOTrainer._save_checkpoint`` (ray_trainer.py:983) writes step N."""
    return os.path.join(trainer_config.default_local_dir, f"global_step_{global_steps}")


def actor_loss_config(config):
    """The actor config the worker's loss reads: the worker builds it with
    ``omega_conf_to_dataclass(self.config.actor)`` (engine_workers.py:593) and trains with
    ``partial(ppo_loss, config=actor_config)`` (engine_workers.py:643)."""
    from verl.utils.config import omega_conf_to_dataclass

    return omega_conf_to_dataclass(config.actor_rollout_ref.actor)


def set_update_entropy(config, on: bool) -> None:
    """Whether verl's actor update computes pi_theta's entropy: ``_update_actor`` reads the
    driver's ``actor.calculate_entropy`` (or a nonzero ``entropy_coeff``) at every update
    (ray_trainer.py:1336-1338; V1: trainer_base.py:1831), so it can follow a per-step bonus."""
    from omegaconf import open_dict

    actor = config.actor_rollout_ref.actor
    with open_dict(actor):
        actor.calculate_entropy = on


def actor_loss_with_entropy_coeff(actor_config, entropy_coeff: float):
    """The worker's own loss, ``ppo_loss`` (workers/utils/losses.py), whose entropy bonus is
    ``entropy_coeff * entropy``, with a new ``entropy_coeff``; ``set_loss_fn`` on the actor
    worker group (engine_workers.py:530, dispatched to every rank) installs it, as
    ``RayPPOTrainer.init_workers`` installs the critic's (ray_trainer.py:891)."""
    import dataclasses
    from functools import partial

    from verl.workers.utils.losses import ppo_loss

    return partial(ppo_loss, config=dataclasses.replace(actor_config, entropy_coeff=entropy_coeff))


def entropic_ppo_loss(
    config,
    model_output,
    data,
    dp_group=None,
    *,
    control_alpha: float,
    high_prob_threshold: float,
):
    """verl's ``ppo_loss`` plus EntroPIC's term ``alpha * agg(-ratio * |A|)`` over the tokens
    pi_theta gives more than ``high_prob_threshold`` (yk7333/EntroPIC
    ``compute_policy_loss_entropic``), aggregated by verl's ``agg_loss`` with the update's
    global batch info, as the worker aggregates its policy loss."""
    import math

    import torch
    from verl.trainer.ppo.core_algos import agg_loss
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding

    loss, metrics = ppo_loss(config, model_output, data, dp_group)
    log_prob = no_padding_2_padding(model_output["log_probs"], data)
    padded = data.select("response_mask", "old_log_probs", "advantages").to_padded_tensor()
    mask = padded["response_mask"].to(bool)
    ratio = torch.exp(torch.clamp(log_prob - padded["old_log_probs"], min=-20.0, max=20.0))
    high = mask & (log_prob > math.log(high_prob_threshold))
    adjust = agg_loss(
        loss_mat=-ratio * padded["advantages"].abs(),
        loss_mask=high,
        loss_agg_mode=config.loss_agg_mode,
        **config.global_batch_info,
    )
    return loss + control_alpha * adjust, metrics


def actor_loss_with_entropic_alpha(actor_config, alpha: float, high_prob_threshold: float):
    """The worker's loss with EntroPIC's term at this step's ``alpha``, for ``set_loss_fn``."""
    from functools import partial

    return partial(
        entropic_ppo_loss,
        config=actor_config,
        control_alpha=alpha,
        high_prob_threshold=high_prob_threshold,
    )
