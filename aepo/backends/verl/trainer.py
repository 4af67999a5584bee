"""``AEPORayTrainer``: verl 0.9.1's v0 ``RayPPOTrainer`` plus the AEPO regulariser.

fit() is not copied. Read from verl 0.9.1, fit() calls these methods through ``self``,
and each override adds one piece of the algorithm:

- ``init_workers``: the rollout manager is wrapped so the temperature samples ride in
  fit()'s own generate call (``entropy_source: previous_step``);
- ``_compute_old_log_prob``: pi_old's token-mean entropy at T = 1 feeds the controller; for
  ``current_batch`` (and step 1) the extra samples are generated right after it;
- ``_update_actor``: positives are selected, get old log-probs at T = 1 and advantage
  ``alpha * R``, and take the place of zero-advantage GRPO rows (design decision 2);
  Entropy-Adv shapes the advantages here;
- ``_save_checkpoint`` / ``_load_checkpoint``: ``aepo_state.json`` beside verl's files.

Which of these steps run is decided by the core's recipe (design decision 7).
"""

from __future__ import annotations

import logging
import math

import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.protocol import pad_dataproto_to_divisor
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from aepo.backends.verl._verl_internals import (
    actor_dp_size,
    checkpoint_folder,
    ref_dp_size,
    resumed_checkpoint_folder,
)
from aepo.backends.verl.batch_merge import apply_merge, build_reinforce_rows, sequence_advantage
from aepo.backends.verl.checkpoint import (
    CheckpointStateError,
    read_state,
    state_path,
    write_state,
)
from aepo.backends.verl.extra_rollout import (
    PendingExtras,
    RolloutManagerProxy,
    build_extra_requests,
    generate_padded,
)
from aepo.core import (
    AEPOConfig,
    EntropyController,
    PositiveRateTracker,
    entropy_shaped_advantages,
    load_aepo_config,
    masked_mean,
    plan_for_decision,
    plan_merge,
    recipe_for,
    reinforce_advantages,
    select_from_extra_rollout,
)

logger = logging.getLogger(__name__)

OLD_ENTROPY_KEY = "aepo_old_entropy"
"""pi_old's token entropies, carried from the old-log-prob pass to the update (Entropy-Adv)"""


def _log_prob_divisor(dp: int, section) -> int:
    """Rows a forward-only pass must be a multiple of: verl's nd-dispatch gives each of the
    ``dp`` ranks an equal chunk, and without dynamic batch sizes each rank's chunk must be
    whole micro-batches of ``log_prob_micro_batch_size_per_gpu`` (engine/utils.py:124-128)."""
    if section.get("log_prob_use_dynamic_bsz", False):
        return dp
    return dp * (section.get("log_prob_micro_batch_size_per_gpu") or 1)


def aepo_config_from(config) -> AEPOConfig:
    if "aepo" not in config:
        raise KeyError("the verl config has no top-level 'aepo:' section (see aepo_trainer.yaml)")
    return load_aepo_config(OmegaConf.to_container(config.aepo, resolve=True), source="aepo")


