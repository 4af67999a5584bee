"""AEPO on verl's real stack at a scale-out shape on a CPU (``make e2e``; skipped elsewhere).

``python -m aepo.backends.verl.cpu_harness.scale_out``: a Ray cluster of two nodes on this machine
(``ray.cluster_utils.Cluster``), the actor and reference workers as 2 data-parallel FSDP2
ranks (one per node, gloo), 2 vLLM replicas of tensor-parallel size 1, 2 agent-loop workers,
dynamic batch sizes with a budget of 16 tokens per micro-batch, the math reward
(``aepo.rewards.math_reward`` via ``digit_sum.compute_boxed_math_score``) in verl's reward
loop, a checkpoint and a resume. Assertions read the TensorBoard logs the trainer actor wrote
and the run's own log (docs/scale_out.md).
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter

import numpy as np
import pytest

from aepo.backends.verl.checkpoint import RESUMED_PREFIX, read_state, state_summary
from aepo.backends.verl.cpu_harness import e2e, scale_out
from aepo.plot.curves import load_scalars
from aepo.tasks import digit_sum
from tests.e2e.run_checks import (
    check_extra_worker_calls,
    check_extras_at_the_controllers_temperature,
    check_scalars_at_every_step,
    scalar,
)

OUTPUT = e2e.PROJECT_ROOT / e2e.DEFAULT_OUTPUT
MODE = "previous_step"  # the mode that resumes
STEPS = 2  # first run, checkpoint at the last step (save_freq 2)
RESUMED_STEPS = 3
# configs/e2e/shape/scale_out.yaml
PROMPTS, N, MINI_BATCH_PROMPTS, DP, TOKEN_BUDGET = 4, 4, 2, 2, 16

TAGS = (
    "aepo/entropy",
    "aepo/temperature_entropy",
    "aepo/temperature",
    "aepo/target_entropy",
    "aepo/budget",
    "aepo/extra_samples",
    "aepo/extra_rollout_nll",
    "aepo/extra_worker_calls",
    "aepo/reinforce_samples",
    "aepo/reinforce_rows_dp0",
    "aepo/reinforce_rows_dp1",
    "aepo/positive_rate",
    "actor/entropy",
    "actor/ppo_kl",
    "training/global_step",
    "training/rollout_probs_diff_mean",
    "critic/score/mean",
    "global_seqlen/min",
)


# run name -> (entropy_source, train up to step); "resumed" continues "run"'s checkpoint.
# current_batch at this shape runs in `make e2e-long` (make e2e runs it at the one-rank shape),
# which keeps make e2e's runs to what only this shape shows.
RUNS = {
    "run": ("previous_step", STEPS),
    "resumed": ("previous_step", RESUMED_STEPS),
}
LONG_RUNS = {"current_batch": ("current_batch", STEPS)}


def _train(name: str) -> tuple[dict, str]:
    mode, steps = {**RUNS, **LONG_RUNS}[name]
    logs = OUTPUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"scale_out-{mode}-{name}.log"
    with log_path.open("w") as log:
        code = scale_out.run(mode, steps, OUTPUT, name=name, log=log)
    text = log_path.read_text(errors="replace")
    if code != 0:
        pytest.fail(f"scale-out run {name!r} exited {code} (full log: {log_path}):\n{text[-6000:]}")
    return load_scalars(scale_out.tensorboard_dir(OUTPUT, mode) / name, tags=TAGS), text


def _fresh(names) -> dict:
    e2e.prepare(OUTPUT)
    for mode in {({**RUNS, **LONG_RUNS})[name][0] for name in names}:
        for folder in (scale_out.tensorboard_dir, scale_out.checkpoint_dir, scale_out.rollout_dir):
            shutil.rmtree(folder(OUTPUT, mode), ignore_errors=True)
    result = {"logs": {}}
    for name in names:
        result[name], result["logs"][name] = _train(name)
    return result


@pytest.fixture(scope="module")
def runs() -> dict:
    """previous_step to step 2 (checkpoint), resumed to step 3."""
    return _fresh(RUNS)


@pytest.mark.e2e_long
def test_current_batch_at_the_scale_out_shape():
    """current_batch to step 2: the extras' second generation after the measurement, over
    both replicas, and its REINFORCE rows over both ranks."""
    runs = _fresh(LONG_RUNS)
    run = runs["current_batch"]
    for tag in TAGS:
        if tag.startswith("aepo/"):
            assert sorted(scalar(run, tag)) == list(range(1, STEPS + 1)), tag
    served = scale_out.requests_per_replica(runs["logs"]["current_batch"])
    extras = scalar(run, "aepo/extra_samples").values()
    assert sum(served.values()) == sum(PROMPTS * N + e for e in extras), served
    assert len(served) == DP and min(served.values()) > 0, served
    for step, merged in scalar(run, "aepo/reinforce_samples").items():
        ranks = [scalar(run, f"aepo/reinforce_rows_dp{r}")[step] for r in range(DP)]
        assert sum(ranks) == merged, (step, ranks, merged)
    diff = scalar(run, "training/rollout_probs_diff_mean")
    assert all(np.isfinite(v) and v < 0.01 for v in diff.values()), diff


def _steps(name: str) -> list[int]:
    return [RESUMED_STEPS] if name == "resumed" else list(range(1, STEPS + 1))


@pytest.mark.e2e
def test_aepo_scalars_at_every_step(runs):
    for name in RUNS:
        check_scalars_at_every_step(runs[name], _steps(name), TAGS)


@pytest.mark.e2e
def test_extras_at_the_controllers_temperature_with_passes_of_their_own(runs):
    """As at one node (tests/e2e/test_e2e_verl_cpu.py, which runs previous_step there only
    in make e2e-long): vLLM's log-probs of the extras say they were drawn at the chosen
    temperature on both replicas, and each step with REINFORCE rows makes their two passes;
    step 1 of a fresh run also generates its extras after the measurement."""
    for name in RUNS:
        check_extras_at_the_controllers_temperature(runs[name])
        first_step = 1 if name == "run" else None
        check_extra_worker_calls(runs[name], second_generation=lambda s, f=first_step: s == f)


@pytest.mark.e2e
def test_reinforce_rows_reach_both_ranks_updates(runs):
    """The merged REINFORCE rows split over the two FSDP ranks' chunks of the update batch
    (aepo/reinforce_rows_dpR: rank R's contiguous chunk, verl's nd-dispatch), and over the
    three steps each rank trains on some."""
    per_rank = Counter()
    for name in RUNS:
        run = runs[name]
        for step, merged in scalar(run, "aepo/reinforce_samples").items():
            ranks = [scalar(run, f"aepo/reinforce_rows_dp{r}")[step] for r in range(DP)]
            assert sum(ranks) == merged, (name, step, ranks, merged)
            per_rank.update({r: v for r, v in enumerate(ranks)})
    assert all(per_rank[r] > 0 for r in range(DP)), per_rank


@pytest.mark.e2e
def test_both_vllm_replicas_serve_requests(runs):
    """Each replica (a vLLM server actor needing one logical GPU, so one per node) logs the
    requests it adds: every GRPO and extra sample was one request, and both replicas
    served some in every run (verl's load balancer, called from both agent-loop workers)."""
    for name, text in runs["logs"].items():
        served = scale_out.requests_per_replica(text)
        extras = scalar(runs[name], "aepo/extra_samples").values()
        assert sum(served.values()) == sum(PROMPTS * N + e for e in extras), (name, served)
        assert len(served) == DP and min(served.values()) > 0, (name, served)


@pytest.mark.e2e
def test_dynamic_batch_sizes_cut_each_ranks_mini_batch(runs):
    """verl logs no micro-batch count. It logs each rank's tokens of the step's GRPO batch
    (global_seqlen/min, the smallest rank's share after balancing); with use_dynamic_bsz a
    rank cuts each of its mini-batches into at least ceil(tokens / budget) micro-batches
    (seqlen_balancing.rearrange_micro_batches). Each rank's mini-batch holds more tokens
    than one budget, so every update and log-prob pass ran several micro-batches per rank."""
    mini_batches = PROMPTS // MINI_BATCH_PROMPTS
    for name in RUNS:
        for step, tokens in scalar(runs[name], "global_seqlen/min").items():
            assert tokens / mini_batches > TOKEN_BUDGET, (name, step, tokens)


@pytest.mark.e2e
def test_math_reward_scores_in_verls_reward_loop(runs):
    """verl's rollout dumps carry the math reward's own fields (pred, format_ok,
    unparseable) for every GRPO row, and its verdict on each boxed answer agrees with the
    digit-sum rule wherever the answer has the task's form (the math reward also accepts
    other sums, which the warm-started model does not write)."""
    rows = [
        json.loads(line)
        for name, (mode, _) in RUNS.items()
        for path in sorted((scale_out.rollout_dir(OUTPUT, mode) / name).glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    assert len(rows) == sum(len(_steps(name)) for name in RUNS) * PROMPTS * N, len(rows)
    in_form = 0
    for row in rows:
        assert {"pred", "format_ok", "unparseable"} <= set(row), sorted(row)
        assert row["pred"] == row["output"].strip(), row
        if re.fullmatch(r"\d\+\d", row["output"].strip()):
            in_form += 1
            assert row["score"] == digit_sum.reward(row["output"], row["gts"]), row
    assert in_form > len(rows) // 2, (in_form, len(rows))
    scores = [row["score"] for row in rows]
    assert 0 < sum(scores) < len(scores), scores


@pytest.mark.e2e
def test_vllm_and_fsdp_log_probs_agree(runs):
    for name in RUNS:
        diff = scalar(runs[name], "training/rollout_probs_diff_mean")
        assert all(np.isfinite(v) and v < 0.01 for v in diff.values()), (name, diff)
    drift = max(v for n in RUNS for v in scalar(runs[n], "actor/ppo_kl").values())
    diff = max(
        v for n in RUNS for v in scalar(runs[n], "training/rollout_probs_diff_mean").values()
    )
    assert drift > 5 * diff, (drift, diff)


@pytest.mark.e2e
def test_resume_continues_the_step_count_and_the_controller_state(runs):
    first, resumed = runs["run"], runs["resumed"]
    assert scalar(resumed, "training/global_step") == {RESUMED_STEPS: RESUMED_STEPS}
    decided_on = scalar(resumed, "aepo/temperature_entropy")[RESUMED_STEPS]
    assert decided_on == pytest.approx(scalar(first, "actor/entropy")[STEPS], abs=1e-4)
    assert decided_on != pytest.approx(scalar(resumed, "actor/entropy")[RESUMED_STEPS], abs=1e-4)
    # The trainer prints the AEPO state it restored: the checkpoint's, all of it.
    folder = scale_out.checkpoint_dir(OUTPUT, MODE) / f"global_step_{STEPS}"
    lines = [line for line in runs["logs"]["resumed"].splitlines() if RESUMED_PREFIX in line]
    assert len(lines) == 1, lines
    path, restored = lines[0].split(RESUMED_PREFIX, 1)[1].strip().split(" ", 1)
    assert path == str(folder / "aepo_state.json")
    assert json.loads(restored) == state_summary(read_state(str(folder)))


def test_the_scale_out_shape_passes_verls_and_the_start_up_checks(tmp_path):
    """Main suite (no vLLM needed): the shape composes over the e2e config with the
    launcher's overrides, passes the plug-in's checks and verl's own validation (dynamic
    batch sizes, 2 ranks over 2 nodes), and names the boxed math reward."""
    pytest.importorskip("verl")
    import pandas as pd
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from aepo.backends.verl.run_config import per_request_seed
    from aepo.backends.verl.startup import check_config
    from aepo.tasks.tiny_model import save_tiny_model

    save_tiny_model(tmp_path / "model")
    (tmp_path / "data").mkdir()
    pd.DataFrame(digit_sum.verl_rows(e2e.TRAIN_ROWS)).to_parquet(tmp_path / "data/train.parquet")
    pd.DataFrame(digit_sum.verl_rows(e2e.VAL_ROWS)).to_parquet(tmp_path / "data/val.parquet")
    overrides = scale_out.run_command(MODE, 3, tmp_path, "127.0.0.1:6379")[5:]
    with initialize_config_dir(str(e2e.CONFIG_DIR), version_base=None):
        config = compose(e2e.CONFIG_NAME, overrides=overrides)
    check_config(config)
    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    assert (config.trainer.nnodes, config.trainer.n_gpus_per_node) == (2, 1)
    assert config.actor_rollout_ref.rollout.agent.num_workers == 2
    assert config.actor_rollout_ref.rollout.tensor_model_parallel_size == 1
    for section, key in (("actor", "ppo_max_token_len_per_gpu"), ("ref", None), ("rollout", None)):
        part = config.actor_rollout_ref[section]
        if key is None:
            assert part.log_prob_use_dynamic_bsz and part.log_prob_max_token_len_per_gpu == 16
        else:
            assert part.use_dynamic_bsz and part[key] == TOKEN_BUDGET
    assert config.reward.custom_reward_function.name == "compute_boxed_math_score"
    # every request its own vLLM seed, read from verl's rollout section (not aepo:)
    assert per_request_seed(config) and "per_request_seed" not in config.aepo
    assert config.ray_kwargs.ray_init.address == "127.0.0.1:6379"
    assert config.trainer.default_local_dir == str(scale_out.checkpoint_dir(tmp_path, MODE))


def test_each_node_fits_its_fsdp_bundle_beside_transferqueues_actors():
    """Main suite. A node of the scale-out cluster holds one FSDP bundle (1 GPU and verl's
    ``max_colocate_count`` CPUs) and, on V1, may also get TransferQueue's controller and
    storage unit (one Ray CPU each; the e2e configs keep 1 unit). With 4 CPUs a node V1 run
    waited on its second bundle for ever (found running it); legacy runs keep 4."""
    pytest.importorskip("verl")
    from verl.single_controller.ray.base import ResourcePoolManager

    bundle = ResourcePoolManager.__dataclass_fields__["max_colocate_count"].default
    transfer_queue_actors = 2  # controller + 1 storage unit
    v1 = ["trainer.use_v1=true", "trainer.v1.trainer_mode=sync"]
    assert scale_out.cpus_per_node(v1) >= bundle + transfer_queue_actors
    assert scale_out.cpus_per_node(["trainer.use_v1=false"]) == scale_out.CPUS_PER_NODE
