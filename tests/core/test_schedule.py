"""Entropy target schedules (``aepo.target_schedule``): values, validation, the controller's
use of them and a local-engine resume mid-schedule."""

from __future__ import annotations

import math

import pytest

from aepo.core import AEPOStep, ConfigError, load_aepo_config, target_at
from aepo.core.controller import LOWER, RAISE


def schedule(kind="linear", start=1.0, steps=4, target=0.5, **extra):
    return load_aepo_config(
        {
            "target_entropy": target,
            "target_schedule": {"kind": kind, "start": start, "steps": steps, **extra},
        }
    )


def test_without_a_schedule_the_target_is_target_entropy_at_every_step():
    cfg = load_aepo_config({"target_entropy": 0.3})
    assert [target_at(cfg, s) for s in (1, 2, 1000)] == [0.3, 0.3, 0.3]
    constant = load_aepo_config({"target_entropy": 0.3, "target_schedule": {"kind": "constant"}})
    assert [target_at(constant, s) for s in (1, 7)] == [0.3, 0.3]


def test_linear_goes_from_start_at_step_1_to_target_entropy_and_holds_it():
    cfg = schedule("linear", start=1.0, steps=4, target=0.5)
    got = [target_at(cfg, s) for s in range(1, 8)]
    assert got == pytest.approx([1.0, 0.875, 0.75, 0.625, 0.5, 0.5, 0.5])


def test_linear_can_raise_the_target_too():
    cfg = schedule("linear", start=0.25, steps=2, target=0.75)
    assert [target_at(cfg, s) for s in (1, 2, 3, 9)] == pytest.approx([0.25, 0.5, 0.75, 0.75])


def test_cosine_is_halfway_at_half_the_steps_and_flat_at_both_ends():
    cfg = schedule("cosine", start=1.0, steps=10, target=0.2)
    values = [target_at(cfg, s) for s in range(1, 13)]
    assert values[0] == pytest.approx(1.0)
    assert values[5] == pytest.approx(0.6)  # step 6: progress 1/2
    assert values[10] == values[11] == pytest.approx(0.2)
    steps = [a - b for a, b in zip(values, values[1:11], strict=False)]
    assert all(d > 0 for d in steps)  # monotone
    assert steps[0] < steps[4] and steps[-1] < steps[4]  # slow start and end
    assert values[2] == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi * 0.2)) / 2)


def test_step_before_1_is_refused():
    with pytest.raises(ValueError, match="count from 1"):
        target_at(schedule(), 0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"kind": "linear", "start": -0.5, "steps": 10},
            r"aepo\.target_schedule\.start: .*greater than 0",
        ),
        (
            {"kind": "linear", "start": 0.0, "steps": 10},
            r"aepo\.target_schedule\.start: .*greater than 0",
        ),
        (
            {"kind": "linear", "start": 1.0, "steps": 0},
            r"aepo\.target_schedule\.steps: .*greater than or equal to 1",
        ),
        (
            {"kind": "exponential", "start": 1.0, "steps": 5},
            r"aepo\.target_schedule\.kind: .*'linear'",
        ),
        ({"start": 1.0, "steps": 5}, r"aepo\.target_schedule\.kind: Field required"),
        ({"kind": "cosine"}, r"aepo\.target_schedule: kind cosine needs start and steps"),
        ({"kind": "linear", "start": 1.0}, r"aepo\.target_schedule: kind linear needs steps"),
        (
            {"kind": "constant", "start": 1.0},
            r"aepo\.target_schedule: kind constant .*start would be ignored",
        ),
        (
            {"kind": "linear", "start": 1.0, "end": 0.5, "steps": 5},
            r"aepo\.target_schedule: 'end' is not a key: the schedule ends at aepo\.target_entropy",
        ),
        (
            {"kind": "linear", "start": 1.0, "steps": 5, "warmup": 3},
            r"aepo\.target_schedule\.warmup: unknown key",
        ),
        ({"kind": "linear", "start": float("nan"), "steps": 5}, r"aepo\.target_schedule\.start"),
    ],
)
def test_bad_schedules_fail_naming_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        load_aepo_config({"target_schedule": raw})


