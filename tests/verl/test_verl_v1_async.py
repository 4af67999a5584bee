"""AEPO on verl's V1 ``colocate_async`` trainer: what runs here without Ray.

The extras of submission s are trained at step s + 1 under the plan kept by its submission
step; that table survives the controller's state file (and files without it still load);
verl's staleness limit drops the extras it would drop of its own groups. The trainer itself
runs on the real stack (tests/e2e/test_e2e_verl_v1.py).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from aepo.backends.verl.checkpoint import (
    STATE_FILE,
    CheckpointStateError,
    write_state,
)
from aepo.backends.verl.submitted_extras import (
    STATE_KEY,
    SubmittedExtras,
    SubmittedPlans,
    SubmittedPlansCheckpointing,
    is_stale,
)
from aepo.core import AEPOConfig, AEPOStep, recipe_for

PROMPTS, N = 4, 4


def aepo_config() -> AEPOConfig:
    return AEPOConfig(algorithm="aepo", target_entropy=0.85, samples_up=8, samples_down=4)


def submitted_at(aepo: AEPOStep, step: int, entropy: float) -> SubmittedExtras:
    """Step ``step - 1`` measured ``entropy``; step ``step`` plans from it and submits."""
    start = aepo.begin(step - 1, num_prompts=PROMPTS, samples_per_prompt=N)
    aepo.measured(start, entropy)
    plan = aepo.begin(step, num_prompts=PROMPTS, samples_per_prompt=N).plan
    assert plan is not None and plan.num_samples > 0
    groups = tuple(f"aepo-{step}-{i}" for i in plan.prompts)
    return SubmittedExtras(step, plan, tuple(f"p{i}" for i in plan.prompts), groups)


class Trainer(SubmittedPlansCheckpointing):
    """The state side of AEPOV1ColocateAsyncTrainer: its controller-state hooks, on
    :class:`AEPOCheckpointing` (the real class; only verl's own files are not written)."""

    def __init__(self, cfg: AEPOConfig):
        self.aepo_cfg, self.recipe, self.aepo = cfg, recipe_for(cfg), AEPOStep(cfg)
        self.submitted = SubmittedPlans()
        self.global_steps = 0


def _with_checkpointing():
    from aepo.backends.verl.trainer import AEPOCheckpointing

    return type("AsyncTrainerState", (Trainer, AEPOCheckpointing), {})


def test_the_step_after_a_submission_trains_its_extras_under_its_plan():
    aepo = AEPOStep(aepo_config())
    plans = SubmittedPlans()
    second = submitted_at(aepo, 2, entropy=0.4)  # below the target: sample hot
    plans.add(second)
    third = submitted_at(aepo, 3, entropy=1.5)  # above it: sample cold
    plans.add(third)
    assert second.plan.rollout.temperature > 1 > third.plan.rollout.temperature

    trained, dropped = plans.take(3, threshold=8, strategy="drop")
    assert trained == second and dropped == []
    assert set(plans.by_step) == {3}, "step 3's own submission waits for step 4"
    # step 3's measurement settles the plan its extras were drawn under (hot), not the one
    # it has just submitted (cold): the temperature and prompts stay those of submission 2
    start = aepo.begin(3, num_prompts=PROMPTS, samples_per_prompt=N)
    measured = aepo.measured(replace(start, plan=trained.plan), 0.5)
    assert measured.plan.rollout == second.plan.rollout
    assert measured.plan.prompts == second.plan.prompts
    assert plans.take(3, threshold=8, strategy="drop") == (None, [])


def test_verls_staleness_limit_drops_the_extras_it_would_drop_of_its_own_groups():
    aepo = AEPOStep(aepo_config())
    extras = submitted_at(aepo, 2, entropy=0.4)
    # trained at step 3 the groups span 2 model versions (verl: step - submitted + 1)
    assert not is_stale(3, 2, threshold=2, strategy="drop")
    assert is_stale(3, 2, threshold=1, strategy="drop")
    assert not is_stale(3, 2, threshold=None, strategy="drop"), "null disables the limit"
    assert not is_stale(3, 2, threshold=1, strategy="wait"), "wait never drops"

    plans = SubmittedPlans()
    plans.add(extras)
    trained, dropped = plans.take(3, threshold=1, strategy="drop")
    assert trained is None and dropped == [extras] and plans.by_step == {}

    # anything older than the previous step's submission is dropped, whatever the limit
    plans.add(extras)
    newer = SubmittedExtras(4, extras.plan, ("p0",), ("aepo-4-0",))
    plans.add(newer)
    trained, dropped = plans.take(5, threshold=None, strategy="drop")
    assert trained == newer and dropped == [extras]


def test_a_step_submits_one_extra_pass():
    plans = SubmittedPlans()
    extras = submitted_at(AEPOStep(aepo_config()), 2, entropy=0.4)
    plans.add(extras)
    with pytest.raises(ValueError, match="step 2"):
        plans.add(extras)


def test_a_checkpoint_between_submission_and_training_restores_the_plan(tmp_path):
    cls = _with_checkpointing()
    trainer = cls(aepo_config())
    extras = submitted_at(trainer.aepo, 2, entropy=0.4)
    trainer.submitted.add(extras)
    trainer.global_steps = 2
    folder = tmp_path / "global_step_2"
    write_state(str(folder), trainer.aepo_state_dict())
    saved = json.loads((folder / STATE_FILE).read_text())
    assert list(saved[STATE_KEY]) == ["2"]

    resumed = cls(aepo_config())
    resumed.restore_aepo_state(str(folder))
    assert resumed.submitted.by_step == {2: extras}
    assert resumed.aepo.state_dict() == trainer.aepo.state_dict()
    trained, _ = resumed.submitted.take(3, threshold=8, strategy="drop")
    assert trained == extras


def test_state_files_without_submitted_plans_still_load(tmp_path):
    """Files written by the sync or legacy trainer (or before this one) have no entry."""
    cls = _with_checkpointing()
    writer = cls(aepo_config())
    submitted_at(writer.aepo, 2, entropy=0.4)
    state = writer.aepo_state_dict()
    del state[STATE_KEY]
    folder = tmp_path / "global_step_2"
    write_state(str(folder), state)

    resumed = cls(aepo_config())
    resumed.submitted.add(submitted_at(AEPOStep(aepo_config()), 2, entropy=0.4))
    resumed.restore_aepo_state(str(folder))
    assert resumed.submitted.by_step == {}
    assert resumed.aepo.state_dict() == writer.aepo.state_dict()


def test_a_corrupt_submitted_plan_stops_the_resume_naming_the_file(tmp_path):
    cls = _with_checkpointing()
    writer = cls(aepo_config())
    writer.submitted.add(submitted_at(writer.aepo, 2, entropy=0.4))
    state = writer.aepo_state_dict()
    state[STATE_KEY]["2"]["step"] = 3  # filed under the wrong step
    folder = tmp_path / "global_step_2"
    write_state(str(folder), state)
    with pytest.raises(CheckpointStateError, match=rf"{STATE_FILE}.*{STATE_KEY}"):
        cls(aepo_config()).restore_aepo_state(str(folder))
    del state[STATE_KEY]["2"]["plan"]
    write_state(str(folder), state)
    with pytest.raises(CheckpointStateError, match="plan"):
        cls(aepo_config()).restore_aepo_state(str(folder))


def test_a_step_whose_extras_never_arrive_does_not_wind_the_integral():
    """colocate_async's steps 1-2 (and a step whose extras were dropped) measure with
    ``extras_due=False``: the plan is still made and logged, the integral held."""
    cfg = AEPOConfig(
        algorithm="aepo",
        target_entropy=0.85,
        controller={"gain": "proportional", "integral_gain": 0.5},
    )
    winds, holds = AEPOStep(cfg), AEPOStep(cfg)
    for aepo, due in ((winds, True), (holds, False)):
        start = aepo.begin(1, num_prompts=PROMPTS, samples_per_prompt=N)
        # near the target, where the integral moves
        measured = aepo.measured(replace(start, extras_due=due), 0.82)
        assert measured.plan is not None and "aepo/temperature" in measured.metrics
    assert winds.controller.integral != 0.0
    assert holds.controller.integral == 0.0
