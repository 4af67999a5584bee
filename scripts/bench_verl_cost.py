"""What AEPO costs per step over GRPO on verl, at the same shape, measured where it runs.

Runs GRPO and AEPO alternately (GRPO, AEPO, GRPO, AEPO, ...; so that a drift in the
machine's load hits both alike), each a fresh run of a few steps from the same model, and
prints the median step time and its phases (verl's ``timing_s/gen``, ``old_log_prob``,
``ref``, ``update_actor``), AEPO's extra generated tokens and worker calls, and AEPO/GRPO
ratios. The first step of each run is left out of the medians (it compiles, allocates, and
under ``previous_step`` AEPO's step 1 takes a second generation pass).

On your GPUs, with any verl overrides (the shipped config and the 7B model by default):

    python scripts/bench_verl_cost.py --steps 6 --repeats 2 -- \\
        data.train_files=... data.val_files=... trainer.n_gpus_per_node=8

Here, on verl's real CPU stack (needs .venv-e2e; the tiny built-in model, 64 prompts x 4 =
256 rows a step, through ``aepo.backends.verl.cpu_harness.e2e``; run it under ``flock
/tmp/aepo-ray.lock`` where several people share the machine):

    python scripts/bench_verl_cost.py --cpu --steps 5 --repeats 2

``--trainers legacy v1_sync v1_colocate_async`` runs the pairs on verl's trainers, interleaved,
and prints a table for each and their step times side by side (``trainer.use_v1``;
docs/verl_v1.md).

The REINFORCE rows' old-log-prob and reference passes (and, at step 1 or under
``current_batch``, the second generation) run inside ``timing_s/update_actor``; they are also
logged alone as ``aepo/extra_passes_s``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

PHASES = ("timing_s/step", "timing_s/gen", "timing_s/old_log_prob", "timing_s/ref")
PHASES += ("timing_s/update_actor", "timing_s/update_weights")
EXTRA = ("aepo/extra_gen_tokens", "aepo/extra_worker_calls", "aepo/extra_passes_s")
EXTRA += ("aepo/reinforce_samples",)
ALGORITHMS = ("grpo", "aepo")
TRAINERS = {
    "legacy": ["trainer.use_v1=false"],
    "v1_sync": ["trainer.use_v1=true", "trainer.v1.trainer_mode=sync"],
    "v1_colocate_async": ["trainer.use_v1=true", "trainer.v1.trainer_mode=colocate_async"],
}
"""verl's trainers (``trainer.use_v1``, ``trainer.v1.trainer_mode``), as overrides"""
CPU_TRAINER_OVERRIDES = {
    # verl's default of 8 TransferQueue storage units each hold a Ray CPU; the CPU cluster has 8
    "v1_sync": ["transfer_queue.backend.SimpleStorage.num_data_storage_units=1"],
    "v1_colocate_async": ["transfer_queue.backend.SimpleStorage.num_data_storage_units=1"],
}

# The CPU shape: 64 prompts x n = 4 = 256 rows, 2 mini-batches, AEPO's extra samples capped
# at 51 % of the GRPO rows; every run starts afresh and saves nothing.
CPU_PROMPTS = 64
CPU_OVERRIDES = (
    f"data.train_batch_size={CPU_PROMPTS}",
    "actor_rollout_ref.actor.ppo_mini_batch_size=32",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=32",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32",
    "actor_rollout_ref.rollout.max_num_seqs=256",
    "actor_rollout_ref.rollout.max_num_batched_tokens=4096",
    "aepo.extra_rollout.min_samples=0",
    "aepo.extra_rollout.max_fraction=0.51",
)
FRESH = (
    "trainer.resume_mode=disable",
    "trainer.save_freq=-1",
    "trainer.test_freq=-1",
    "trainer.val_before_train=false",
)


