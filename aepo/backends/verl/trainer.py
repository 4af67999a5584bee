"""``AEPORayTrainer``: verl 0.9.1's v0 ``RayPPOTrainer`` plus the AEPO regulariser.

Each step optimises Eq. 1 (``aepo.core.objective.aepo_objective``, realised through verl's
PPO-clip rows) with three calls into the core's :class:`aepo.core.AEPOStep`, one in each of
the fit() methods overridden here (fit() itself is not copied; read from verl 0.9.1, it
calls them through ``self``); this module only moves ``DataProto`` rows:

- ``init_workers``: the rollout manager is wrapped so fit()'s training generate call comes to
  :meth:`AEPORayTrainer.generate_sequences`: ``begin`` (this step's target; the extra
  requests ride along when the plan can be made before generation, ``previous_step``;
  under ``aepo.per_request_seed`` every row of every training call carries its vLLM seed);
- ``_compute_old_log_prob``: ``measured`` with pi_old's token-mean entropy at T = 1 (the
  plan, made now or re-sized, and adaptive entropy control's coefficient); its token
  entropies ride along for Entropy-Adv and the 80/20 rule; DCPO's second pass at T_high/T_low
  runs here through verl's actor (one more ``compute_log_prob`` on the same batch). When the
  extra samples came back scored from fit()'s own generate call (``previous_step`` from step
  2 on), those that can become REINFORCE rows (:class:`RidingRows`) are appended to this
  pass and to ``_compute_ref_log_prob``'s, and split off again before fit() sees the output;
- ``_update_actor``: for ``current_batch`` (and step 1) the extra pass is generated here,
  after the measurement and before the update; ``reinforce`` selects the positives, with
  advantage ``alpha * R``, the zero-advantage GRPO rows they replace (whose policy gradient
  is zero, so the batch keeps the size verl's dispatch needs) and every row's Eq. 1 scale;
  Entropy-Adv and DCPO shape the advantages here, EntroPIC installs its step's alpha in the
  actor workers' loss, the 80/20 rule zeroes those of the low-entropy
  tokens, and adaptive entropy control installs this step's coefficient as the actor
  workers' ``entropy_coeff``;
- ``_save_checkpoint`` / ``_load_checkpoint``: ``aepo_state.json`` beside verl's files.

Which of these steps run is decided by the core's recipe (``aepo/core/recipes.py``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.protocol import pad_dataproto_to_divisor
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from aepo.backends.verl._verl_internals import (
    actor_dp_size,
    actor_loss_config,
    actor_loss_with_entropic_alpha,
    actor_loss_with_entropy_coeff,
    checkpoint_folder,
    ref_dp_size,
    resumed_checkpoint_folder,
)
from aepo.backends.verl.agent_loop import FIT_CALL, SECOND_CALL
from aepo.backends.verl.batch_merge import (
    apply_merge,
    build_reinforce_rows,
    rows_like,
    sequence_advantage,
)
from aepo.backends.verl.checkpoint import (
    RESUMED_PREFIX,
    CheckpointStateError,
    read_state,
    repair_tracker,
    state_path,
    state_summary,
    write_state,
)
from aepo.backends.verl.extra_rollout import (
    PendingExtras,
    RolloutManagerProxy,
    SeedKey,
    build_extra_requests,
    generate_seeded,
    generate_with_extras,
    tag_default_rows,
)
from aepo.core import (
    AEPOConfig,
    AEPOStep,
    ConfigError,
    Measured,
    StepPlan,
    StepStart,
    UpdateLayout,
    dcpo_advantages,
    entropy_shaped_advantages,
    load_aepo_config,
    masked_mean,
    recipe_for,
    reinforce_candidates,
    top_entropy_advantages,
)
from aepo.core.config import verl_owned_keys
from aepo.tensorboard_layout import write_verl_layout

logger = logging.getLogger(__name__)

OLD_LOG_PROB_T_KEY = "aepo_old_log_probs_t"
"""DCPO: pi_old's log-probs of the GRPO samples at the step's T_high/T_low, carried from the
old-log-prob pass to the update"""

OLD_ENTROPY_KEY = "aepo_old_entropy"
"""pi_old's token entropies, carried from the old-log-prob pass to the update (Entropy-Adv,
the 80/20 rule)"""


def _log_prob_divisor(dp: int, section) -> int:
    """Rows a forward-only pass must be a multiple of: verl's nd-dispatch gives each of the
    ``dp`` ranks an equal chunk, and without dynamic batch sizes each rank's chunk must be
    whole micro-batches of ``log_prob_micro_batch_size_per_gpu`` (engine/utils.py:124-128)."""
    if section.get("log_prob_use_dynamic_bsz", False):
        return dp
    return dp * (section.get("log_prob_micro_batch_size_per_gpu") or 1)


@dataclass
class RidingRows:
    """The extra samples that can become this step's REINFORCE rows, known from their rewards
    before the selection (a superset of it: the budget cap is drawn in ``reinforce``), and
    their log-probs from fit()'s own old-log-prob and reference passes."""

    indices: torch.Tensor
    """which extra samples (rows of the extra pass, ascending)"""
    samples: DataProto
    source_uids: list[str]
    group_uids: list[str]
    old_log_probs: torch.Tensor | None = None
    """pi_old's, at ``rollout.temperature`` (fit()'s pass)"""
    ref_log_prob: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.indices.numel())


