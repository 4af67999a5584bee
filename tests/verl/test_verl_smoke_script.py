"""scripts/gpu_smoke_fsdp_update.py with verl's real FSDP worker, on a CPU stand-in
for CUDA (aepo/backends/verl/cpu_harness/cpu_platform.py): the GPU smoke check's own logic, the worker's
TensorDict protocol and the driver-side AEPO step, short of CUDA kernels and FSDP1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("verl")

ROOT = Path(__file__).resolve().parents[2]

RUN = """
import sys
sys.path[:0] = [{root!r}, {scripts!r}]
from aepo.backends.verl.cpu_harness.cpu_platform import install
install()
import gpu_smoke_fsdp_update as smoke
sys.exit(smoke.main(sys.argv[1:], device="cuda"))
"""


def run_on_cpu_standin(program: str, *args: str) -> str:
    """Run ``program`` (RUN or REF_PASS) in a fresh process with the CPU stand-in for CUDA;
    asserts it succeeded and returns its stdout."""
    code = program.format(root=str(ROOT), scripts=str(ROOT / "scripts"))
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.parametrize(
    "dynamic_bsz,aepo",
    [
        ("false", "aepo.algorithm=aepo"),
        ("true", "aepo.entropy_source=current_batch"),
        ("false", "aepo.algorithm=entropy_adv"),
    ],
)
def test_smoke_script_passes_with_the_real_worker_on_cpu(dynamic_bsz, aepo):
    overrides = [
        aepo,
        "actor_rollout_ref.actor.strategy=fsdp2",
        f"actor_rollout_ref.actor.use_dynamic_bsz={dynamic_bsz}",
        # no attn_implementation: the script must pick sdpa itself without flash-attn
    ]
    stdout = run_on_cpu_standin(RUN, "--steps", "2", *overrides)
    steps = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"step"')]
    assert [s["step"] for s in steps] == [1, 2]
    for s in steps:
        assert s["update_rows"] == 16
        assert 0 < s["entropy"] <= 4.16  # log(64): the tiny model's vocabulary
    if "entropy_adv" in aepo:
        # No controller: of the aepo/ scalars only the step's target (logged for every algorithm).
        assert sorted(k for k in steps[1] if k.startswith("aepo/")) == [
            "aepo/target_entropy",
            "aepo/target_high",
            "aepo/target_low",
        ]
        assert steps[1]["aepo/target_entropy"] == 0.5
        return
    assert all(s["aepo/reinforce_samples"] > 0 for s in steps)
    # The push was sized from the token-mean entropy the smoke reports for this step, in
    # both modes (previous_step chose the temperature from the previous step's, then settled
    # the push from this one).
    assert steps[1]["aepo/entropy"] == pytest.approx(steps[1]["entropy"], rel=1e-4)


# verl's real FSDP2 actor and reference workers in this process, behind worker groups that
# count the rows of each call, and a trainer built without Ray around them.
WORKERS = """
import copy, json, sys, tempfile
from pathlib import Path
sys.path[:0] = [{root!r}, {scripts!r}]
from aepo.backends.verl.cpu_harness.cpu_platform import install
install()
import torch
import numpy as np
from verl import DataProto
from verl.workers.engine_workers import ActorRolloutRefWorker
import gpu_smoke_fsdp_update as smoke
from aepo.backends.verl.log_prob_passes import add_reinforce_log_probs
from aepo.backends.verl.trainer import AEPORayTrainer, aepo_config_from

model = tempfile.mkdtemp()
smoke.write_tiny_model(Path(model))
cfg = smoke.compose_config(model, "cuda", sys.argv[1:])
workers = {{}}
for role in ("actor", "ref"):  # each worker pops keys from its copy of the config
    workers[role] = ActorRolloutRefWorker(config=copy.deepcopy(cfg).actor_rollout_ref, role=role)
    workers[role].init_model()


