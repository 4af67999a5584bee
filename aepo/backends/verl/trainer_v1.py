"""AEPO's V1 trainers: verl 0.9.1's ``PPOTrainerSync`` and ``PPOTrainerColocateAsync`` plus
the AEPO regulariser.

verl's V1 trainer keeps a step's rows in TransferQueue (TQ) and hands its passes
``KVBatchMeta`` key lists; generation does not return a batch but fills TQ, and a replay
buffer waits for ``train_batch_size`` finished prompt groups. The hooks overridden here play
the parts the legacy trainer's do (:mod:`aepo.backends.verl.trainer`), on the same pieces
(:class:`StepState`, the core's :class:`AEPOStep`, the checkpoint state, the merge plan):

- ``prepare_step``: the step begins; this step's GRPO prompts and, when the plan can be made
  before generation (``previous_step``), its extra requests go out in one submission. Only
  the GRPO prompts are registered in TQ as prompt groups, so the replay buffer neither counts
  nor samples the extra groups (it would otherwise take them for GRPO groups, and DAPO-style
  filtering or failure refill would act on them); the extras' outputs still land in TQ's
  ``train`` partition, under keys of their own uids, and this class waits for them itself;
- ``on_sample_end``: before verl puts the replicas to sleep, the extras of this submission
  are collected (they were generated beside the GRPO groups);
- ``_compute_old_log_prob``: verl's pass, then the measurement: pi_old's token-mean entropy
  at T = 1 (in fp32) over the GRPO batch (the only rows in it; verl's balance padding rows
  have an all-zero response mask);
- ``_update_actor``: the extra pass after the measurement when it could not ride along
  (step 1, ``current_batch``); the REINFORCE selection; the chosen samples get their own old
  and reference log-prob passes (verl's, called on their keys) and advantage ``alpha * R``,
  and take the place of zero-advantage rows of the balanced batch (so its size, a multiple
  verl's update needs, is kept); every row's Eq. 1 scale; then verl's update;
- ``_save_checkpoint`` / ``_load_checkpoint``: :class:`AEPOCheckpointing`.

Both trainers share these hooks (:class:`AEPOV1Steps`); they differ in when a step's extras
are generated and trained. :class:`AEPOV1SyncTrainer` (``trainer_mode: sync``) trains them in
the step that submitted them. :class:`AEPOV1ColocateAsyncTrainer` (``colocate_async``, where
verl trains on one step's groups while the next step's are generated) trains the extras of
submission s at step s + 1, with the plan kept by its submission step
(:mod:`aepo.backends.verl.submitted_extras`, docs/verl_v1.md). ``separate_async`` is refused at
start-up (:func:`aepo.backends.verl.startup.v1_problems`).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import replace

import numpy as np
import torch
import transfer_queue as tq
from tensordict import NonTensorData, TensorDict
from transfer_queue import KVBatchMeta
from verl import DataProto
from verl.trainer.ppo.v1.trainer_base import PPOTrainer
from verl.trainer.ppo.v1.trainer_colocate_async import PPOTrainerColocateAsync
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils import tensordict_utils as tu
from verl.workers.utils.padding import response_to_nested

from aepo.backends.verl._verl_internals import (
    actor_dp_size,
    log_prob_pass_divisor,
)
from aepo.backends.verl.agent_loop import (
    AGENT_NAME,
    FIT_CALL,
    SECOND_CALL,
    SEED_FIELD,
    TEMPERATURE_FIELD,
    session_seeds,
)
from aepo.backends.verl.batch_merge import select_reinforcement
from aepo.backends.verl.extra_rollout import (
    ExtraRequests,
    PendingExtras,
    extra_pass_metrics,
    reinforce_rows_per_rank,
)
from aepo.backends.verl.revival import RevivalBonus
from aepo.backends.verl.run_config import aepo_config_from, per_request_seed
from aepo.backends.verl.submitted_extras import (
    SubmittedExtras,
    SubmittedPlans,
    SubmittedPlansCheckpointing,
)
from aepo.backends.verl.trainer import AEPOCheckpointing, StepState
from aepo.core import AEPOConfig, AEPOStep, StepPlan, StepStart, masked_mean, recipe_for

logger = logging.getLogger(__name__)

PARTITION = "train"
"""the TQ partition verl's agent loop writes training samples to (agent_loop_tq.py)"""
ROLLOUT_N_FIELD = "__rollout_n__"
"""per-prompt sample count the V1 agent-loop worker reads (verl's name)"""
EXTRA_UID_PREFIX = "aepo-"
"""the uids of AEPO's extra groups in TransferQueue (verl's own are uuid4s)"""
TERMINAL = ("finished", "failure")
"""a group's statuses once its agent loop is done (verl's replay buffer)"""
_POLL_S = 0.2