def unread_keys(algorithm: str, config_dir: Path, config_name: str, overrides) -> list[str]:
    """Hydra deletions of the ``aepo:`` keys the composed config sets away from their
    defaults and ``algorithm`` does not read: the config check refuses those (GRPO's run from
    an AEPO config). A key at its default stays (configs interpolate
    ``aepo.entropy_source``)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from aepo.core import AEPOConfig
    from aepo.core.config import READS

    with initialize_config_dir(str(Path(config_dir).resolve()), version_base=None):
        config = compose(config_name, overrides=[*overrides, f"aepo.algorithm={algorithm}"])
    section = OmegaConf.to_container(config.aepo, resolve=True)
    default = AEPOConfig.model_construct().model_dump(mode="json")

    def differs(value, default_value) -> bool:
        if isinstance(value, dict) and isinstance(default_value, dict):
            return any(differs(v, default_value.get(k)) for k, v in value.items())
        return value != default_value

    reads = READS[algorithm]
    return [
        f"~aepo.{key}"
        for key, value in section.items()
        if key not in reads and differs(value, default.get(key))
    ]


def cpu_overrides(algorithm: str) -> list[str]:
    """CPU_OVERRIDES for ``algorithm`` (without the ``aepo:`` keys it does not read), then
    the deletions :func:`unread_keys` finds in the CPU config."""
    from aepo.backends.verl.cpu_harness import e2e
    from aepo.core.config import READS

    reads = READS[algorithm]
    keep = [o for o in CPU_OVERRIDES if not o.startswith("aepo.") or o.split(".")[1] in reads]
    return [*keep, *unread_keys(algorithm, e2e.CONFIG_DIR, e2e.CONFIG_NAME, keep)]


def run_once(args, algorithm: str, name: str, log, trainer: str = "legacy") -> Path:
    """One run; returns its TensorBoard folder."""
    overrides = [f"aepo.algorithm={algorithm}", *FRESH, *TRAINERS[trainer], *args.overrides]
    if args.cpu:
        overrides = [*CPU_TRAINER_OVERRIDES.get(trainer, []), *overrides]
        from aepo.backends.verl.cpu_harness import e2e

        mode = "previous_step"
        overrides = [*cpu_overrides(algorithm), *overrides]
        code = e2e.run(mode, args.steps, args.output, overrides, name=name, log=log)
        folder = args.output / "tensorboard" / mode / name
    else:
        folder = (args.output / "tensorboard" / name).resolve()
        command = [
            sys.executable,
            "-m",
            "aepo.backends.verl.main",
            f"--config-path={args.config_path.resolve()}",
            f"--config-name={args.config_name}",
            f"trainer.total_training_steps={args.steps}",
            f"trainer.default_local_dir={(args.output / 'checkpoints' / name).resolve()}",
            "trainer.logger=[console,tensorboard]",
            *overrides,
            *unread_keys(algorithm, args.config_path, args.config_name, args.overrides),
        ]
        env = {**os.environ, "TENSORBOARD_DIR": str(folder)}
        code = subprocess.run(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        ).returncode
    if code != 0:
        raise SystemExit(f"{algorithm} run {name} exited with {code}: see {log.name}")
    return folder


def step_values(folder: Path, tags) -> dict[str, list[float]]:
    """Per tag, the values of steps 2.. (step 1 warms up)."""
    from aepo.plot.curves import load_scalars

    scalars = load_scalars(folder, tags=tags)
    return {tag: [float(v) for s, v in zip(*scalars[tag], strict=True) if s > 1] for tag in scalars}


def summarise(runs: dict[str, list[dict[str, list[float]]]]) -> dict[str, dict[str, float]]:
    """Per algorithm, the median over every measured step of every run of each tag."""
    table = {}
    for algorithm, per_run in runs.items():
        pooled: dict[str, list[float]] = {}
        for values in per_run:
            for tag, series in values.items():
                pooled.setdefault(tag, []).extend(series)
        table[algorithm] = {tag: statistics.median(v) for tag, v in pooled.items() if v}
    return table


def format_table(table: dict[str, dict[str, float]], steps_per_run: int, repeats: int) -> str:
    grpo, aepo = table["grpo"], table["aepo"]
    lines = [
        f"median over steps 2..{steps_per_run} of {repeats} run(s) each, GRPO and AEPO alternating",
        f"{'':28s} {'GRPO':>10s} {'AEPO':>10s} {'AEPO/GRPO':>10s}",
    ]
    for tag in PHASES:
        if tag in grpo or tag in aepo:
            g, a = grpo.get(tag, 0.0), aepo.get(tag, 0.0)
            ratio = f"{a / g:10.2f}" if g > 0 else f"{'-':>10s}"
            lines.append(f"{tag + ' (s)':28s} {g:10.3f} {a:10.3f} {ratio}")
    if "aepo/extra_gen_fraction" in aepo:
        extra = aepo["aepo/extra_gen_fraction"]
        lines.append(
            f"{'generated tokens (GRPO = 1)':28s} {1:10.2f} {1 + extra:10.2f} {1 + extra:10.2f}"
        )
    if "aepo/extra_worker_calls" in aepo:
        lines.append(
            f"{'extra worker calls / step':28s} {0:10.0f} {aepo['aepo/extra_worker_calls']:10.0f}"
        )
    if "aepo/extra_passes_s" in aepo:
        lines.append(
            f"{'AEPO passes in update (s)':28s} {'':10s} {aepo['aepo/extra_passes_s']:10.3f}"
        )
    if "aepo/reinforce_samples" in aepo:
        lines.append(
            f"{'REINFORCE rows / step':28s} {'':10s} {aepo['aepo/reinforce_samples']:10.1f}"
        )
    return "\n".join(lines)


def format_trainers(tables: dict[str, dict[str, dict[str, float]]]) -> str:
    """Median step time of GRPO and AEPO on each trainer, and AEPO/GRPO on each."""
    lines = ["", f"{'timing_s/step (s)':28s} {'GRPO':>10s} {'AEPO':>10s} {'AEPO/GRPO':>10s}"]
    for trainer, table in tables.items():
        g = table["grpo"].get("timing_s/step", 0.0)
        a = table["aepo"].get("timing_s/step", 0.0)
        ratio = f"{a / g:10.2f}" if g > 0 else f"{'-':>10s}"
        lines.append(f"{trainer:28s} {g:10.3f} {a:10.3f} {ratio}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="verl's real CPU stack (.venv-e2e)")
    parser.add_argument("--steps", type=int, default=5, help="steps per run (step 1 not timed)")
    parser.add_argument("--repeats", type=int, default=2, help="GRPO/AEPO pairs")
    parser.add_argument("--output", type=Path, default=Path("outputs/bench_verl_cost"))
    parser.add_argument("--config-path", type=Path, default=PROJECT_ROOT / "configs")
    parser.add_argument("--config-name", default="aepo_h0.5")
    parser.add_argument(
        "--trainers", nargs="+", choices=sorted(TRAINERS), default=["legacy"],
        help="verl's trainers to run the pairs on (trainer.use_v1), interleaved",
    )  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="verl/hydra overrides for both runs")
    args = parser.parse_args(argv)
    args.output = args.output.resolve()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (step 1 is not timed)")
    if args.cpu:
        import pandas as pd

        from aepo.backends.verl.cpu_harness import e2e
        from aepo.tasks import digit_sum

        e2e.prepare(args.output)
        rows = digit_sum.verl_rows(CPU_PROMPTS * args.steps, seed=0)
        pd.DataFrame(rows).to_parquet(args.output / "data" / "train.parquet")
    args.output.mkdir(parents=True, exist_ok=True)
    runs = {trainer: {name: [] for name in ALGORITHMS} for trainer in args.trainers}
    tags = (*PHASES, *EXTRA, "aepo/extra_gen_fraction")
    for repeat in range(args.repeats):
        for trainer in args.trainers:
            for algorithm in ALGORITHMS:
                name = (
                    f"{algorithm}_{repeat}"
                    if args.trainers == ["legacy"]
                    else f"{trainer}_{algorithm}_{repeat}"
                )
                log_path = args.output / f"{name}.log"
                print(f"running {name} ({args.steps} steps), log {log_path}", flush=True)
                with open(log_path, "w") as log:
                    folder = run_once(args, algorithm, name, log, trainer)
                values = step_values(folder, tags)
                runs[trainer][algorithm].append(values)
                step = values.get("timing_s/step", [])
                print(f"  {name}: step times {[round(v, 2) for v in step]}", flush=True)
    tables = {trainer: summarise(per_algorithm) for trainer, per_algorithm in runs.items()}
    for trainer, table in tables.items():
        print(f"\n{trainer} trainer")
        print(format_table(table, args.steps, args.repeats))
    if len(tables) > 1:
        print(format_trainers(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
