"""The temperature-controlled extra rollout: which requests, and how they ride along.

``entropy_source: previous_step`` (default) decides this step's temperature from the last
measurement, so the extra requests are appended to fit()'s own generate call, and fit() gets
back exactly the rows it asked for. ``current_batch`` (and step 1, which has no measurement
yet) generates them in a second call after the measurement. Either way
:func:`generate_with_extras` makes the call and is the one place that builds
:class:`PendingExtras`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from verl import DataProto

from aepo.backends.verl.agent_loop import (
    AGENT_NAME,
    SEED_FIELD,
    SEEDABLE_AGENT_LOOP,
    TEMPERATURE_FIELD,
    request_seeds,
)
from aepo.backends.verl.batch_merge import first_row_by_uid
from aepo.core import StepPlan, masked_mean

# AgentLoopManager numbers requests with this field when absent; copies of a request must
# not share it (it becomes the vLLM request id under full determinism).
_PRIORITY_FIELD = "priority"


@dataclass(frozen=True)
class SeedKey:
    """What a generate call's request seeds derive from (:func:`request_seeds`)."""

    base_seed: int
    step: int
    call: int


@dataclass
class ExtraRequests:
    """The extra generation requests of one step, before generation."""

    plan: StepPlan
    requests: DataProto
    source_uids: list[str]
    """per request: uid of the GRPO prompt it was copied from"""
    group_uids: list[str]
    """per request: fresh uid shared by the samples of one prompt (for group advantages)"""


@dataclass
class PendingExtras:
    """Generated extra samples waiting for the actor update of the same step."""

    extra: ExtraRequests
    outputs: DataProto
    generated_tokens: int
    """response tokens generated for this step's extra pass, padding requests included"""


def build_extra_requests(prompts: DataProto, plan: StepPlan) -> ExtraRequests:
    """The plan's prompts of fit()'s generation batch (numbered by first appearance of their
    uid), each repeated ``samples_per_prompt`` times, tagged with the plan's temperature."""
    if "uid" not in prompts.non_tensor_batch:
        raise KeyError("the generation batch has no 'uid' field (fit() adds it before generation)")
    prompt_rows = list(first_row_by_uid(prompts.non_tensor_batch["uid"]).values())
    if plan.prompts and max(plan.prompts) >= len(prompt_rows):
        raise ValueError(
            f"plan asks for prompt {max(plan.prompts)}, the batch has {len(prompt_rows)}"
        )
    chosen = [prompt_rows[i] for i in plan.prompts]
    m = plan.rollout.samples_per_prompt
    rows = [r for r in chosen for _ in range(m)]
    requests = prompts.select_idxs(np.asarray(rows, dtype=np.int64))
    requests.meta_info = dict(prompts.meta_info)
    requests.non_tensor_batch.pop(_PRIORITY_FIELD, None)
    source_uids = [str(u) for u in requests.non_tensor_batch["uid"].tolist()]
    fresh = {r: f"aepo-{uuid.uuid4()}" for r in chosen}
    group_uids = [fresh[r] for r in rows]
    requests.non_tensor_batch["uid"] = np.asarray(group_uids, dtype=object)
    requests.non_tensor_batch["agent_name"] = np.full(len(rows), AGENT_NAME, dtype=object)
    requests.non_tensor_batch[TEMPERATURE_FIELD] = np.full(
        len(rows), plan.rollout.temperature, dtype=object
    )
    return ExtraRequests(plan, requests, source_uids, group_uids)


def tag_default_rows(
    prompts: DataProto, default_agent_loop: str, seeded: bool = False
) -> DataProto:
    """A shallow copy of fit()'s rows with the fields the extra rows carry (``concat`` needs
    identical keys): their own agent loop and no temperature override. ``seeded``: the rows
    will carry a seed, so those of verl's ``single_turn_agent`` go through
    ``aepo_temperature_agent`` (the same loop, plus the seed); any other loop cannot take
    one, and is refused."""
    non_tensor = dict(prompts.non_tensor_batch)
    non_tensor.pop(_PRIORITY_FIELD, None)
    if "agent_name" not in non_tensor:
        non_tensor["agent_name"] = np.full(len(prompts), default_agent_loop, dtype=object)
    if seeded:
        names = non_tensor["agent_name"]
        foreign = [
            (row, name)
            for row, name in enumerate(names)
            if name not in (SEEDABLE_AGENT_LOOP, AGENT_NAME)
        ]
        if foreign:
            row, name = foreign[0]
            raise ValueError(
                f"per-request sampling seeds: row {row} of the generation batch uses agent loop "
                f"{name!r}, which cannot carry a seed (only {SEEDABLE_AGENT_LOOP!r} rows can); "
                "set actor_rollout_ref.rollout.custom.per_request_seed=false or use single_turn_agent"
            )
        non_tensor["agent_name"] = np.full(len(prompts), AGENT_NAME, dtype=object)
    non_tensor[TEMPERATURE_FIELD] = np.full(len(prompts), float("nan"), dtype=object)
    return DataProto(
        batch=prompts.batch, non_tensor_batch=non_tensor, meta_info=dict(prompts.meta_info)
    )


