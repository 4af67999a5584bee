"""Clip-Cov and KL-Cov (arXiv 2505.22617) from verl 0.9.1's policy-loss registry, for the local
engine: ``aepo.baselines.clip_cov`` / ``.kl_cov`` map onto verl's ``actor.policy_loss`` keys
here (a verl run sets those keys itself) and the local engine calls the same registered
function (``verl.trainer.ppo.core_algos.get_policy_loss_fn``) on a real verl actor config, so
the two engines cannot compute different losses.

verl is imported inside the functions that need it: ``aepo train`` for the other algorithms
does not pay for importing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aepo.core.config import AEPOConfig


def verl_policy_loss_settings(cfg: AEPOConfig, loss_mode: str) -> dict[str, Any]:
    """``actor.policy_loss`` keys (verl 0.9.1 ``workers/config/actor.py: PolicyLossConfig``)
    that carry ``aepo.baselines.clip_cov`` / ``.kl_cov`` for ``loss_mode``."""
    if loss_mode == "clip_cov":
        return {
            "clip_cov_ratio": cfg.baselines.clip_cov.ratio,
            "clip_cov_lb": cfg.baselines.clip_cov.lower,
            "clip_cov_ub": cfg.baselines.clip_cov.upper,
        }
    if loss_mode == "kl_cov":
        return {
            "kl_cov_ratio": cfg.baselines.kl_cov.ratio,
            "ppo_kl_coef": cfg.baselines.kl_cov.coef,
        }
    raise ValueError(f"no verl policy-loss settings for loss_mode {loss_mode!r}")


def verl_actor_config(cfg: AEPOConfig, loss_mode: str, loss_agg_mode: str):
    """A real verl actor config for one process (no data parallelism), carrying what the
    registered losses read: clip ratios, aggregation and the ``policy_loss`` section."""
    from verl.workers.config import FSDPActorConfig, PolicyLossConfig

    return FSDPActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=cfg.clip_ratio,
        clip_ratio_low=cfg.clip_ratio,
        clip_ratio_high=cfg.clip_ratio,
        loss_agg_mode=loss_agg_mode,
        policy_loss=PolicyLossConfig(
            loss_mode=loss_mode, **verl_policy_loss_settings(cfg, loss_mode)
        ),
    )


PolicyLoss = Callable[..., tuple[Any, dict[str, float]]]


def verl_policy_loss(cfg: AEPOConfig, loss_mode: str, loss_agg_mode: str) -> PolicyLoss:
    """``loss(log_prob, old_log_prob, advantages, mask) -> (loss, metrics)``: verl's
    registered ``loss_mode`` with this run's settings (same argument order as
    ``aepo.core.ppo_clip_loss``)."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    fn = get_policy_loss_fn(loss_mode)
    config = verl_actor_config(cfg, loss_mode, loss_agg_mode)

    def loss(log_prob, old_log_prob, advantages, mask):
        return fn(
            old_log_prob=old_log_prob,
            log_prob=log_prob,
            advantages=advantages,
            response_mask=mask.to(bool),
            loss_agg_mode=loss_agg_mode,
            config=config,
        )

    return loss
