"""``AEPORayTrainer``: verl 0.9.1's v0 ``RayPPOTrainer`` plus the AEPO regulariser.

fit() is not copied. Read from verl 0.9.1, fit() calls these methods through ``self``,
and each override adds one piece of the algorithm (every decision is the core's
:class:`aepo.core.AEPOStep`; this module only moves ``DataProto`` rows):

- ``init_workers``: the rollout manager is wrapped so fit()'s generate call comes to
  :meth:`AEPORayTrainer.generate_sequences`, which appends this step's extra requests when
  the plan can be made before generation (``entropy_source: previous_step``);
- ``_compute_old_log_prob``: pi_old's token-mean entropy at T = 1 feeds the controller (and
  adaptive entropy control); its token entropies ride along for Entropy-Adv and the 80/20 rule;
- ``_update_actor``: for ``current_batch`` (and step 1) the plan is made and the extra pass
  generated here, after the measurement and before the update; positives are selected, get
  old log-probs at T = 1 and advantage ``alpha * R``, take the place of zero-advantage GRPO
  rows (whose policy gradient is zero, so the batch keeps the size verl's dispatch needs),
  and every row's advantage is weighted for Eq. 1; Entropy-Adv shapes the advantages here, the
  80/20 rule zeroes those of the low-entropy tokens, and adaptive entropy control installs this
  step's coefficient as the actor workers' ``entropy_coeff``;
- ``_save_checkpoint`` / ``_load_checkpoint``: ``aepo_state.json`` beside verl's files.

Which of these steps run is decided by the core's recipe (``aepo/core/recipes.py``).
"""

from __future__ import annotations

import logging
import math
import time

import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.protocol import pad_dataproto_to_divisor
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from aepo.backends.verl._verl_internals import (
    actor_dp_size,
    actor_loss_config,
    actor_loss_with_entropy_coeff,
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
    generate_with_extras,
    tag_default_rows,
)
from aepo.core import (
    AEPOConfig,
    AEPOStep,
    StepPlan,
    entropy_shaped_advantages,
    load_aepo_config,
    masked_mean,
    recipe_for,
    top_entropy_advantages,
)