class AEPORayTrainer(RayPPOTrainer):
    def __init__(self, *args, aepo_config: AEPOConfig | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.setup_aepo(aepo_config or aepo_config_from(self.config))

    def setup_aepo(self, cfg: AEPOConfig) -> None:
        """AEPO's own state; separate from ``__init__`` so tests can build the trainer
        without verl's workers and data loaders."""
        self.aepo_cfg = cfg
        self.recipe = recipe_for(cfg)
        self.controller = EntropyController(cfg)
        self.positive_rates = PositiveRateTracker(cfg.prior_positive_rate)
        self.aepo_rng = torch.Generator().manual_seed(cfg.seed)
        self.rollout_manager = None
        """the real AgentLoopManager, for the second generation pass"""
        self._generation_prompts: DataProto | None = None
        self._pending: PendingExtras | None = None

    # ---- generation ---------------------------------------------------------------------

    def init_workers(self):
        super().init_workers()
        if self.recipe.extra_rollout:
            self.async_rollout_manager = self.wrap_rollout_manager(self.async_rollout_manager)

    def wrap_rollout_manager(self, manager) -> RolloutManagerProxy:
        agent = self.config.actor_rollout_ref.rollout.agent
        self.rollout_manager = manager
        workers = len(getattr(manager, "agent_loop_workers", ()) or ()) or agent.num_workers
        return RolloutManagerProxy(
            manager, self, num_workers=workers, default_agent_loop=agent.default_agent_loop
        )

    def remember_generation_prompts(self, prompts: DataProto) -> None:
        self._generation_prompts = prompts
        self._pending = None

    def plan_same_call_extras(self, prompts: DataProto):
        """The proxy asks before fit()'s generate call; None: no extras in this call."""
        if self.aepo_cfg.entropy_source != "previous_step" or not self.controller.has_measurement:
            return None
        return self._decide_and_plan(len(prompts))

    def receive_extras(self, pending: PendingExtras) -> None:
        self._pending = pending

    def _decide_and_plan(self, num_rows: int):
        """This step's decision and extra-rollout plan; None when the plan generates
        nothing (the decision is then pending without samples, so its metrics are logged)."""
        n = self.config.actor_rollout_ref.rollout.n
        decision = self.controller.decide(self.global_steps)
        plan = plan_for_decision(
            self.aepo_cfg,
            decision,
            self.positive_rates,
            num_prompts=num_rows // n,
            samples_per_prompt=n,
        )
        if plan.num_samples == 0:
            self._pending = PendingExtras(decision, plan, None, [], [], 0)
            return None
        return decision, plan

    def _generate_extras_after_measurement(self, batch: DataProto) -> None:
        """Second generation pass (``current_batch``, or step 1 of ``previous_step``).

        fit() has put the rollout replicas to sleep after its generate call; only
        ``update_weights`` wakes them (re-syncing the still unchanged pi_old), and fit()
        expects them asleep again before its own ``update_weights`` after the update.
        """
        planned = self._decide_and_plan(len(batch))
        if planned is None:
            return
        decision, plan = planned
        if self._generation_prompts is None or self.rollout_manager is None:
            raise RuntimeError(
                "AEPO second generation pass: no generation prompts were seen this step "
                "(init_workers() did not wrap the rollout manager?)"
            )
        extra = build_extra_requests(self._generation_prompts, plan, generator=self.aepo_rng)
        self.checkpoint_manager.update_weights(self.global_steps)
        try:
            _, outputs, spent = generate_padded(
                self.rollout_manager,
                None,
                extra.requests,
                self.async_rollout_manager.num_workers,
            )
        finally:
            self.checkpoint_manager.sleep_replicas()
        self._pending = PendingExtras(
            decision, plan, outputs, extra.source_uids, extra.group_uids, spent
        )

    # ---- entropy measurement ------------------------------------------------------------

    def _compute_old_log_prob(self, batch: DataProto):
        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        entropys = old_log_prob.batch["entropys"]
        # Token mean over the GRPO batch, whatever loss_agg_mode fit() logs actor/entropy with.
        entropy = float(masked_mean(entropys, batch.batch["response_mask"]))
        self.controller.observe(entropy)
        if self.recipe.entropy_adv:
            old_log_prob.batch[OLD_ENTROPY_KEY] = entropys.clone()
        if self.recipe.extra_rollout and self._pending is None:
            self._generate_extras_after_measurement(batch)
        return old_log_prob, mfu

    # ---- the update ---------------------------------------------------------------------

    def _update_actor(self, batch: DataProto) -> DataProto:
        # Design decision 6: both engines log reward/mean, the mean reward of the T = 1
        # (GRPO) samples; fit() logs it only as critic/score/mean.
        metrics = {"reward/mean": float(batch.batch["token_level_scores"].sum(-1).mean())}
        if OLD_ENTROPY_KEY in batch.batch.keys():  # set only for Entropy-Adv
            batch.batch["advantages"] = entropy_shaped_advantages(
                batch.batch["advantages"],
                batch.batch.pop(OLD_ENTROPY_KEY),
                batch.batch["response_mask"],
                beta=self.aepo_cfg.entropy_adv_beta,
                kappa=self.aepo_cfg.entropy_adv_kappa,
            )
        pending, self._pending = self._pending, None
        to_update = batch
        if pending is not None:
            to_update, merge_metrics = self.merge_extras(batch, pending)
            metrics.update(merge_metrics)
        output = super()._update_actor(to_update)
        output.meta_info.setdefault("metrics", {}).update(metrics)
        return output

    def merge_extras(self, batch: DataProto, pending: PendingExtras):
        """Select positives among the extra samples and merge them; returns the batch for
        the actor update and the step's ``aepo/*`` metrics."""
        cfg = self.aepo_cfg
        decision = pending.decision
        # aepo/entropy is the entropy the decision used, as in the local engine; fit() logs
        # this step's measurement as actor/entropy.
        metrics = decision.metrics()
        grpo_tokens = max(1, int(batch.batch["response_mask"].sum().item()))
        metrics["aepo/extra_gen_tokens"] = float(pending.generated_tokens)
        metrics["aepo/extra_gen_fraction"] = pending.generated_tokens / grpo_tokens
        metrics["aepo/extra_samples"] = float(
            0 if pending.outputs is None else len(pending.outputs)
        )
        metrics["aepo/reinforce_samples"] = 0.0
        metrics["aepo/positive_rate"] = 0.0
        outputs = pending.outputs
        if outputs is None or len(outputs) == 0:
            return batch, metrics
        if "rollout_log_probs" in outputs.batch.keys():
            # vLLM's own log-probs of what it sampled: shows the temperature it sampled at
            # (compare actor/entropy, the mean surprise of the T = 1 samples).
            metrics["aepo/extra_rollout_nll"] = -float(
                masked_mean(outputs.batch["rollout_log_probs"], outputs.batch["response_mask"])
            )

        if "rm_scores" not in outputs.batch.keys():
            # A colocated reward model does not score inside the agent loop (verl.md 2.6).
            outputs = outputs.union(self._compute_reward_colocate(outputs))
        rewards = outputs.batch["rm_scores"].sum(dim=-1)
        selection, selection_metrics = select_from_extra_rollout(
            cfg,
            pending.plan,
            decision.budget,
            rewards,
            pending.group_uids,
            self.positive_rates,
            self.aepo_rng,
        )
        metrics.update(selection_metrics)
        if len(selection) == 0:
            return batch, metrics

        chosen = selection.indices.tolist()
        samples = outputs.select_idxs(selection.indices.numpy())
        advantages = reinforce_advantages(
            selection.signal, cfg.alpha, samples.batch["response_mask"]
        )
        rows = build_reinforce_rows(
            batch,
            samples,
            source_uids=[pending.source_uids[i] for i in chosen],
            group_uids=[pending.group_uids[i] for i in chosen],
            advantages=advantages,
        )
        self._recompute_log_probs(rows)

        dp = actor_dp_size(self)
        mini = self.config.actor_rollout_ref.actor.ppo_mini_batch_size
        mini *= self.config.actor_rollout_ref.rollout.n
        plan = plan_merge(
            sequence_advantage(batch),
            len(rows),
            mode=cfg.merge,
            num_chunks=dp * max(1, len(batch) // mini),
            batch_multiple=math.lcm(dp, mini),
        )
        metrics["aepo/displaced_nonzero"] = float(plan.displaced_nonzero)
        return apply_merge(batch, rows, plan), metrics

    def _recompute_log_probs(self, rows: DataProto) -> None:
        """Old (and reference) log-probs of the AEPO rows at ``rollout.temperature`` (1.0),
        the same pass the GRPO rows got; the rollout's own log-probs are at T_high/T_low."""
        rollout = self.config.actor_rollout_ref.rollout
        needs_ref = "ref_log_prob" in rows.batch.keys()
        divisor = _log_prob_divisor(actor_dp_size(self), rollout)
        if needs_ref and not getattr(self, "ref_in_actor", False):
            # The ref worker has its own micro-batch size (engine_workers.py:545-584).
            ref = self.config.actor_rollout_ref.ref
            divisor = math.lcm(divisor, _log_prob_divisor(ref_dp_size(self), ref))
        padded, _ = pad_dataproto_to_divisor(rows, divisor)
        padded.meta_info = dict(rows.meta_info)
        padded.meta_info["temperature"] = rollout.temperature
        padded.meta_info["global_token_num"] = padded.batch["attention_mask"].sum(-1).tolist()
        k = len(rows)
        # RayPPOTrainer's pass, not ours: these rows must not feed the entropy monitor.
        old, _ = RayPPOTrainer._compute_old_log_prob(self, padded)
        rows.batch["old_log_probs"] = old.batch["old_log_probs"][:k]
        if needs_ref:
            ref = self._compute_ref_log_prob(padded)
            rows.batch["ref_log_prob"] = ref.batch["ref_log_prob"][:k]

    # ---- checkpoint ---------------------------------------------------------------------

    def aepo_state_dict(self) -> dict:
        return {
            "algorithm": self.aepo_cfg.algorithm,
            "uses_controller": self.recipe.extra_rollout,
            "global_step": self.global_steps,
            "controller": self.controller.state_dict(),
            "positive_rates": self.positive_rates.state_dict(),
            "rng_state": self.aepo_rng.get_state().tolist(),
        }

    def load_aepo_state_dict(self, state: dict, *, source: str) -> None:
        try:
            self.controller.load_state_dict(state["controller"])
            self.positive_rates.load_state_dict(state["positive_rates"])
            self.aepo_rng.set_state(torch.tensor(state["rng_state"], dtype=torch.uint8))
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointStateError(f"{source}: corrupt AEPO state ({err!r})") from err

    def _save_checkpoint(self):
        # Before verl's files: verl writes latest_checkpointed_iteration.txt last, so a
        # checkpoint that verl considers complete always has our state too.
        write_state(
            checkpoint_folder(self.config.trainer, self.global_steps), self.aepo_state_dict()
        )
        return super()._save_checkpoint()

    def _load_checkpoint(self):
        result = super()._load_checkpoint()
        if self.global_steps > 0:
            self.restore_aepo_state(
                resumed_checkpoint_folder(self.config.trainer, self.global_steps)
            )
        return result

    def restore_aepo_state(self, folder: str) -> None:
        path = state_path(folder)
        uses_controller = self.recipe.extra_rollout
        try:
            state = read_state(folder)
        except CheckpointStateError:
            if uses_controller:
                raise
            logger.warning(
                "ignoring unreadable %s: algorithm %s needs no controller state",
                path,
                self.aepo_cfg.algorithm,
            )
            return
        if state is None:
            if uses_controller:
                raise CheckpointStateError(
                    f"{path} is missing: resuming algorithm {self.aepo_cfg.algorithm!r} from "
                    f"{folder} would restart the entropy controller from scratch. Restore the "
                    "file from the run that wrote this checkpoint, or resume a checkpoint saved "
                    "by aepo's trainer."
                )
            logger.warning(
                "%s is missing; algorithm %s needs no controller state",
                path,
                self.aepo_cfg.algorithm,
            )
            return
        if state.get("algorithm") != self.aepo_cfg.algorithm:
            logger.warning(
                "%s was written by algorithm %r, resuming as %r",
                path,
                state.get("algorithm"),
                self.aepo_cfg.algorithm,
            )
        if uses_controller or state.get("uses_controller"):
            self.load_aepo_state_dict(state, source=path)