def test_controller_decides_against_the_scheduled_target_of_the_step():
    cfg = load_aepo_config(
        {
            "target_entropy": 0.2,
            "target_schedule": {"kind": "linear", "start": 0.6, "steps": 4},
            "samples_up": 8,
            "samples_down": 4,
        }
    )
    step = AEPOStep(cfg.model_copy(update={"entropy_source": "current_batch"}))
    decisions = []
    for t in range(1, 6):  # 0.4: below 0.6 and 0.5, above 0.3 and 0.2
        decisions.append(step.measured(step.begin(t, **SHAPE), 0.4).plan.decision)
    assert [d.target for d in decisions] == pytest.approx([0.6, 0.5, 0.4, 0.3, 0.2])
    assert [d.direction for d in decisions] == [RAISE, RAISE, LOWER, LOWER, LOWER]
    assert [d.metrics()["aepo/target_entropy"] for d in decisions] == pytest.approx(
        [0.6, 0.5, 0.4, 0.3, 0.2]
    )
    state = step.state_dict()["controller"]
    assert (state["last_step"], state["last_target"]) == (5, pytest.approx(0.2))
    restored = AEPOStep(cfg)
    restored.load_state_dict(step.state_dict())
    assert (restored.last_step, restored.last_target) == (5, pytest.approx(0.2))


SHAPE = {"num_prompts": 16, "samples_per_prompt": 4}


def test_resume_mid_schedule_gives_the_same_targets_as_an_uninterrupted_run(tmp_path):
    from aepo.backends.local.checkpoint import latest_checkpoint
    from aepo.backends.local.metrics_log import read_metrics
    from aepo.backends.local.presets import tiny_run_config
    from aepo.backends.local.settings import run_config_from_dict
    from aepo.backends.local.trainer import LocalTrainer

    def config(out, algorithm):
        raw = tiny_run_config(
            algorithm,
            output_dir=str(out),
            steps=4,
            prompts_per_step=4,
            samples_per_prompt=4,
            mini_batches=2,
            save_every=2,
            progress=False,
            torch_threads=1,
            cache_dir=str(tmp_path / "cache"),
            warm_start={"steps": 100, "batch_size": 64, "valid_fraction": 1.0},
        )
        raw["aepo"]["target_entropy"] = 0.25
        raw["aepo"]["target_schedule"] = {"kind": "linear", "start": 0.55, "steps": 3}
        return run_config_from_dict(raw, source="test")

    expected = [0.55, 0.45, 0.35, 0.25]
    straight = LocalTrainer(config(tmp_path / "straight", "aepo")).fit()
    assert [h["aepo/target_entropy"] for h in straight] == pytest.approx(expected)

    cfg = config(tmp_path / "resumed", "aepo")
    LocalTrainer(cfg).fit(steps=2)
    path = latest_checkpoint(tmp_path / "resumed")
    second = LocalTrainer(cfg, resume_from=path)
    assert second.aepo.last_target == pytest.approx(0.45)  # saved with the controller
    resumed = second.fit()
    assert [h["step"] for h in resumed] == [3, 4]
    assert [h["aepo/target_entropy"] for h in resumed] == pytest.approx(expected[2:])
    logged = {m["step"]: m["aepo/target_entropy"] for m in read_metrics(tmp_path / "resumed")}
    assert [logged[s] for s in (1, 2, 3, 4)] == pytest.approx(expected)

    # An algorithm without a controller logs the target too: the line its entropy is judged by.
    grpo = LocalTrainer(config(tmp_path / "grpo", "grpo")).fit(steps=2)
    assert [h["aepo/target_entropy"] for h in grpo] == pytest.approx(expected[:2])
    assert "aepo/temperature" not in grpo[0]


def test_adaptive_entropy_chases_the_scheduled_target():
    cfg = load_aepo_config(
        {
            "algorithm": "adaptive_entropy",
            "target_entropy": 0.2,
            "target_schedule": {"kind": "linear", "start": 1.0, "steps": 4},
        }
    )
    step = AEPOStep(cfg)
    first = step.measured(step.begin(1, **SHAPE), 0.5)
    # 0.5 is below step 1's target (1.0): the coefficient grows and the bonus applies
    assert first.target == pytest.approx(1.0)
    assert first.entropy_bonus is None  # optimizer_step cadence: applied per optimizer step
    assert step.adaptive_entropy.applied(first.target) == step.adaptive_entropy.coef == 0.0
    step.adaptive_entropy.update(0.5, first.target)
    coef = step.adaptive_entropy.coef
    assert coef > 0 and step.adaptive_entropy.applied(first.target) == coef
    fifth = step.measured(step.begin(5, **SHAPE), 0.5)
    assert fifth.target == pytest.approx(0.2)
    assert step.adaptive_entropy.applied(fifth.target) == 0.0  # above the annealed target
    step.adaptive_entropy.update(0.5, fifth.target)
    assert step.adaptive_entropy.coef < coef