def jagged(values: torch.Tensor) -> torch.Tensor:
    """TransferQueue's per-row field as verl's passes hold it: a jagged nested tensor."""
    if values.is_nested:
        return values
    return torch.nested.as_nested_tensor(list(values), layout=torch.jagged)


class AEPOV1Steps(AEPOCheckpointing):
    """The hooks both V1 trainers share: submission, collection, measurement, merge. A
    trainer says which plan its measurement settles (:meth:`_measurement_start`) and what
    happens when the plan's samples are not there yet (:meth:`_before_merge`)."""

    def __init__(self, config, aepo_config: AEPOConfig | None = None):
        super().__init__(config)
        self.aepo_cfg = aepo_config or aepo_config_from(config)
        self.recipe = recipe_for(self.aepo_cfg)
        self.aepo = AEPOStep(self.aepo_cfg)
        rollout = config.actor_rollout_ref.rollout
        self.request_seed_base: int | None = int(rollout.seed) if per_request_seed(config) else None
        self._step: StepState | None = None
        self.revival = RevivalBonus(config)
        self._other_calls = 0
        """submissions not made by ``prepare_step`` so far (they number their seeds)"""

    # ---- generation ---------------------------------------------------------------------

    def prepare_step(self) -> dict:
        n = self.config.actor_rollout_ref.rollout.n
        prompts = self._next_train_batch()
        start = self.aepo.begin(self.global_steps, num_prompts=len(prompts), samples_per_prompt=n)
        step = self._step = StepState(prompts, start)
        extra = None
        if start.plan is not None and start.plan.num_samples > 0:
            extra = self._extra_requests(prompts, start.plan)
            self._extras_submitted(step, extra)
        self._submit(prompts, extra, FIT_CALL)
        return {}

    def _extras_submitted(self, step: StepState, extra: ExtraRequests) -> None:
        """This step's submission carries ``extra``: remember them for the update that
        trains them."""
        raise NotImplementedError

    def _extra_requests(self, prompts, plan: StepPlan) -> ExtraRequests:
        """The plan's prompts (indices into this step's GRPO prompts), each one request with
        ``samples_per_prompt`` sessions at the plan's temperature, under a fresh uid."""
        uids = [str(u) for u in prompts["uid"]]
        if plan.prompts and max(plan.prompts) >= len(uids):
            raise ValueError(f"plan asks for prompt {max(plan.prompts)}, the batch has {len(uids)}")
        chosen = list(plan.prompts)
        requests = tu.index_select_tensor_dict(prompts, chosen)
        # no "_": verl's TQ keys are "{uid}_{session}_{output}" and it splits on "_"
        group_uids = [f"{EXTRA_UID_PREFIX}{uuid.uuid4()}" for _ in chosen]
        tu.assign_non_tensor_stack(requests, "uid", group_uids)
        m = plan.rollout.samples_per_prompt
        tu.assign_non_tensor_stack(requests, ROLLOUT_N_FIELD, [m] * len(chosen))
        tu.assign_non_tensor_stack(requests, "agent_name", [AGENT_NAME] * len(chosen))
        tu.assign_non_tensor_stack(
            requests, TEMPERATURE_FIELD, [plan.rollout.temperature] * len(chosen)
        )
        source_uids = [uids[i] for i in chosen]
        return ExtraRequests(plan, requests, source_uids, group_uids)

    def _submit_batch_to_rollout(self, batch) -> int:
        # verl's other submissions of training prompts (the async warm-up batch, the replay
        # buffer's refills) get AEPO's fields too, and seeds apart from the step's own call's
        self._other_calls += 1
        self._submit(batch, None, SECOND_CALL + self._other_calls)
        return len(batch)

    def _submit(self, prompts, extra: ExtraRequests | None, call: int) -> None:
        """One ``generate_sequences`` submission: the GRPO prompts (registered in TQ as
        verl does, so the replay buffer waits for them) and the extra requests (registered
        under their own uids without ``is_prompt``: the replay buffer neither counts nor
        samples them). With per-request seeds each session gets the seed the legacy trainer
        gives the same row of its generate call (prompt-major, then the extras)."""
        if extra is None and self.request_seed_base is None:
            PPOTrainer._submit_batch_to_rollout(self, prompts)
            return
        parts, tags = [], []
        if prompts is not None:
            grpo = tu.index_select_tensor_dict(prompts, list(range(len(prompts))))
            size = len(grpo)
            n = self.config.actor_rollout_ref.rollout.n
            tu.assign_non_tensor_stack(grpo, ROLLOUT_N_FIELD, [n] * size)
            loop = AGENT_NAME if self.request_seed_base is not None else None
            loop = loop or self.config.actor_rollout_ref.rollout.agent.default_agent_loop
            tu.assign_non_tensor_stack(grpo, "agent_name", [loop] * size)
            tu.assign_non_tensor_stack(grpo, TEMPERATURE_FIELD, [float("nan")] * size)
            parts.append(grpo)
            tags += [
                {"is_prompt": True, "status": "pending", "global_steps": self.global_steps}
                for _ in range(size)
            ]
        if extra is not None:
            parts.append(extra.requests)
            tags += [
                {"status": "pending", "global_steps": self.global_steps}
                for _ in range(len(extra.requests))
            ]
        combined = parts[0] if len(parts) == 1 else tu.concat_tensordict(parts)
        tu.assign_non_tensor_data(combined, "global_steps", self.global_steps)
        if self.request_seed_base is not None:
            sessions = [int(s) for s in combined[ROLLOUT_N_FIELD]]
            text = session_seeds(self.request_seed_base, self.global_steps, call, sessions)
            tu.assign_non_tensor_stack(combined, SEED_FIELD, text)
        fields = None
        if self.trainer_mode != "sync":
            # as verl's own submission: async modes keep the requests in TQ, so that a
            # checkpoint can re-issue those still in flight
            fields = combined.select(
                *[k for k in combined.keys() if not isinstance(combined.get(k), NonTensorData)]
            )
        tq.kv_batch_put(
            keys=[str(u) for u in combined["uid"]], partition_id=PARTITION, tags=tags, fields=fields
        )
        self.agent_loop_manager.generate_sequences(combined)

    def _collect(self, pending: PendingExtras) -> None:
        """Wait until every extra group is finished (or failed), then read its samples."""
        groups = pending.extra.group_uids
        while True:
            listing = (tq.kv_list(PARTITION) or {}).get(PARTITION, {})
            status = [listing.get(uid, {}).get("status") for uid in groups]
            if all(s in TERMINAL for s in status):
                break
            time.sleep(_POLL_S)
        order = {uid: i for i, uid in enumerate(groups)}
        keys = [k for k in listing if "_" in k and k.split("_")[0] in order]
        keys.sort(key=lambda k: (order[k.split("_")[0]], *map(int, k.split("_")[1:])))
        source = dict(zip(groups, pending.extra.source_uids, strict=True))
        pending.extra.source_uids = [source[k.split("_")[0]] for k in keys]
        pending.extra.group_uids = [k.split("_")[0] for k in keys]
        fields = ["responses", "response_mask", "rm_scores"]
        if self.config.actor_rollout_ref.rollout.calculate_log_probs:
            fields.append("rollout_log_probs")
        if keys:
            data = tq.kv_batch_get(keys=keys, partition_id=PARTITION, select_fields=fields)
            outputs = DataProto(batch=data.to_padded_tensor())
        else:
            outputs = DataProto.from_dict({"response_mask": torch.zeros(0, 1)})
        outputs.non_tensor_batch["tq_key"] = np.asarray(keys, dtype=object)
        outputs.meta_info["tags"] = [listing[k] for k in keys]
        outputs.meta_info["groups"] = groups
        pending.outputs = outputs
        pending.generated_tokens = int(outputs.batch["response_mask"].sum().item())

    def _current_step(self, hook: str) -> StepState:
        if self._step is None:
            raise RuntimeError(f"AEPO: {hook} came before this step's prepare_step")
        return self._step

    # ---- entropy measurement ------------------------------------------------------------

    def _measurement_start(self, step: StepState) -> StepStart:
        """The step start whose plan this step's measurement settles (the plan of the
        extras this step trains)."""
        return step.start

    def _compute_old_log_prob(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        step = self._current_step("the old-log-prob pass")
        batch = super()._compute_old_log_prob(batch, metrics)
        data = self._padded(batch.keys, ["entropy", "response_mask"])
        # V1 keeps the token entropies at the actor's compute precision (bf16), and verl's
        # actor/entropy is their mean in it, one bf16 step (~0.004 near 0.6) coarse: the
        # controller gets the mean in fp32, as the legacy trainer's
        entropy = float(masked_mean(data["entropy"].float(), data["response_mask"]))
        step.measured = self.aepo.measured(self._measurement_start(step), entropy)
        return batch

    @staticmethod
    def _padded(keys: list[str], fields: list[str]):
        return tq.kv_batch_get(
            keys=keys, partition_id=PARTITION, select_fields=fields
        ).to_padded_tensor()

    # ---- the update ---------------------------------------------------------------------

    def _before_merge(self, step: StepState, plan: StepPlan) -> None:
        """Called when the measurement left a plan, before its samples are merged."""

    def _update_actor(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        step, self._step = self._current_step("the actor update"), None
        measured = step.measurement()
        grpo = DataProto(
            batch=self._padded(batch.keys, ["advantages", "response_mask", "rm_scores"])
        )
        real = torch.tensor([not tag.get("is_padding", False) for tag in batch.tags])
        metrics["reward/mean"] = float(grpo.batch["rm_scores"].sum(-1)[real].mean())
        metrics.update(measured.metrics)
        if (measured.entropy_bonus or 0.0) > 0:  # V1's actor keeps the loss it was built with
            metrics.update(self.revival.refuse("trainer.use_v1=true: its actor keeps its loss"))
        to_update = batch
        try:
            if measured.plan is not None:
                started = time.perf_counter()
                self._before_merge(step, measured.plan)
                to_update, merge_metrics = self._merged(batch, grpo, measured.plan, step)
                metrics.update(merge_metrics)
                metrics["aepo/extra_worker_calls"] = float(step.extra_worker_calls)
                metrics["aepo/extra_passes_s"] = time.perf_counter() - started
            super()._update_actor(to_update, metrics)
        finally:
            self._clear_extras(step, to_update)
        # verl's metrics and its TQ clean-up read the GRPO batch
        return batch

    def _merged(self, batch: KVBatchMeta, grpo: DataProto, plan: StepPlan, step: StepState):
        extras = step.extras
        if extras is not None and extras.outputs is None:
            extras = None
        dp = actor_dp_size(self)
        metrics = {**extra_pass_metrics(grpo, extras), **reinforce_rows_per_rank(None, dp)}
        if extras is None or len(extras.outputs) == 0:
            return batch, metrics
        outputs = extras.outputs
        reinforcement = select_reinforcement(
            self, plan, grpo, outputs, extras.extra.group_uids, rows=len(batch)
        )
        metrics.update(reinforcement.metrics)
        if len(reinforcement) == 0:
            return batch, metrics
        merge = reinforcement.merge
        if merge.append_rows or merge.pad_rows:
            raise RuntimeError("AEPO on verl's V1 trainer only replaces rows (aepo.merge)")
        chosen = reinforcement.indices.tolist()
        keys = [str(outputs.non_tensor_batch["tq_key"][i]) for i in chosen]
        tags = [dict(outputs.meta_info["tags"][i]) for i in chosen]
        step.extra_worker_calls += self._reinforce_log_probs(keys, tags)
        mask = tq.kv_batch_get(keys=keys, partition_id=PARTITION, select_fields=["response_mask"])
        mask = jagged(mask["response_mask"])
        advantages = reinforcement.advantages[:, : int(mask.offsets().diff().max())]
        nested = {
            "advantages": response_to_nested(advantages.float(), mask),
            "returns": response_to_nested(advantages.float(), mask),
        }
        tq.kv_batch_put(
            keys=keys, partition_id=PARTITION, fields=TensorDict(nested, batch_size=len(keys))
        )

        merged_keys, merged_tags = list(batch.keys), list(batch.tags)
        for row, key, tag in zip(merge.replace_rows.tolist(), keys, tags, strict=True):
            merged_keys[row], merged_tags[row] = key, tag
        merged = KVBatchMeta(
            partition_id=batch.partition_id,
            keys=merged_keys,
            tags=merged_tags,
            extra_info=dict(batch.extra_info),
        )
        if reinforcement.row_scale is not None:
            # every row's Eq. 1 weight, written over the advantages the update reads
            data = tq.kv_batch_get(
                keys=merged_keys,
                partition_id=PARTITION,
                select_fields=["advantages", "response_mask"],
            )
            scaled = reinforcement.scaled(
                torch.nested.to_padded_tensor(jagged(data["advantages"]), 0.0)
            )
            tq.kv_batch_put(
                keys=merged_keys,
                partition_id=PARTITION,
                fields=TensorDict(
                    {"advantages": response_to_nested(scaled, jagged(data["response_mask"]))},
                    batch_size=len(merged_keys),
                ),
            )
        metrics.update(reinforce_rows_per_rank(merge.reinforce_rows(len(batch)), dp))
        return merged, metrics

    def _reinforce_log_probs(self, keys: list[str], tags: list[dict]) -> int:
        """Old (and reference) log-probs of the REINFORCE rows at ``rollout.temperature``
        (1.0): verl's own passes on their keys (the rollout's log-probs are at T_high/T_low).
        The rows are padded with copies of themselves to what each pass's dispatch needs (DP
        ranks x micro-batch rows), as the legacy trainer's passes are."""
        rows = KVBatchMeta(partition_id=PARTITION, keys=list(keys), tags=[dict(t) for t in tags])
        divisor = log_prob_pass_divisor(self, "actor")
        if self.use_reference_policy:
            divisor = math.lcm(divisor, log_prob_pass_divisor(self, "ref"))
        rows = pad_with_copies(rows, divisor)
        scratch: dict = {}
        PPOTrainer._compute_old_log_prob(self, rows, scratch)
        calls = 1
        if self.use_reference_policy:
            PPOTrainer._compute_ref_log_prob(self, rows, scratch)
            calls += 1
        padding = rows.keys[len(keys) :]
        if padding:
            tq.kv_clear(keys=padding, partition_id=PARTITION)
        return calls

    def _clear_extras(self, step: StepState, merged: KVBatchMeta) -> None:
        """The extra groups' TQ entries (verl clears only the keys of the batch it sampled)."""
        pending = step.extras
        if pending is None or pending.outputs is None:
            return
        keys = list(pending.outputs.meta_info["groups"])
        keys += [str(k) for k in pending.outputs.non_tensor_batch["tq_key"]]
        tq.kv_clear(keys=keys, partition_id=PARTITION)


def pad_with_copies(rows: KVBatchMeta, divisor: int, store=tq) -> KVBatchMeta:
    """``rows`` padded to a multiple of ``divisor`` with copies of its own first rows under
    fresh keys (written to ``store``, TransferQueue), as verl's ``pad_dataproto_to_divisor``
    pads the legacy trainer's passes. Not verl's ``upsample_batch_to_divisible_size``: its
    no-op rows are 128 tokens long (``padding_utils.SYNTHETIC_PADDING_SEQ_LEN``), longer than a
    dynamic-batch token budget may be (``rearrange_micro_batches`` refuses the pass; found at
    the e2e scale-out shape's budget of 16). The copies' log-probs are computed and dropped."""
    pad = -len(rows) % divisor
    if pad == 0:
        return rows
    sources = [i % len(rows) for i in range(pad)]
    copies = store.kv_batch_get(
        keys=[rows.keys[i] for i in sources], partition_id=rows.partition_id
    )
    prefix = f"aepopad{uuid.uuid4().hex}"
    keys = [f"{prefix}_{i}_0" for i in range(pad)]
    tags = [dict(rows.tags[i]) for i in sources]
    store.kv_batch_put(keys=keys, partition_id=rows.partition_id, fields=copies, tags=tags)
    return KVBatchMeta(
        partition_id=rows.partition_id,
        keys=[*rows.keys, *keys],
        tags=[*rows.tags, *tags],
        extra_info=dict(rows.extra_info or {}),
    )


class AEPOV1SyncTrainer(AEPOV1Steps, PPOTrainerSync):
    """``trainer_mode: sync``: a step's extras go out with its own prompts and are trained in
    the same step; step 1 (and ``current_batch``) generates them after the measurement."""

    def _extras_submitted(self, step: StepState, extra: ExtraRequests) -> None:
        step.extras = PendingExtras(extra, None, 0)  # trained in this step

    def on_sample_end(self):
        step = self._step
        if step is not None and step.extras is not None and step.extras.outputs is None:
            self._collect(step.extras)
        super().on_sample_end()

    def _before_merge(self, step: StepState, plan: StepPlan) -> None:
        if step.start.plan is None:  # planned after the measurement
            self._generate_after_measurement(step, plan)

    def _generate_after_measurement(self, step: StepState, plan: StepPlan) -> None:
        """The extra pass when it could not ride along: the replicas, asleep since the
        sampling, are woken with pi_old's (unchanged) weights, serve it, and sleep again."""
        if plan.num_samples == 0:
            return
        step.extras = PendingExtras(self._extra_requests(step.prompts, plan), None, 0)
        self.checkpoint_manager.update_weights(self.global_steps)
        step.extra_worker_calls += 3  # wake (update_weights), generate, sleep
        try:
            self._submit(None, step.extras.extra, SECOND_CALL)
            self._collect(step.extras)
        finally:
            self.checkpoint_manager.sleep_replicas()


class AEPOV1ColocateAsyncTrainer(SubmittedPlansCheckpointing, AEPOV1Steps, PPOTrainerColocateAsync):
    """``trainer_mode: colocate_async``: verl submits step s's prompts, then trains on groups
    generated one step before, while the replicas sleep; generation resumes after the
    weight update. AEPO follows the same lag (docs/verl_v1.md, "previous step"):

    - step s's ``prepare_step``: the plan made from the last measurement (step s - 1's pi_old
      at T = 1, the trainer's old-log-prob pass) goes out with step s's prompts and is kept
      in :attr:`submitted` under s (saved in ``aepo_state.json``);
    - step s + 1's sample end: the extras of submission s are dropped if verl's own
      staleness limit (``trainer.v1.sampler.max_off_policy_threshold``) says so, else
      collected (the trainer waits for them as verl's replay buffer waits for its groups);
    - step s + 1's measurement settles plan s against the entropy of the policy it updates;
      the REINFORCE rows get verl's old-log-prob pass of that policy on their keys.

    Steps 1 and 2 train no extras: step 1's submission (and verl's warm-up batch) went out
    before any measurement, and step 2's extras are trained at step 3."""

    def __init__(self, config, aepo_config: AEPOConfig | None = None):
        super().__init__(config, aepo_config)
        self.submitted = SubmittedPlans()
        """extra passes submitted and not yet trained, by submission step"""
        self._stale_groups = 0
        """extra groups this step dropped as stale"""

    def _extras_submitted(self, step: StepState, extra: ExtraRequests) -> None:
        # trained one step later: kept (and checkpointed) under this submission's step
        self.submitted.add(
            SubmittedExtras(
                self.global_steps, extra.plan, tuple(extra.source_uids), tuple(extra.group_uids)
            )
        )

    def on_sample_end(self):
        step = self._current_step("the sample's end")
        sampler = self.config.trainer.v1.sampler
        trained, dropped = self.submitted.take(
            self.global_steps, sampler.max_off_policy_threshold, sampler.max_off_policy_strategy
        )
        self._stale_groups = sum(len(extras.group_uids) for extras in dropped)
        if trained is not None:
            requests = ExtraRequests(
                trained.plan, None, list(trained.source_uids), list(trained.group_uids)
            )
            step.extras = PendingExtras(requests, None, 0)
            self._collect(step.extras)
        keep = self.submitted.pending_group_uids()
        if trained is not None:
            keep |= set(trained.group_uids)
        self._clear_finished_extra_groups(keep)
        super().on_sample_end()  # verl: abort the requests still running, sleep the replicas

    def _clear_finished_extra_groups(self, keep: set[str]) -> None:
        """TQ entries of extra groups no plan holds any more (dropped as stale, or left by a
        checkpoint): cleared once their agent loop is done, so none writes after them."""
        listing = (tq.kv_list(PARTITION) or {}).get(PARTITION, {})
        done = {
            key
            for key, tag in listing.items()
            if key.startswith(EXTRA_UID_PREFIX)
            and "_" not in key
            and key not in keep
            and tag.get("status") in TERMINAL
        }
        keys = [key for key in listing if key.split("_")[0] in done]
        if keys:
            tq.kv_clear(keys=keys, partition_id=PARTITION)

    def _measurement_start(self, step: StepState) -> StepStart:
        # this step's measurement settles the plan of the extras it trains (submitted one
        # step before), not the plan it has just submitted; without any, it holds the integral
        if step.extras is None:
            return replace(step.start, plan=None, extras_due=False)
        has_samples = len(step.extras.outputs) > 0
        return replace(step.start, plan=step.extras.extra.plan, extras_due=has_samples)

    def _update_actor(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        metrics["aepo/extra_groups_stale"] = float(self._stale_groups)
        return super()._update_actor(batch, metrics)

    def _reissue_inflight_prompts(self, partition_id: str = PARTITION) -> int:
        """verl re-issues the GRPO prompts a checkpoint left in flight; the extra groups of
        the restored plans are re-issued here the same way (their partial samples cleared,
        the requests read back from TQ), so the step that trains them finds them."""
        count = super()._reissue_inflight_prompts(partition_id)
        listing = (tq.kv_list(PARTITION) or {}).get(PARTITION, {})
        for submitted_at, extras in sorted(self.submitted.by_step.items()):
            lost = [uid for uid in extras.group_uids if uid not in listing]
            if lost:
                # no TQ state came with the checkpoint (or it was cleared): nothing to train
                logger.warning(
                    "AEPO: the extra groups submitted at step %d are not in TransferQueue "
                    "(%d of %d missing); dropping that plan",
                    submitted_at,
                    len(lost),
                    len(extras.group_uids),
                )
                del self.submitted.by_step[submitted_at]
        pending = self.submitted.pending_group_uids()
        inflight = sorted(
            uid for uid in pending if listing[uid].get("status") in ("pending", "running")
        )
        self._clear_finished_extra_groups(pending)
        if not inflight:
            return count
        partial = [key for key in listing if "_" in key and key.split("_")[0] in set(inflight)]
        if partial:
            tq.kv_clear(keys=partial, partition_id=PARTITION)
        requests = tq.kv_batch_get(keys=inflight, partition_id=PARTITION)
        tu.assign_non_tensor_data(requests, "global_steps", self.global_steps)
        tags = [{"status": "pending", "global_steps": self.global_steps} for _ in inflight]
        tq.kv_batch_put(keys=inflight, partition_id=PARTITION, tags=tags)
        self.agent_loop_manager.generate_sequences(requests)
        print(f"aepo: re-issued {len(inflight)} in-flight extra groups", flush=True)
        return count + len(inflight)


V1_TRAINERS = {"sync": AEPOV1SyncTrainer, "colocate_async": AEPOV1ColocateAsyncTrainer}
"""AEPO's trainer for each ``trainer.v1.trainer_mode`` it runs"""