class Group:
    def __init__(self, worker, mesh):
        self.worker, self._dispatch_info, self.rows = worker, {{mesh: [0]}}, []

    def compute_log_prob(self, td):
        self.rows.append(len(td["response_mask"]))
        return self.worker.compute_log_prob(td)

    def compute_ref_log_prob(self, td):
        self.rows.append(len(td["response_mask"]))
        return self.worker.compute_ref_log_prob(td)


trainer = object.__new__(AEPORayTrainer)
trainer.config = cfg
trainer.setup_aepo(aepo_config_from(cfg))
trainer.actor_rollout_wg = Group(workers["actor"], "actor")
trainer.ref_policy_wg = Group(workers["ref"], "ref")
trainer.ref_in_actor = False
"""


REF_PASS = (
    WORKERS
    + """rows = smoke.RandomRollout(64).generate_sequences(
    DataProto.from_single_dict({{"index": np.arange(5)}})
)
rows.meta_info = {{"temperature": 1.0}}
rows.batch["old_log_probs"] = torch.zeros(5, smoke.RESPONSE_LEN)
rows.batch["ref_log_prob"] = torch.ones(5, smoke.RESPONSE_LEN)
add_reinforce_log_probs(trainer, rows)
mask = rows.batch["response_mask"].bool()
old, ref = rows.batch["old_log_probs"][mask], rows.batch["ref_log_prob"][mask]
print(json.dumps({{
    "actor_rows": trainer.actor_rollout_wg.rows,
    "ref_rows": trainer.ref_policy_wg.rows,
    "old_mean": float(old.mean()),
    "gap": float((old - ref).abs().max()),
}}))
"""
)


def test_aepo_rows_get_old_and_ref_log_probs_from_the_real_workers_on_cpu():
    # Actor and reference workers with different micro-batch sizes (4 and 3): the AEPO rows'
    # passes are padded to whole micro-batches of both (engine/utils.py:124-127).
    overrides = [
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.ref.strategy=fsdp2",
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=3",
    ]
    stdout = run_on_cpu_standin(REF_PASS, *overrides)
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["actor_rows"] == out["ref_rows"] == [12]  # 5 rows -> lcm(1 * 4, 1 * 3)
    assert -4.2 < out["old_mean"] < 0  # log-probs over a 64-token vocabulary
    assert out["gap"] == pytest.approx(0.0, abs=1e-5)  # same weights, same temperature


def test_trained_checkpoint_merges_into_a_model_aepo_eval_reads(tmp_path, repo_data):
    """The hand-over from training (docs/eval.md) to evaluation: the real worker saves the actor as
    fit() does, verl's model_merger turns it into a Hugging Face model holding exactly the
    trained weights, and `aepo eval --backend hf` runs on it."""
    from aepo.cli import main as aepo_cli

    overrides = [
        "actor_rollout_ref.actor.strategy=fsdp2",
        # large enough for two updates to show in the merged model's bf16 weights
        "actor_rollout_ref.actor.optim.lr=1e-2",
    ]
    save = tmp_path / "run"
    stdout = run_on_cpu_standin(RUN, "--steps", "2", "--save-dir", str(save), *overrides)
    merged = json.loads(stdout.strip().splitlines()[-1])
    assert merged["merged"] == str(save / "hf")
    assert merged["equal_to_live_weights"] == merged["tensors"] > 0
    assert merged["changed_by_training"] > 0
    assert (save / "global_step_2" / "actor" / "huggingface" / "config.json").is_file()

    out = tmp_path / "eval"
    eval_args = ["--benchmarks", "gsm8k", "--limit", "2", "--n", "2", "--max-tokens", "4"]
    assert (
        aepo_cli(
            ["eval", "--model", str(save / "hf"), "--backend", "hf", "--device", "cpu"]
            + eval_args
            + ["--eval-dir", str(repo_data / "eval"), "--output", str(out), "--no-progress"]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] and results["benchmarks"]["gsm8k"]["problems"] == 2