def aepo_config_from(config) -> AEPOConfig:
    """``aepo:`` validated; a key verl has (clip ratio, entropy coefficient, Clip-Cov / KL-Cov
    constants) is refused there, naming verl's key the run sets instead."""
    if "aepo" not in config:
        raise KeyError("the verl config has no top-level 'aepo:' section (see aepo_trainer.yaml)")
    raw = OmegaConf.to_container(config.aepo, resolve=True)
    shadowed = []
    for key, verl_key in verl_owned_keys().items():
        *sections, name = key.split(".")
        node = raw
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and name in node:
            shadowed.append(f"aepo.{key}: verl has this key, set {verl_key}")
    if shadowed:
        raise ConfigError("invalid AEPO config:\n  " + "\n  ".join(shadowed))
    return load_aepo_config(raw, source="aepo")


class AEPORayTrainer(RayPPOTrainer):
    def __init__(self, *args, aepo_config: AEPOConfig | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.setup_aepo(aepo_config or aepo_config_from(self.config))
        write_verl_layout(self.config)  # before fit()'s TensorBoard logger opens its file

    def setup_aepo(self, cfg: AEPOConfig) -> None:
        """AEPO's own state; separate from ``__init__`` so tests can build the trainer
        without verl's workers and data loaders."""
        self.aepo_cfg = cfg
        self.recipe = recipe_for(cfg)
        self.aepo = AEPOStep(cfg)
        actor = self.config.actor_rollout_ref.actor
        if self.recipe.extra_rollout and cfg.alpha_meaning == "paper" and actor.get("shuffle"):
            raise ValueError(
                "aepo.alpha_meaning=paper weights rows by the mini-batch they fall in; "
                "actor_rollout_ref.actor.shuffle=true reorders them: set it to false"
            )
        self.request_seed_base: int | None = (
            int(self.config.actor_rollout_ref.rollout.seed) if cfg.per_request_seed else None
        )
        """verl's ``rollout.seed`` under ``aepo.per_request_seed``, else None (no seeds)"""
        self.rollout_manager = None
        """the real AgentLoopManager"""
        self._generation_prompts: DataProto | None = None
        self._start: StepStart | None = None
        """this step's ``AEPOStep.begin``, made at its generate call"""
        self._measured: Measured | None = None
        """this step's ``AEPOStep.measured``, made at its old-log-prob pass"""
        self._extras: PendingExtras | None = None
        self._riding: RidingRows | None = None
        """this step's extra samples scored in fit()'s own log-prob passes"""
        self._extra_worker_calls = 0
        """this step's worker-group and rollout-manager calls that GRPO would not make"""
        self._actor_loss_config = None
        self._worker_entropy_coeff: float | None = None
        """the entropy_coeff the actor workers' loss holds (adaptive_entropy)"""

    # ---- generation ---------------------------------------------------------------------

    def init_workers(self):
        super().init_workers()
        # Every algorithm: the training generate call is where a step begins.
        self.async_rollout_manager = self.wrap_rollout_manager(self.async_rollout_manager)

    def wrap_rollout_manager(self, manager) -> RolloutManagerProxy:
        self.rollout_manager = manager
        return RolloutManagerProxy(manager, self.generate_sequences)

    @property
    def _rollout_workers(self) -> int:
        agent = self.config.actor_rollout_ref.rollout.agent
        return (
            len(getattr(self.rollout_manager, "agent_loop_workers", ()) or ()) or agent.num_workers
        )

    def generate_sequences(self, prompts: DataProto) -> DataProto:
        """fit()'s training generate call (through the proxy): the step begins; the prompts
        are kept for a second pass, and this step's extra requests ride along when they can
        be planned before generation."""
        n = self.config.actor_rollout_ref.rollout.n
        self._generation_prompts = prompts
        self._measured, self._extras, self._riding = None, None, None
        self._start = self.aepo.begin(
            self.global_steps, num_prompts=len(prompts) // n, samples_per_prompt=n
        )
        plan = self._start.plan
        default_loop = self.config.actor_rollout_ref.rollout.agent.default_agent_loop
        seed_key = self._seed_key(FIT_CALL)
        if plan is None or plan.num_samples == 0:
            if seed_key is None:
                return self.rollout_manager.generate_sequences(prompts)
            return generate_seeded(self.rollout_manager, prompts, default_loop, seed_key)
        main_output, self._extras = generate_with_extras(
            self.rollout_manager,
            tag_default_rows(prompts, default_loop, seeded=seed_key is not None),
            build_extra_requests(prompts, plan),
            self._rollout_workers,
            seed_key,
        )
        return main_output

    def _seed_key(self, call: int) -> SeedKey | None:
        """The seeds of this step's generate call ``call`` (``aepo.per_request_seed``)."""
        if self.request_seed_base is None:
            return None
        return SeedKey(self.request_seed_base, self.global_steps, call)

    def _generate_after_measurement(self, plan: StepPlan) -> None:
        """The second generation pass (``current_batch``, or step 1 of ``previous_step``).

        fit() has put the rollout replicas to sleep after its generate call; only
        ``update_weights`` wakes them (re-syncing the still unchanged pi_old), and fit()
        expects them asleep again before its own ``update_weights`` after the update.
        """
        if plan.num_samples == 0:
            return
        if self._generation_prompts is None or self.rollout_manager is None:
            raise RuntimeError(
                "AEPO second generation pass: no generation prompts were seen this step "
                "(init_workers() did not wrap the rollout manager?)"
            )
        extra = build_extra_requests(self._generation_prompts, plan)
        self.checkpoint_manager.update_weights(self.global_steps)
        self._extra_worker_calls += 3  # wake (update_weights), generate, sleep
        try:
            _, self._extras = generate_with_extras(
                self.rollout_manager,
                None,
                extra,
                self._rollout_workers,
                self._seed_key(SECOND_CALL),
            )
        finally:
            self.checkpoint_manager.sleep_replicas()

    # ---- entropy measurement ------------------------------------------------------------

    def _compute_old_log_prob(self, batch: DataProto):
        if self._start is None:
            raise RuntimeError(
                "AEPO: the old-log-prob pass came before this step's generate call "
                "(init_workers() did not wrap the rollout manager?)"
            )
        self._riding = self._riding_rows()
        if self._riding is None:
            old_log_prob, mfu = super()._compute_old_log_prob(batch)
        else:
            combined = self._with_riding_rows(batch, self._riding, self._actor_pass_divisor())
            output, mfu = super()._compute_old_log_prob(combined)
            old_log_prob, self._riding.old_log_probs = self._split_riding_rows(
                output, len(batch), self._riding, "old_log_probs"
            )
        entropys = old_log_prob.batch["entropys"]
        # Token mean over the GRPO batch, whatever loss_agg_mode fit() logs actor/entropy with.
        entropy = float(masked_mean(entropys, batch.batch["response_mask"]))
        # the rewards are in the batch by now (the agent loop's, or the colocated model's)
        has_scores = "rm_scores" in batch.batch.keys()
        rewards = batch.batch["rm_scores"].sum(dim=-1) if has_scores else None
        self._measured = self.aepo.measured(self._start, entropy, rewards)
        if self.recipe.entropy_adv or self.recipe.top_entropy_quantile is not None:
            old_log_prob.batch[OLD_ENTROPY_KEY] = entropys.clone()
        if self._measured.dcpo is not None:
            old_log_prob.batch[OLD_LOG_PROB_T_KEY] = self._log_probs_at(
                batch, self._measured.dcpo.temperature
            )
        return old_log_prob, mfu

    def _compute_ref_log_prob(self, batch: DataProto) -> DataProto:
        riding = self._riding
        if riding is None or riding.old_log_probs is None or riding.ref_log_prob is not None:
            return super()._compute_ref_log_prob(batch)
        combined = self._with_riding_rows(batch, riding, self._ref_pass_divisor())
        output = super()._compute_ref_log_prob(combined)
        ref_log_prob, riding.ref_log_prob = self._split_riding_rows(
            output, len(batch), riding, "ref_log_prob"
        )
        return ref_log_prob

    def _riding_rows(self) -> RidingRows | None:
        """The extra samples that can become REINFORCE rows, when they were generated and
        scored in fit()'s own generate call; None otherwise (step 1 and ``current_batch``
        generate them after the measurement, a colocated reward model scores them in the
        update): their log-probs then come from :meth:`_recompute_log_probs`."""
        extras = self._extras
        if not self.recipe.extra_rollout or extras is None or len(extras.outputs) == 0:
            return None
        outputs = extras.outputs
        if "rm_scores" not in outputs.batch.keys():
            return None
        candidates = reinforce_candidates(
            self.aepo_cfg, outputs.batch["rm_scores"].sum(dim=-1), extras.extra.group_uids
        )
        if candidates.numel() == 0:
            return None
        chosen = candidates.tolist()
        return RidingRows(
            indices=candidates,
            samples=outputs.select_idxs(candidates.numpy()),
            source_uids=[extras.extra.source_uids[i] for i in chosen],
            group_uids=[extras.extra.group_uids[i] for i in chosen],
        )

    @staticmethod
    def _with_riding_rows(batch: DataProto, riding: RidingRows, divisor: int) -> DataProto:
        """fit()'s batch with the riding rows appended, padded to ``divisor`` rows, and
        ``global_token_num`` of the whole (dynamic micro-batches are cut from it)."""
        rows = rows_like(
            batch, riding.samples, source_uids=riding.source_uids, group_uids=riding.group_uids
        )
        rows.meta_info = {}
        combined = DataProto.concat([batch, rows])
        combined, _ = pad_dataproto_to_divisor(combined, divisor)
        combined.meta_info = dict(batch.meta_info)
        combined.meta_info["global_token_num"] = combined.batch["attention_mask"].sum(-1).tolist()
        return combined

    @staticmethod
    def _split_riding_rows(output: DataProto, num_rows: int, riding: RidingRows, key: str):
        """(fit()'s rows of a combined pass, the riding rows' ``key``); padding dropped."""
        return output.slice(0, num_rows), output.batch[key][num_rows : num_rows + len(riding)]

    def _log_probs_at(self, batch: DataProto, temperature: float) -> torch.Tensor:
        """DCPO's second old-log-prob pass: verl's actor scores the same rows once more with
        ``meta_info["temperature"]`` set to ``temperature`` (its engine divides the logits by
        it); no generation."""
        at_t = DataProto(
            batch=batch.batch,
            non_tensor_batch=batch.non_tensor_batch,
            meta_info={**batch.meta_info, "temperature": temperature},
        )
        # RayPPOTrainer's pass, not ours: these log-probs must not feed the entropy monitor.
        output, _ = RayPPOTrainer._compute_old_log_prob(self, at_t)
        return output.batch["old_log_probs"]

    # ---- the update ---------------------------------------------------------------------

    def _update_actor(self, batch: DataProto) -> DataProto:
        start, measured, extras = self._start, self._measured, self._extras
        self._start, self._measured, self._extras = None, None, None
        if measured is None:
            raise RuntimeError(
                "AEPO: no pi_old entropy was measured this step "
                "(algorithm.rollout_correction.bypass_mode skips the old-log-prob pass)"
            )
        # Both engines log reward/mean, the mean reward of the T = 1 (GRPO) samples, so that
        # `aepo plot` reads local and verl runs alike; fit() logs it only as critic/score/mean.
        metrics = {"reward/mean": float(batch.batch["token_level_scores"].sum(-1).mean())}
        # Every algorithm logs the step's target (the line its entropy is judged against),
        # those with an extra pass the decision too.
        metrics.update(measured.metrics)
        old_entropy = None
        if OLD_ENTROPY_KEY in batch.batch.keys():  # set only for Entropy-Adv and 80/20
            old_entropy = batch.batch.pop(OLD_ENTROPY_KEY)
        if self.recipe.entropy_adv:
            entropy_adv = self.aepo_cfg.baselines.entropy_adv
            batch.batch["advantages"] = entropy_shaped_advantages(
                batch.batch["advantages"],
                old_entropy,
                batch.batch["response_mask"],
                beta=entropy_adv.beta,
                kappa=entropy_adv.kappa,
            )
        if self.recipe.top_entropy_quantile is not None:
            # One threshold over the whole step's batch (the paper's tau_rho^B), from pi_old.
            batch.batch["advantages"], top_metrics = top_entropy_advantages(
                batch.batch["advantages"],
                old_entropy,
                batch.batch["response_mask"],
                self.recipe.top_entropy_quantile,
            )
            metrics.update(top_metrics)
        if OLD_LOG_PROB_T_KEY in batch.batch.keys():  # set only for DCPO
            old_log_prob_t = batch.batch.pop(OLD_LOG_PROB_T_KEY)
            batch.batch["advantages"], dcpo_metrics = dcpo_advantages(
                self.aepo_cfg.baselines.dcpo,
                measured.dcpo,
                batch.batch["advantages"],
                batch.batch["old_log_probs"],
                old_log_prob_t,
                batch.batch["token_level_scores"].sum(-1),
                batch.batch["response_mask"],
            )
            metrics.update(dcpo_metrics)
        if self.aepo.adaptive_entropy is not None:
            # Skywork-OR1's alpha_k = c_k * 1[e_k <= target], installed as the actor workers'
            # entropy_coeff for this update. verl's worker keeps its loss's coefficient for
            # the whole update, so it moves once per training step (update: training_step).
            self.set_actor_entropy_coeff(measured.entropy_bonus)
            metrics.update(self.aepo.adaptive_entropy.metrics())
            metrics["aepo/entropy_coef_applied"] = measured.entropy_bonus
        if self.aepo.entropic is not None:
            # EntroPIC's alpha of this step (update: training_step), in the workers' loss
            if self._actor_loss_config is None:
                self._actor_loss_config = actor_loss_config(self.config)
            self.actor_rollout_wg.set_loss_fn(
                actor_loss_with_entropic_alpha(
                    self._actor_loss_config,
                    measured.entropic_alpha,
                    self.aepo_cfg.baselines.entropic.high_prob_threshold,
                )
            )
            metrics.update(self.aepo.entropic.metrics())
        plan = measured.plan
        # What AEPO adds to fit()'s step, for scripts/bench_verl_cost.py: calls to worker
        # groups or the rollout manager that GRPO does not make, and their wall time.
        self._extra_worker_calls, started = 0, time.perf_counter()
        to_update = batch
        if plan is not None:
            if start is None or start.plan is None:  # planned after the measurement
                self._generate_after_measurement(plan)
                extras, self._extras = self._extras, None
            to_update, merge_metrics = self.merge_extras(batch, plan, extras)
            metrics.update(merge_metrics)
        if self.recipe.extra_rollout:
            metrics["aepo/extra_worker_calls"] = float(self._extra_worker_calls)
            metrics["aepo/extra_passes_s"] = time.perf_counter() - started
        output = super()._update_actor(to_update)
        output.meta_info.setdefault("metrics", {}).update(metrics)
        return output

    def set_actor_entropy_coeff(self, coef: float) -> None:
        if coef == self._worker_entropy_coeff:
            return
        if self._actor_loss_config is None:
            self._actor_loss_config = actor_loss_config(self.config)
        self.actor_rollout_wg.set_loss_fn(
            actor_loss_with_entropy_coeff(self._actor_loss_config, coef)
        )
        self._worker_entropy_coeff = coef

    def merge_extras(self, batch: DataProto, plan: StepPlan, extras: PendingExtras | None):
        """Select positives among the extra samples and merge them; returns the batch for
        the actor update and the step's ``aepo/*`` metrics beyond the decision's."""
        spent = 0 if extras is None else extras.generated_tokens
        riding, self._riding = self._riding, None
        grpo_tokens = max(1, int(batch.batch["response_mask"].sum().item()))
        metrics = {
            "aepo/extra_gen_tokens": float(spent),
            "aepo/extra_gen_fraction": spent / grpo_tokens,
            "aepo/extra_samples": float(0 if extras is None else len(extras.outputs)),
            "aepo/reinforce_samples": 0.0,
            "aepo/positive_rate": 0.0,
            # candidates scored in fit()'s passes; those the selection leaves out are cost
            "aepo/riding_rows": float(0 if riding is None else len(riding)),
            "aepo/riding_unused_rows": 0.0,
        }
        if extras is None or len(extras.outputs) == 0:
            return batch, metrics
        outputs = extras.outputs
        if "rollout_log_probs" in outputs.batch.keys():
            # vLLM's own log-probs of what it sampled: shows the temperature it sampled at
            # (compare actor/entropy, the mean surprise of the T = 1 samples).
            metrics["aepo/extra_rollout_nll"] = -float(
                masked_mean(outputs.batch["rollout_log_probs"], outputs.batch["response_mask"])
            )
        if "rm_scores" not in outputs.batch.keys():
            # A colocated reward model scores after generation, not inside the agent loop
            # (RayPPOTrainer._compute_reward_colocate), so the extra rows need the same pass.
            outputs = outputs.union(self._compute_reward_colocate(outputs))
            self._extra_worker_calls += 1
        rewards = outputs.batch["rm_scores"].sum(dim=-1)
        group_uids = extras.extra.group_uids
        response_mask = batch.batch["response_mask"]
        reinforcement = self.aepo.reinforce(
            plan,
            rewards,
            group_uids,
            outputs.batch["response_mask"],
            grpo_advantage=sequence_advantage(batch),
            grpo_lengths=response_mask.sum(-1).cpu(),
            layout=self._update_layout(len(batch), response_mask.shape[-1]),
        )
        metrics.update(reinforcement.metrics)
        if riding is not None:
            metrics["aepo/riding_unused_rows"] = float(len(riding) - len(reinforcement))
        if len(reinforcement) == 0:
            return batch, metrics

        chosen = reinforcement.indices.tolist()
        samples = outputs.select_idxs(reinforcement.indices.numpy())
        rows = build_reinforce_rows(
            batch,
            samples,
            source_uids=[extras.extra.source_uids[i] for i in chosen],
            group_uids=[group_uids[i] for i in chosen],
            advantages=reinforcement.advantages,
        )
        if not self._take_riding_log_probs(rows, riding, reinforcement.indices):
            self._recompute_log_probs(rows)
        merged = apply_merge(batch, rows, reinforcement.merge)
        # The rows each data-parallel rank trains on: verl's nd-dispatch hands rank r the r-th
        # of dp equal contiguous chunks (the layout _update_layout describes).
        reinforce = reinforcement.merge.reinforce_rows(len(batch))
        for rank, chunk in enumerate(reinforce.chunk(actor_dp_size(self))):
            metrics[f"aepo/reinforce_rows_dp{rank}"] = float(chunk.sum())
        if reinforcement.row_scale is not None:
            adv = merged.batch["advantages"]
            merged.batch["advantages"] = adv * reinforcement.row_scale.to(adv).unsqueeze(1)
        return merged, metrics

    def _update_layout(self, num_rows: int, response_length: int) -> UpdateLayout:
        """verl's update, as the merge and the Eq. 1 weighting must see it: verl's engine
        gives each rank a contiguous chunk and cuts it into contiguous mini-batches
        (engine_workers.py train_mini_batch, actor.shuffle false), normalising by the global
        mini-batch's tokens or ``ppo_mini_batch_size * n`` rows (fsdp/transformer_impl.py)."""
        dp = actor_dp_size(self)
        actor = self.config.actor_rollout_ref.actor
        mini = actor.ppo_mini_batch_size * self.config.actor_rollout_ref.rollout.n
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

    @staticmethod
    def _take_riding_log_probs(
        rows: DataProto, riding: RidingRows | None, chosen: torch.Tensor
    ) -> bool:
        """The REINFORCE rows' old (and reference) log-probs from fit()'s own passes; False
        when they did not ride there (then they need passes of their own)."""
        if riding is None or riding.old_log_probs is None:
            return False
        needs_ref = "ref_log_prob" in rows.batch.keys()
        if needs_ref and riding.ref_log_prob is None:
            return False
        position = {int(i): j for j, i in enumerate(riding.indices.tolist())}
        missing = [int(i) for i in chosen.tolist() if int(i) not in position]
        if missing:
            raise RuntimeError(
                f"AEPO: REINFORCE rows {missing[:3]} were not among the extra samples whose "
                "log-probs rode in fit()'s passes (reinforce_candidates and the selection "
                "disagree)"
            )
        where = torch.tensor([position[int(i)] for i in chosen.tolist()], dtype=torch.long)
        rows.batch["old_log_probs"] = riding.old_log_probs[where].to(
            rows.batch["old_log_probs"].dtype
        )
        if needs_ref:
            rows.batch["ref_log_prob"] = riding.ref_log_prob[where].to(
                rows.batch["ref_log_prob"].dtype
            )
        return True

    def _actor_pass_divisor(self) -> int:
        return _log_prob_divisor(actor_dp_size(self), self.config.actor_rollout_ref.rollout)

    def _ref_pass_divisor(self) -> int:
        """The reference pass's divisor: the ref worker has its own micro-batch size
        (engine_workers.py:545-584); a reference inside the actor uses the actor's."""
        if getattr(self, "ref_in_actor", False):
            return self._actor_pass_divisor()
        return _log_prob_divisor(ref_dp_size(self), self.config.actor_rollout_ref.ref)

    def _recompute_log_probs(self, rows: DataProto) -> None:
        """Old (and reference) log-probs of the AEPO rows at ``rollout.temperature`` (1.0),
        the same pass the GRPO rows got; the rollout's own log-probs are at T_high/T_low."""
        rollout = self.config.actor_rollout_ref.rollout
        needs_ref = "ref_log_prob" in rows.batch.keys()
        divisor = self._actor_pass_divisor()
        if needs_ref:
            divisor = math.lcm(divisor, self._ref_pass_divisor())
        padded, _ = pad_dataproto_to_divisor(rows, divisor)
        padded.meta_info = dict(rows.meta_info)
        padded.meta_info["temperature"] = rollout.temperature
        padded.meta_info["global_token_num"] = padded.batch["attention_mask"].sum(-1).tolist()
        k = len(rows)
        # RayPPOTrainer's pass, not ours: these rows must not feed the entropy monitor.
        old, _ = RayPPOTrainer._compute_old_log_prob(self, padded)
        rows.batch["old_log_probs"] = old.batch["old_log_probs"][:k]
        self._extra_worker_calls += 1
        if needs_ref:
            ref = RayPPOTrainer._compute_ref_log_prob(self, padded)
            self._extra_worker_calls += 1
            rows.batch["ref_log_prob"] = ref.batch["ref_log_prob"][:k]

    # ---- checkpoint ---------------------------------------------------------------------

    def aepo_state_dict(self) -> dict:
        return {
            "algorithm": self.aepo_cfg.algorithm,
            # compared with the resuming config before Ray starts (checkpoint.resume_problems)
            "run_config": {"aepo": self.aepo_cfg.model_dump(mode="json")},
            "uses_controller": self.recipe.has_state,
            "global_step": self.global_steps,
            **self.aepo.state_dict(),
        }

    def load_aepo_state_dict(self, state: dict, *, source: str) -> None:
        try:
            self.aepo.load_state_dict(state)
        except ValueError as err:
            raise CheckpointStateError(f"{source}: corrupt AEPO state ({err})") from err

    def _save_checkpoint(self):
        # Before verl's files: verl writes latest_checkpointed_iteration.txt last, so a
        # checkpoint that verl considers complete always has our state too.
        write_state(
            checkpoint_folder(self.config.trainer, self.global_steps), self.aepo_state_dict()
        )
        return super()._save_checkpoint()

    def _load_checkpoint(self):
        if self.config.trainer.resume_mode == "auto":
            repair_tracker(self.config.trainer.default_local_dir)
        result = super()._load_checkpoint()
        if self.global_steps > 0:
            self.restore_aepo_state(
                resumed_checkpoint_folder(self.config.trainer, self.global_steps)
            )
        return result

    def restore_aepo_state(self, folder: str) -> None:
        path = state_path(folder)
        uses_controller = self.recipe.has_state
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
        if state.get("algorithm", self.aepo_cfg.algorithm) != self.aepo_cfg.algorithm:
            # start-up refuses this before Ray starts; a trainer built some other way must too
            raise CheckpointStateError(
                f"{path} was written by aepo.algorithm={state['algorithm']!r}, the config says "
                f"{self.aepo_cfg.algorithm!r}: a run cannot change aepo.algorithm"
            )
        if uses_controller or state.get("uses_controller"):
            self.load_aepo_state_dict(state, source=path)
            # One line in the driver's log: what the run carries on with (tests compare it
            # with the file; a user sees the controller resumed, not restarted).
            summary = json.dumps(state_summary(self.aepo.state_dict()), sort_keys=True)
            print(f"{RESUMED_PREFIX} {path} {summary}", flush=True)
