"""``AEPORayTrainer``: verl 0.9.1's v0 ``RayPPOTrainer`` plus the AEPO regulariser.

Each step optimises Eq. 1 (``aepo.core.objective.aepo_objective``, realised through verl's
PPO-clip rows) with three calls into the core's :class:`aepo.core.AEPOStep`, one in each of
the fit() hooks overridden here (fit() itself is not copied; read from verl 0.9.1, it calls
them through ``self``). What one step's hooks hand each other is a :class:`StepState`, made
at the step's generate call and dropped when the update goes to verl; this module only
moves ``DataProto`` rows:

- ``init_workers``: the rollout manager is wrapped so fit()'s training generate call comes to
  :meth:`AEPORayTrainer.generate_sequences`: ``begin`` (this step's target; the extra
  requests ride along when the plan can be made before generation, ``previous_step``;
  with per-request seeds every row of every training call carries its vLLM seed);
- ``_compute_old_log_prob``: ``measured`` with pi_old's token-mean entropy at T = 1 (the
  plan, made now or re-sized, and adaptive entropy control's coefficient); its token
  entropies ride along for Entropy-Adv and the 80/20 rule; DCPO's second pass at T_high/T_low
  runs here through verl's actor (:mod:`aepo.backends.verl.log_prob_passes`);
- ``_update_actor``: for ``current_batch`` (and step 1) the extra pass is generated here,
  after the measurement; ``reinforce`` selects the positives, with advantage ``alpha * R``,
  the zero-advantage GRPO rows they replace (whose policy gradient is zero, so the batch
  keeps the size verl's dispatch needs) and every row's Eq. 1 scale; the REINFORCE rows get
  their old and reference log-probs in passes of their own; the baselines shape the
  advantages (``aepo.core.shape_advantages``) or install their coefficient in the actor
  workers' loss (EntroPIC's alpha, adaptive entropy control's ``entropy_coeff``);
- ``_save_checkpoint`` / ``_load_checkpoint``: ``aepo_state.json`` beside verl's files.

``_compute_ref_log_prob`` is verl's. Which of these steps run is decided by the core's
recipe (``aepo/core/recipes.py``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from verl import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from aepo.backends.verl._verl_internals import (
    actor_dp_size,
    actor_loss_config,
    actor_loss_with_entropic_alpha,
    actor_loss_with_entropy_coeff,
    checkpoint_folder,
    resumed_checkpoint_folder,
)
from aepo.backends.verl.agent_loop import FIT_CALL, SECOND_CALL
from aepo.backends.verl.batch_merge import apply_merge, build_reinforce_rows, select_reinforcement
from aepo.backends.verl.checkpoint import (
    RESUMED_PREFIX,
    CheckpointStateError,
    repair_tracker,
    state_path,
    state_summary,
    state_to_resume,
    write_state,
)
from aepo.backends.verl.extra_rollout import (
    PendingExtras,
    RolloutManagerProxy,
    SeedKey,
    build_extra_requests,
    extra_pass_metrics,
    generate_seeded,
    generate_with_extras,
    reinforce_rows_per_rank,
    tag_default_rows,
)
from aepo.backends.verl.log_prob_passes import add_reinforce_log_probs, log_probs_at
from aepo.backends.verl.revival import RevivalBonus
from aepo.backends.verl.run_config import aepo_config_from, per_request_seed
from aepo.core import (
    AEPOConfig,
    AEPOStep,
    Measured,
    Reinforcement,
    StepPlan,
    StepStart,
    masked_mean,
    recipe_for,
    shape_advantages,
)
from aepo.tensorboard_layout import write_verl_layout

OLD_LOG_PROB_T_KEY = "aepo_old_log_probs_t"
"""DCPO: pi_old's log-probs of the GRPO samples at the step's T_high/T_low, carried from the
old-log-prob pass to the update"""

OLD_ENTROPY_KEY = "aepo_old_entropy"
"""pi_old's token entropies, carried from the old-log-prob pass to the update (Entropy-Adv,
the 80/20 rule)"""


@dataclass
class StepState:
    """What one step's hooks hand each other: made at the step's generate call, dropped when
    its update goes to verl."""

    prompts: DataProto
    """fit()'s generation batch (a second pass resamples some of its prompts)"""
    start: StepStart
    """``AEPOStep.begin``'s, made at the generate call"""
    measured: Measured | None = None
    """``AEPOStep.measured``'s, made at the old-log-prob pass"""
    extras: PendingExtras | None = None
    """the extra samples, once generated"""
    extra_worker_calls: int = 0
    """worker-group and rollout-manager calls GRPO would not make"""

    def measurement(self) -> Measured:
        """The step's measurement, for the actor update; none means verl skipped the pass
        that makes it."""
        if self.measured is None:
            raise RuntimeError(
                "AEPO: no pi_old entropy was measured this step "
                "(algorithm.rollout_correction.bypass_mode skips the old-log-prob pass)"
            )
        return self.measured