def with_seeds(requests: DataProto, key: SeedKey) -> DataProto:
    """A shallow copy of one generate call's rows, each with its seed: row i of the call
    gets ``request_seeds(key...)[i]``."""
    non_tensor = dict(requests.non_tensor_batch)
    non_tensor[SEED_FIELD] = request_seeds(key.base_seed, key.step, key.call, len(requests))
    return DataProto(
        batch=requests.batch, non_tensor_batch=non_tensor, meta_info=dict(requests.meta_info)
    )


def _drop_request_fields(output: DataProto) -> DataProto:
    """fit()'s rows come back with the keys they would have without AEPO."""
    output.non_tensor_batch.pop(TEMPERATURE_FIELD, None)
    output.non_tensor_batch.pop(SEED_FIELD, None)
    return output


def generate_seeded(
    manager, prompts: DataProto, default_agent_loop: str, key: SeedKey
) -> DataProto:
    """fit()'s generate call with no extra requests, every row with its seed."""
    output = manager.generate_sequences(
        with_seeds(tag_default_rows(prompts, default_agent_loop, seeded=True), key)
    )
    return _drop_request_fields(output)


def response_tokens(output: DataProto) -> int:
    return int(output.batch["response_mask"].sum().item())


class RolloutManagerProxy:
    """Stands in for ``trainer.async_rollout_manager``: fit()'s training generate calls go
    to ``generate`` (the trainer's, which may add extra requests); validation calls and
    every other attribute go straight to the real manager."""

    def __init__(self, inner, generate: Callable[[DataProto], DataProto]):
        self.inner = inner
        self._generate = generate

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate_sequences(self, prompts: DataProto) -> DataProto:
        if prompts.meta_info.get("validate", False):
            return self.inner.generate_sequences(prompts)
        return self._generate(prompts)


def generate_with_extras(
    manager,
    main: DataProto | None,
    extra: ExtraRequests,
    num_workers: int,
    seed_key: SeedKey | None = None,
) -> tuple[DataProto | None, PendingExtras]:
    """One ``generate_sequences`` call for ``main`` (may be None) followed by the extra
    requests, padded to a multiple of the agent-loop workers (``DataProto.chunk`` asserts
    divisibility; fit() never pads). With ``seed_key`` every row of the call, padding
    included, carries its seed (``main`` must then be tagged ``seeded``).

    Returns ``(main output or None, the pending extras)``; padding requests are generated
    and dropped, and their tokens count as extra cost.
    """
    num_main = 0 if main is None else len(main)
    requests = extra.requests
    combined = requests if main is None else DataProto.concat([main, requests])
    pad = (-len(combined)) % max(1, num_workers)
    if pad:
        combined = DataProto.concat([combined] + [requests[:1]] * pad)
    if seed_key is not None:
        combined = with_seeds(combined, seed_key)
    output = manager.generate_sequences(combined)
    main_output = output.slice(0, num_main) if main is not None else None
    if main_output is not None:
        _drop_request_fields(main_output)
    extra_output = output.slice(num_main, num_main + len(requests))
    extra_output.non_tensor_batch.pop(SEED_FIELD, None)
    spent = response_tokens(output.slice(num_main, len(output)))
    return main_output, PendingExtras(extra, extra_output, spent)


def reinforce_rows_per_rank(reinforce: torch.Tensor | None, ranks: int) -> dict[str, float]:
    """``aepo/reinforce_rows_dpR``: the REINFORCE rows data-parallel rank R trains on (verl's
    nd-dispatch hands rank r the r-th of ``ranks`` equal contiguous chunks of the batch; the
    layout update_layout describes). ``reinforce`` marks the merged rows; None is a step
    without any, logged as 0 on every rank so that each rank's series has every step."""
    if reinforce is None:
        return {f"aepo/reinforce_rows_dp{rank}": 0.0 for rank in range(ranks)}
    chunks = reinforce.chunk(ranks)
    return {f"aepo/reinforce_rows_dp{rank}": float(c.sum()) for rank, c in enumerate(chunks)}


def extra_pass_metrics(batch: DataProto, extras: PendingExtras | None) -> dict[str, float]:
    """The extra pass's cost against fit()'s GRPO rows, before the selection."""
    spent = 0 if extras is None else extras.generated_tokens
    grpo_tokens = max(1, int(batch.batch["response_mask"].sum().item()))
    metrics = {
        "aepo/extra_gen_tokens": float(spent),
        "aepo/extra_gen_fraction": spent / grpo_tokens,
        "aepo/extra_samples": float(0 if extras is None else len(extras.outputs)),
        "aepo/reinforce_samples": 0.0,
        "aepo/positive_rate": 0.0,
    }
    if extras is None or len(extras.outputs) == 0:
        return metrics
    if "rollout_log_probs" in extras.outputs.batch.keys():
        # vLLM's own log-probs of what it sampled: shows the temperature it sampled at
        # (compare actor/entropy, the mean surprise of the T = 1 samples).
        outputs = extras.outputs.batch
        metrics["aepo/extra_rollout_nll"] = -float(
            masked_mean(outputs["rollout_log_probs"], outputs["response_mask"])
        )
    return metrics
