"""The temperature-controlled extra rollout: which requests, and how they ride along.

``entropy_source: previous_step`` (default) decides this step's temperature from the last
measurement, so :class:`RolloutManagerProxy` appends the extra requests to fit()'s own
generate call and hands fit() back exactly the rows it asked for. ``current_batch`` (and
step 1, which has no measurement yet) generates them in a second call after the
measurement; the proxy only remembers the prompts for it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import torch
from verl import DataProto

from aepo.backends.verl.agent_loop import AGENT_NAME, TEMPERATURE_FIELD
from aepo.backends.verl.batch_merge import first_row_by_uid
from aepo.core import Decision, ExtraRolloutPlan

# AgentLoopManager numbers requests with this field when absent; copies of a request must
# not share it (it becomes the vLLM request id under full determinism).
_PRIORITY_FIELD = "priority"


@dataclass
class ExtraRequests:
    """The extra generation requests of one step, before generation."""

    requests: DataProto
    source_uids: list[str]
    """per request: uid of the GRPO prompt it was copied from"""
    group_uids: list[str]
    """per request: fresh uid shared by the samples of one prompt (for group advantages)"""


@dataclass
class PendingExtras:
    """Generated extra samples waiting for the actor update of the same step."""

    decision: Decision
    plan: ExtraRolloutPlan
    outputs: DataProto
    source_uids: list[str]
    group_uids: list[str]
    generated_tokens: int
    """response tokens generated for this step's extra pass, padding requests included"""


def build_extra_requests(
    prompts: DataProto,
    plan: ExtraRolloutPlan,
    *,
    generator: torch.Generator,
) -> ExtraRequests:
    """``plan.num_prompts`` random prompts of fit()'s generation batch, each repeated
    ``plan.samples_per_prompt`` times, tagged with the plan's temperature."""
    if "uid" not in prompts.non_tensor_batch:
        raise KeyError("the generation batch has no 'uid' field (fit() adds it before generation)")
    prompt_rows = list(first_row_by_uid(prompts.non_tensor_batch["uid"]).values())
    if plan.num_prompts > len(prompt_rows):
        raise ValueError(
            f"plan asks for {plan.num_prompts} prompts, the batch has {len(prompt_rows)}"
        )
    order = torch.randperm(len(prompt_rows), generator=generator)[: plan.num_prompts].tolist()
    chosen = sorted(prompt_rows[i] for i in order)
    rows = [r for r in chosen for _ in range(plan.samples_per_prompt)]
    requests = prompts.select_idxs(np.asarray(rows, dtype=np.int64))
    requests.meta_info = dict(prompts.meta_info)
    requests.non_tensor_batch.pop(_PRIORITY_FIELD, None)
    source_uids = [str(u) for u in requests.non_tensor_batch["uid"].tolist()]
    fresh = {r: f"aepo-{uuid.uuid4()}" for r in chosen}
    group_uids = [fresh[r] for r in rows]
    requests.non_tensor_batch["uid"] = np.asarray(group_uids, dtype=object)
    requests.non_tensor_batch["agent_name"] = np.full(len(rows), AGENT_NAME, dtype=object)
    requests.non_tensor_batch[TEMPERATURE_FIELD] = np.full(
        len(rows), plan.temperature, dtype=object
    )
    return ExtraRequests(requests, source_uids, group_uids)


def tag_default_rows(prompts: DataProto, default_agent_loop: str) -> DataProto:
    """A shallow copy of fit()'s rows with the fields the extra rows carry (``concat`` needs
    identical keys): their own agent loop and no temperature override."""
    non_tensor = dict(prompts.non_tensor_batch)
    non_tensor.pop(_PRIORITY_FIELD, None)
    if "agent_name" not in non_tensor:
        non_tensor["agent_name"] = np.full(len(prompts), default_agent_loop, dtype=object)
    non_tensor[TEMPERATURE_FIELD] = np.full(len(prompts), float("nan"), dtype=object)
    return DataProto(
        batch=prompts.batch, non_tensor_batch=non_tensor, meta_info=dict(prompts.meta_info)
    )


def response_tokens(output: DataProto) -> int:
    return int(output.batch["response_mask"].sum().item())


class RolloutManagerProxy:
    """Stands in for ``trainer.async_rollout_manager``; everything but
    ``generate_sequences`` goes straight to the real manager.

    ``trainer`` provides ``remember_generation_prompts(prompts)`` and
    ``plan_same_call_extras(prompts) -> (decision, plan) | None`` and
    ``receive_extras(PendingExtras)``.
    """

    def __init__(self, inner, trainer, *, num_workers: int, default_agent_loop: str):
        self.inner = inner
        self.trainer = trainer
        self.num_workers = num_workers
        self.default_agent_loop = default_agent_loop

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate_sequences(self, prompts: DataProto) -> DataProto:
        if prompts.meta_info.get("validate", False):
            return self.inner.generate_sequences(prompts)
        self.trainer.remember_generation_prompts(prompts)
        planned = self.trainer.plan_same_call_extras(prompts)
        if planned is None:
            return self.inner.generate_sequences(prompts)
        decision, plan = planned
        extra = build_extra_requests(prompts, plan, generator=self.trainer.aepo_rng)
        main = tag_default_rows(prompts, self.default_agent_loop)
        main_output, extra_outputs, generated = generate_padded(
            self.inner, main, extra.requests, self.num_workers
        )
        main_output.non_tensor_batch.pop(TEMPERATURE_FIELD, None)
        self.trainer.receive_extras(
            PendingExtras(
                decision=decision,
                plan=plan,
                outputs=extra_outputs,
                source_uids=extra.source_uids,
                group_uids=extra.group_uids,
                generated_tokens=generated,
            )
        )
        return main_output


def generate_padded(manager, main: DataProto | None, extra: DataProto, num_workers: int):
    """One ``generate_sequences`` call for ``main`` (may be None) followed by ``extra``,
    padded to a multiple of the agent-loop workers (``DataProto.chunk`` asserts
    divisibility; fit() never pads).

    Returns ``(main output or None, extra output, response tokens spent beyond main)``;
    padding requests are generated and dropped, and their tokens count as extra cost.
    """
    num_main = 0 if main is None else len(main)
    combined = extra if main is None else DataProto.concat([main, extra])
    pad = (-len(combined)) % max(1, num_workers)
    if pad:
        combined = DataProto.concat([combined] + [extra[:1]] * pad)
    output = manager.generate_sequences(combined)
    main_output = output.slice(0, num_main) if main is not None else None
    extra_output = output.slice(num_main, num_main + len(extra))
    spent = response_tokens(output.slice(num_main, len(output)))
    return main_output, extra_output, spent