logger = logging.getLogger(__name__)

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
        self.aepo = AEPOStep(cfg)
        actor = self.config.actor_rollout_ref.actor
        if self.recipe.extra_rollout and cfg.alpha_meaning == "paper" and actor.get("shuffle"):
            raise ValueError(
                "aepo.alpha_meaning=paper weights rows by the mini-batch they fall in; "
                "actor_rollout_ref.actor.shuffle=true reorders them: set it to false"
            )
        self.rollout_manager = None
        """the real AgentLoopManager"""
        self._generation_prompts: DataProto | None = None
        self._plan: StepPlan | None = None
        self._extras: PendingExtras | None = None
        self._extra_worker_calls = 0
        """this step's worker-group and rollout-manager calls that GRPO would not make"""
        self._old_entropy: float | None = None
        """this step's token-mean entropy of pi_old (adaptive_entropy's measurement)"""
        self._actor_loss_config = None
        self._worker_entropy_coeff: float | None = None
        """the entropy_coeff the actor workers' loss holds (adaptive_entropy)"""

    # ---- generation ---------------------------------------------------------------------

    def init_workers(self):
        super().init_workers()
        if self.recipe.extra_rollout:
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

    def _plan_step(self, num_rows: int) -> StepPlan:
        n = self.config.actor_rollout_ref.rollout.n
        return self.aepo.plan(self.global_steps, num_prompts=num_rows // n, samples_per_prompt=n)

    def generate_sequences(self, prompts: DataProto) -> DataProto:
        """fit()'s training generate call (through the proxy): the prompts are kept for a
        second pass, and this step's extra requests ride along when they can be planned
        before generation."""
        self._generation_prompts = prompts
        self._plan, self._extras = None, None
        if not self.aepo.plans_before_generation:
            return self.rollout_manager.generate_sequences(prompts)
        self._plan = self._plan_step(len(prompts))
        if self._plan.num_samples == 0:
            return self.rollout_manager.generate_sequences(prompts)
        default_loop = self.config.actor_rollout_ref.rollout.agent.default_agent_loop
        main_output, self._extras = generate_with_extras(
            self.rollout_manager,
            tag_default_rows(prompts, default_loop),
            build_extra_requests(prompts, self._plan),
            self._rollout_workers,
        )
        return main_output

    def _generate_after_measurement(self, num_rows: int) -> None:
        """The second generation pass (``current_batch``, or step 1 of ``previous_step``).

        fit() has put the rollout replicas to sleep after its generate call; only
        ``update_weights`` wakes them (re-syncing the still unchanged pi_old), and fit()
        expects them asleep again before its own ``update_weights`` after the update.
        """
        self._plan = self._plan_step(num_rows)
        if self._plan.num_samples == 0:
            return
        if self._generation_prompts is None or self.rollout_manager is None:
            raise RuntimeError(
                "AEPO second generation pass: no generation prompts were seen this step "
                "(init_workers() did not wrap the rollout manager?)"
            )
        extra = build_extra_requests(self._generation_prompts, self._plan)
        self.checkpoint_manager.update_weights(self.global_steps)
        self._extra_worker_calls += 3  # wake (update_weights), generate, sleep
        try:
            _, self._extras = generate_with_extras(
                self.rollout_manager, None, extra, self._rollout_workers
            )
        finally:
            self.checkpoint_manager.sleep_replicas()

    # ---- entropy measurement ------------------------------------------------------------

    def _compute_old_log_prob(self, batch: DataProto):
        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        entropys = old_log_prob.batch["entropys"]
        # Token mean over the GRPO batch, whatever loss_agg_mode fit() logs actor/entropy with.
        entropy = float(masked_mean(entropys, batch.batch["response_mask"]))
        self.aepo.observe(entropy)
        self._old_entropy = entropy
        if self.recipe.entropy_adv or self.recipe.top_entropy_quantile is not None:
            old_log_prob.batch[OLD_ENTROPY_KEY] = entropys.clone()
        return old_log_prob, mfu

    # ---- the update ---------------------------------------------------------------------

    def _update_actor(self, batch: DataProto) -> DataProto:
        # Both engines log reward/mean, the mean reward of the T = 1 (GRPO) samples, so that
        # `aepo plot` reads local and verl runs alike; fit() logs it only as critic/score/mean.
        metrics = {
            "reward/mean": float(batch.batch["token_level_scores"].sum(-1).mean()),
            # Every algorithm logs the step's target: the line its entropy is judged against.
            "aepo/target_entropy": self.aepo.follow_target(self.global_steps),
        }
        old_entropy = None
        if OLD_ENTROPY_KEY in batch.batch.keys():  # set only for Entropy-Adv and 80/20
            old_entropy = batch.batch.pop(OLD_ENTROPY_KEY)
        if self.recipe.entropy_adv:
            batch.batch["advantages"] = entropy_shaped_advantages(
                batch.batch["advantages"],
                old_entropy,
                batch.batch["response_mask"],
                beta=self.aepo_cfg.entropy_adv.beta,
                kappa=self.aepo_cfg.entropy_adv.kappa,
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
        if self.aepo.entropy_coef is not None:
            metrics.update(self._begin_adaptive_entropy_step())
        # What AEPO adds to fit()'s step, for scripts/bench_verl_cost.py: calls to worker
        # groups or the rollout manager that GRPO does not make, and their wall time.
        self._extra_worker_calls, started = 0, time.perf_counter()
        if self.recipe.extra_rollout and self._plan is None:
            self._generate_after_measurement(len(batch))
        plan, extras = self._plan, self._extras
        self._plan, self._extras = None, None
        to_update = batch
        if plan is not None:
            # A plan made before this step's measurement (previous_step) sizes its push now.
            plan = self.aepo.settle(plan)
            to_update, merge_metrics = self.merge_extras(batch, plan, extras)
            metrics.update(merge_metrics)
        if self.recipe.extra_rollout:
            metrics["aepo/extra_worker_calls"] = float(self._extra_worker_calls)
            metrics["aepo/extra_passes_s"] = time.perf_counter() - started
        output = super()._update_actor(to_update)
        output.meta_info.setdefault("metrics", {}).update(metrics)
        return output

    def _begin_adaptive_entropy_step(self) -> dict[str, float]:
        """Skywork-OR1's ``alpha_k = c_k * 1[e_k <= target]`` from this step's pi_old entropy,
        installed as the actor workers' ``entropy_coeff`` for this step's update. verl's
        worker keeps its loss's coefficient for the whole update, so the coefficient moves
        once per training step here (``aepo.baselines.adaptive_entropy.update: training_step``)."""
        if self._old_entropy is None:
            raise RuntimeError(
                "adaptive_entropy: no pi_old entropy was measured this step "
                "(algorithm.rollout_correction.bypass_mode skips the old-log-prob pass)"
            )
        adaptive = self.aepo.entropy_coef
        coef = adaptive.begin_step(self._old_entropy)
        self._old_entropy = None
        self.set_actor_entropy_coeff(coef)
        return {**adaptive.metrics(), "aepo/entropy_coef_applied": coef}

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
        the actor update and the step's ``aepo/*`` metrics."""
        # aepo/entropy is the entropy the decision used, as in the local engine; fit() logs
        # this step's measurement as actor/entropy.
        metrics = plan.decision.metrics()
        spent = 0 if extras is None else extras.generated_tokens
        grpo_tokens = max(1, int(batch.batch["response_mask"].sum().item()))
        metrics["aepo/extra_gen_tokens"] = float(spent)
        metrics["aepo/extra_gen_fraction"] = spent / grpo_tokens
        metrics["aepo/extra_samples"] = float(0 if extras is None else len(extras.outputs))
        metrics["aepo/reinforce_samples"] = 0.0
        metrics["aepo/positive_rate"] = 0.0
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
        selection, selection_metrics = self.aepo.select(plan, rewards, group_uids)
        metrics.update(selection_metrics)
        if len(selection) == 0:
            return batch, metrics

        chosen = selection.indices.tolist()
        samples = outputs.select_idxs(selection.indices.numpy())
        rows = build_reinforce_rows(
            batch,
            samples,
            source_uids=[extras.extra.source_uids[i] for i in chosen],
            group_uids=[group_uids[i] for i in chosen],
            advantages=self.aepo.advantages(plan, selection, samples.batch["response_mask"]),
        )
        self._recompute_log_probs(rows)

        dp = actor_dp_size(self)
        mini = self.config.actor_rollout_ref.actor.ppo_mini_batch_size
        mini *= self.config.actor_rollout_ref.rollout.n
        merge = self.aepo.merge_plan(
            sequence_advantage(batch),
            len(rows),
            num_chunks=dp * max(1, len(batch) // mini),
            batch_multiple=math.lcm(dp, mini),
        )
        metrics["aepo/displaced_nonzero"] = float(merge.displaced_nonzero)
        merged = apply_merge(batch, rows, merge)
        self._weight_for_eq1(merged, merge, num_grpo_rows=len(batch), dp=dp, mini_rows=mini)
        return merged, metrics

    def _weight_for_eq1(self, merged: DataProto, merge, *, num_grpo_rows, dp, mini_rows):
        """Scale each row's advantages so every actor update is L_GRPO + alpha * L_REINFORCE
        under verl's loss aggregation (``AEPOStep.row_scale``). verl's engine gives each rank
        a contiguous chunk and cuts it into contiguous mini-batches
        (engine_workers.py train_mini_batch, actor.shuffle false), normalising by the global
        mini-batch's tokens or ``ppo_mini_batch_size * n`` rows (fsdp/transformer_impl.py)."""
        total = len(merged)
        reinforce = torch.zeros(total, dtype=torch.bool)
        reinforce[merge.replace_rows] = True
        reinforce[num_grpo_rows : num_grpo_rows + merge.append_rows] = True
        chunk, per_rank = total // dp, max(1, mini_rows // dp)
        minibatch = (torch.arange(total) % chunk) // per_rank
        actor = self.config.actor_rollout_ref.actor
        mask = merged.batch["response_mask"]
        scale = self.aepo.row_scale(
            mask.sum(-1).cpu(),
            reinforce,
            minibatch,
            mode=actor.get("loss_agg_mode", "token-mean"),
            rows_per_minibatch=mini_rows,
            # verl divides seq-mean-token-sum-norm by loss_scale_factor, else by the padded
            # response length (exact here when the former is set).
            horizon=actor.get("loss_scale_factor") or mask.shape[-1],
        )
        if scale is not None:
            adv = merged.batch["advantages"]
            merged.batch["advantages"] = adv * scale.to(adv).unsqueeze(1)

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
        self._extra_worker_calls += 1
        if needs_ref:
            ref = self._compute_ref_log_prob(padded)
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