class AEPOCheckpointing:
    """The controller state beside verl's checkpoint files: ``aepo_state.json`` in each
    ``global_step_N`` folder, written before verl's own files and restored after them. Shared
    by the legacy trainer and the V1 one (:mod:`aepo.backends.verl.trainer_v1`), whose
    ``_save_checkpoint`` / ``_load_checkpoint`` write and read the same folder layout. Needs
    ``aepo_cfg``, ``recipe``, ``aepo``, ``config`` and ``global_steps`` on the trainer."""

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
        state = state_to_resume(
            folder, self.aepo_cfg.algorithm, uses_controller=self.recipe.has_state
        )
        if state is None:
            return
        self.load_aepo_state_dict(state, source=path)
        # One line in the driver's log: what the run carries on with (tests compare it
        # with the file; a user sees the controller resumed, not restarted).
        summary = json.dumps(state_summary(self.aepo.state_dict()), sort_keys=True)
        print(f"{RESUMED_PREFIX} {path} {summary}", flush=True)


class AEPORayTrainer(AEPOCheckpointing, RayPPOTrainer):
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
        rollout = self.config.actor_rollout_ref.rollout
        self.request_seed_base: int | None = (
            int(rollout.seed) if per_request_seed(self.config) else None
        )
        """verl's ``rollout.seed`` when requests carry their own seeds, else None"""
        self.rollout_manager = None
        """the real AgentLoopManager"""
        self._step: StepState | None = None
        """the step under way (None between steps)"""
        self._actor_loss_config = None
        self._worker_entropy_coeff: float | None = None
        """the entropy_coeff the actor workers' loss holds (adaptive_entropy, the guard's
        revival bonus; None: the loss the workers were built with)"""
        self.revival = RevivalBonus(self.config)

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
        """fit()'s training generate call (through the proxy): the step begins; this step's
        extra requests ride along when they can be planned before generation."""
        n = self.config.actor_rollout_ref.rollout.n
        start = self.aepo.begin(
            self.global_steps, num_prompts=len(prompts) // n, samples_per_prompt=n
        )
        step = self._step = StepState(prompts, start)
        default_loop = self.config.actor_rollout_ref.rollout.agent.default_agent_loop
        seed_key = self._seed_key(FIT_CALL)
        if start.plan is None or start.plan.num_samples == 0:
            if seed_key is None:
                return self.rollout_manager.generate_sequences(prompts)
            return generate_seeded(self.rollout_manager, prompts, default_loop, seed_key)
        main_output, step.extras = generate_with_extras(
            self.rollout_manager,
            tag_default_rows(prompts, default_loop, seeded=seed_key is not None),
            build_extra_requests(prompts, start.plan),
            self._rollout_workers,
            seed_key,
        )
        return main_output

    def _seed_key(self, call: int) -> SeedKey | None:
        """The seeds of this step's generate call ``call`` (per-request seeds)."""
        if self.request_seed_base is None:
            return None
        return SeedKey(self.request_seed_base, self.global_steps, call)

    def _generate_after_measurement(self, step: StepState, plan: StepPlan) -> None:
        """The second generation pass (``current_batch``, or step 1 of ``previous_step``).

        fit() has put the rollout replicas to sleep after its generate call; only
        ``update_weights`` wakes them (re-syncing the still unchanged pi_old), and fit()
        expects them asleep again before its own ``update_weights`` after the update.
        """
        if plan.num_samples == 0:
            return
        extra = build_extra_requests(step.prompts, plan)
        self.checkpoint_manager.update_weights(self.global_steps)
        step.extra_worker_calls += 3  # wake (update_weights), generate, sleep
        try:
            _, step.extras = generate_with_extras(
                self.rollout_manager,
                None,
                extra,
                self._rollout_workers,
                self._seed_key(SECOND_CALL),
            )
        finally:
            self.checkpoint_manager.sleep_replicas()

    def _current_step(self, hook: str) -> StepState:
        if self._step is None:
            raise RuntimeError(
                f"AEPO: {hook} came before this step's generate call "
                "(init_workers() did not wrap the rollout manager?)"
            )
        return self._step

    # ---- entropy measurement ------------------------------------------------------------

    def _compute_old_log_prob(self, batch: DataProto):
        step = self._current_step("the old-log-prob pass")
        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        entropys = old_log_prob.batch["entropys"]
        # Token mean over the GRPO batch, whatever loss_agg_mode fit() logs actor/entropy with.
        entropy = float(masked_mean(entropys, batch.batch["response_mask"]))
        # the rewards are in the batch by now (the agent loop's, or the colocated model's)
        has_scores = "rm_scores" in batch.batch.keys()
        rewards = batch.batch["rm_scores"].sum(dim=-1) if has_scores else None
        step.measured = self.aepo.measured(step.start, entropy, rewards)
        if self.recipe.entropy_adv or self.recipe.top_entropy_quantile is not None:
            old_log_prob.batch[OLD_ENTROPY_KEY] = entropys.clone()
        if step.measured.dcpo is not None:
            old_log_prob.batch[OLD_LOG_PROB_T_KEY] = log_probs_at(
                self, batch, step.measured.dcpo.temperature
            )
        return old_log_prob, mfu

    # ---- the update ---------------------------------------------------------------------

    def _update_actor(self, batch: DataProto) -> DataProto:
        step, self._step = self._current_step("the actor update"), None
        measured = step.measurement()
        # Both engines log reward/mean, the mean reward of the T = 1 (GRPO) samples, so that
        # `aepo plot` reads local and verl runs alike; fit() logs it only as critic/score/mean.
        metrics = {"reward/mean": float(batch.batch["token_level_scores"].sum(-1).mean())}
        # Every algorithm logs the step's target (the line its entropy is judged against),
        # those with an extra pass the decision too.
        metrics.update(measured.metrics)
        metrics.update(self._shape_advantages(batch, measured))
        metrics.update(self._install_worker_loss(measured))
        to_update = batch
        if measured.plan is not None:
            to_update, merge_metrics = self._with_reinforce_rows(batch, step, measured.plan)
            metrics.update(merge_metrics)
        output = super()._update_actor(to_update)
        output.meta_info.setdefault("metrics", {}).update(metrics)
        return output

    def _shape_advantages(self, batch: DataProto, measured: Measured) -> dict[str, float]:
        """Entropy-Adv, the 80/20 rule, DCPO and Entrocraft edit the GRPO advantages in place."""
        tensors = batch.batch
        old_entropy = tensors.pop(OLD_ENTROPY_KEY) if OLD_ENTROPY_KEY in tensors.keys() else None
        old_log_prob_t = None
        if OLD_LOG_PROB_T_KEY in tensors.keys():
            old_log_prob_t = tensors.pop(OLD_LOG_PROB_T_KEY)
        tensors["advantages"], metrics = shape_advantages(
            self.aepo_cfg,
            tensors["advantages"],
            tensors["response_mask"],
            old_entropy=old_entropy,
            dcpo=measured.dcpo,
            entrocraft=measured.entrocraft,
            old_log_prob=tensors["old_log_probs"],
            old_log_prob_t=old_log_prob_t,
            scores=tensors["token_level_scores"].sum(-1),
        )
        return metrics

    def _install_worker_loss(self, measured: Measured) -> dict[str, float]:
        """Adaptive entropy control's coefficient and EntroPIC's alpha of this step go into
        the actor workers' loss: verl's worker keeps its loss for the whole update, so they
        move once per training step (``update: training_step``)."""
        metrics: dict[str, float] = {}
        if self.aepo.adaptive_entropy is not None:
            # Skywork-OR1's alpha_k = c_k * 1[e_k <= target], as the workers' entropy_coeff
            self.set_actor_entropy_coeff(measured.entropy_bonus)
            metrics.update(self.aepo.adaptive_entropy.metrics())
            metrics["aepo/entropy_coef_applied"] = measured.entropy_bonus
        if self.recipe.extra_rollout:  # the guard's revival bonus (aepo/revival_coef)
            coef, revival = self.revival.entropy_coeff(
                measured.entropy_bonus or 0.0, self._worker_entropy_coeff
            )
            if coef is not None:
                self.set_actor_entropy_coeff(coef)
            metrics.update(revival)
        if self.aepo.entropic is not None:
            threshold = self.aepo_cfg.baselines.entropic.high_prob_threshold
            self.actor_rollout_wg.set_loss_fn(
                actor_loss_with_entropic_alpha(
                    self._loss_config(), measured.entropic_alpha, threshold
                )
            )
            metrics.update(self.aepo.entropic.metrics())
        return metrics

    def _loss_config(self):
        if self._actor_loss_config is None:
            self._actor_loss_config = actor_loss_config(self.config)
        return self._actor_loss_config

    def set_actor_entropy_coeff(self, coef: float) -> None:
        if coef == self._worker_entropy_coeff:
            return
        self.actor_rollout_wg.set_loss_fn(actor_loss_with_entropy_coeff(self._loss_config(), coef))
        self._worker_entropy_coeff = coef

    def _with_reinforce_rows(self, batch: DataProto, step: StepState, plan: StepPlan):
        """fit()'s batch with this step's REINFORCE rows merged (generating the extra pass
        first when it was planned after the measurement), and the ``aepo/*`` metrics."""
        # What AEPO adds to fit()'s step, for scripts/bench_verl_cost.py: calls to worker
        # groups or the rollout manager that GRPO does not make, and their wall time.
        started = time.perf_counter()
        if step.start.plan is None:  # planned after the measurement
            self._generate_after_measurement(step, plan)
        merged, metrics = self.merge_extras(batch, plan, step)
        if self.recipe.extra_rollout:
            metrics["aepo/extra_worker_calls"] = float(step.extra_worker_calls)
            metrics["aepo/extra_passes_s"] = time.perf_counter() - started
        return merged, metrics

    def merge_extras(self, batch: DataProto, plan: StepPlan, step: StepState):
        """Select positives among the step's extra samples and merge them; returns the batch
        for the actor update and the step's ``aepo/*`` metrics beyond the decision's."""
        extras, dp = step.extras, actor_dp_size(self)
        metrics = {**extra_pass_metrics(batch, extras), **reinforce_rows_per_rank(None, dp)}
        if extras is None or len(extras.outputs) == 0:
            return batch, metrics
        outputs = extras.outputs
        if "rm_scores" not in outputs.batch.keys():
            # A colocated reward model scores after generation, not inside the agent loop
            # (RayPPOTrainer._compute_reward_colocate), so the extra rows need the same pass.
            outputs = outputs.union(self._compute_reward_colocate(outputs))
            step.extra_worker_calls += 1
        reinforcement = select_reinforcement(
            self, plan, batch, outputs, extras.extra.group_uids, rows=len(batch)
        )
        metrics.update(reinforcement.metrics)
        if len(reinforcement) == 0:
            return batch, metrics
        merged = self._merged(batch, outputs, extras, reinforcement, step)
        metrics.update(reinforce_rows_per_rank(reinforcement.merge.reinforce_rows(len(batch)), dp))
        return merged, metrics

    def _merged(
        self,
        batch: DataProto,
        outputs: DataProto,
        extras: PendingExtras,
        reinforcement: Reinforcement,
        step: StepState,
    ) -> DataProto:
        """The chosen extra samples as REINFORCE rows with their own log-prob passes,
        placed in fit()'s batch with every row's Eq. 1 scale."""
        chosen = reinforcement.indices.tolist()
        rows = build_reinforce_rows(
            batch,
            outputs.select_idxs(reinforcement.indices.numpy()),
            source_uids=[extras.extra.source_uids[i] for i in chosen],
            group_uids=[extras.extra.group_uids[i] for i in chosen],
            advantages=reinforcement.advantages,
        )
        step.extra_worker_calls += add_reinforce_log_probs(self, rows)
        merged = apply_merge(batch, rows, reinforcement.merge)
        merged.batch["advantages"] = reinforcement.scaled(merged.batch["advantages"])
        return merged
