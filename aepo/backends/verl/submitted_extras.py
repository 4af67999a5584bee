"""Extra passes submitted ahead of their update: verl's V1 ``colocate_async`` trainer.

Under ``colocate_async`` verl submits a step's prompts before it trains on the previous
ones, so AEPO's extra requests ride in the submission of step s and are trained at step
s + 1 (``aepo/backends/verl/trainer_v1.py``, :class:`AEPOV1ColocateAsyncTrainer`; the
timeline is in docs/verl_v1.md). Between the two a checkpoint may be written, so what was
submitted is kept here, keyed by the step it was submitted at, and saved with the
controller's state in ``aepo_state.json``. This module holds no TransferQueue call, so the
keying, the staleness rule and the state round trip are tested without Ray.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from aepo.core import Decision, ExtraRolloutPlan, StepPlan

STATE_KEY = "v1_submitted_extras"
"""the entry of ``aepo_state.json`` holding the submitted, untrained extra passes (absent in
files written by the other trainers, and before this trainer existed)"""


@dataclass(frozen=True)
class SubmittedExtras:
    """One submission's extra pass: its plan and the TransferQueue groups it went out as."""

    step: int
    """the step whose ``prepare_step`` submitted it (verl's ``global_steps`` tag)"""
    plan: StepPlan
    source_uids: tuple[str, ...]
    """per extra group: uid of the GRPO prompt it resamples"""
    group_uids: tuple[str, ...]
    """per extra group: its own uid, the TransferQueue key of its prompt"""

    def to_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "plan": asdict(self.plan),
            "source_uids": list(self.source_uids),
            "group_uids": list(self.group_uids),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SubmittedExtras:
        plan = state["plan"]
        return cls(
            step=int(state["step"]),
            plan=StepPlan(
                Decision(**plan["decision"]),
                ExtraRolloutPlan(**plan["rollout"]),
                tuple(int(p) for p in plan["prompts"]),
            ),
            source_uids=tuple(str(u) for u in state["source_uids"]),
            group_uids=tuple(str(u) for u in state["group_uids"]),
        )


def staleness(trained_at: int, submitted_at: int) -> int:
    """Model versions a group spans from submission to update: verl's own measure
    (``ReplayBufferAsync._stale_terminal_keys``: ``global_steps - prompt_step + 1``)."""
    return trained_at - submitted_at + 1


def is_stale(trained_at: int, submitted_at: int, threshold: int | None, strategy: str) -> bool:
    """verl's rule for its GRPO groups, applied to the extra groups it does not see:
    ``trainer.v1.sampler.max_off_policy_threshold`` (None: no limit) under the ``drop``
    strategy; ``wait`` never drops (verl waits for such groups and trains them)."""
    if threshold is None or strategy != "drop":
        return False
    return staleness(trained_at, submitted_at) > threshold


class SubmittedPlans:
    """The extra passes submitted and not yet trained, by submission step."""

    def __init__(self) -> None:
        self.by_step: dict[int, SubmittedExtras] = {}

    def add(self, extras: SubmittedExtras) -> None:
        if extras.step in self.by_step:
            raise ValueError(f"step {extras.step} already submitted an extra pass")
        self.by_step[extras.step] = extras

    def take(
        self, step: int, threshold: int | None, strategy: str
    ) -> tuple[SubmittedExtras | None, list[SubmittedExtras]]:
        """What step ``step`` trains, and what it drops; both leave the table.

        Step ``step`` trains the extras submitted one step before (``step - 1``: they were
        generated beside the GRPO groups verl trains now), unless verl's staleness limit
        drops them. Anything older (only a run that skipped an update could leave it) is
        dropped with them: its plan was settled against a measurement two updates back.
        """
        due = sorted(s for s in self.by_step if s < step)
        taken = [self.by_step.pop(s) for s in due]
        trained = None
        if taken and taken[-1].step == step - 1:
            if not is_stale(step, taken[-1].step, threshold, strategy):
                trained = taken.pop()
        return trained, taken

    def pending_group_uids(self) -> set[str]:
        return {uid for extras in self.by_step.values() for uid in extras.group_uids}

    def state_dict(self) -> dict[str, Any]:
        return {str(step): extras.to_state() for step, extras in sorted(self.by_step.items())}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """``None``: a state file without the entry (another trainer's, or an older one)."""
        self.by_step = {}
        for key, saved in (state or {}).items():
            extras = SubmittedExtras.from_state(saved)
            if int(key) != extras.step:
                raise ValueError(f"entry {key} holds the extras of step {extras.step}")
            self.by_step[extras.step] = extras


class SubmittedPlansCheckpointing:
    """The submitted extra passes in the controller's state file: a checkpoint written
    between a submission and its update restores them. Goes before
    :class:`aepo.backends.verl.trainer.AEPOCheckpointing` in a trainer's bases; needs
    ``submitted`` (:class:`SubmittedPlans`) on the trainer."""

    submitted: SubmittedPlans

    def aepo_state_dict(self) -> dict:
        return {**super().aepo_state_dict(), STATE_KEY: self.submitted.state_dict()}

    def load_aepo_state_dict(self, state: dict, *, source: str) -> None:
        from aepo.backends.verl.checkpoint import CheckpointStateError

        super().load_aepo_state_dict(state, source=source)
        try:
            self.submitted.load_state_dict(state.get(STATE_KEY))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointStateError(
                f"{source}: corrupt AEPO state ({STATE_KEY}: {err!r})"
            ) from err
