"""The e2e run at a scale-out shape: two Ray nodes on one machine (docs/scale_out.md).

``python -m aepo.backends.verl.cpu_harness.scale_out run MODE --steps N`` starts a Ray cluster of two
nodes with ``ray.cluster_utils.Cluster`` (a head and a second raylet, one logical GPU each),
then runs ``python -m aepo.backends.verl.main`` on ``configs/e2e/verl_cpu.yaml`` with
``+shape=scale_out`` (``configs/e2e/shape/scale_out.yaml``): 2 data-parallel FSDP2 ranks, one
per node, 2 vLLM replicas, 2 agent-loop workers, dynamic batch sizes, the math reward.
Checkpoints go to ``outputs/e2e/checkpoints/scale_out/MODE`` (a second run with more steps
resumes), TensorBoard logs to ``outputs/e2e/tensorboard/scale_out/MODE/NAME`` and verl's
rollout dumps (with the reward's fields) to ``outputs/e2e/rollouts/scale_out/MODE/NAME``. Run
``python -m aepo.backends.verl.cpu_harness.e2e prepare`` first.

``--kill-at MOMENT --kill-step K`` SIGKILLs every process of the run (the driver, the Ray
nodes, their workers and vLLM's engine processes) at one moment of step K's checkpoint save:
``state`` (aepo_state.json written, verl's shards not yet), ``shards`` (the first actor shard
file on disk), ``saved`` (verl's latest-step file names K). It exits with ``KILLED``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from aepo.backends.verl.checkpoint import TRACKER_FILE
from aepo.backends.verl.cpu_harness import e2e

SHAPE_OVERRIDE = "+shape=scale_out"
NODES = 2
CPUS_PER_NODE = 4  # logical: Ray schedules by them; the machine may have fewer cores
# verl's V1 trainer adds TransferQueue's controller and its storage unit, each an actor holding
# one Ray CPU (`@ray.remote(num_cpus=1)` in transfer_queue's controller and simple storage).
# Without them counted, the second node cannot fit its FSDP bundle (1 GPU + 3 CPUs) and the
# run waits on its placement group forever.
V1_EXTRA_CPUS_PER_NODE = 2
V1_OVERRIDE = "trainer.use_v1=true"
OBJECT_STORE_BYTES = 512 << 20  # per node; Ray's default, 30 % of RAM, is for real jobs
KILLED = 137  # 128 + SIGKILL, what a shell reports for a process killed this way
KILL_MOMENTS = ("state", "shards", "saved")
# Ray prefixes a worker's lines with its actor class and pid; vLLM's AsyncLLM logs each
# request it adds (engine_kwargs.vllm.enable_log_requests in the shape's config).
VLLM_REQUEST = re.compile(r"\((\w+) pid=(\d+)(?:, ip=[^)]*)?\).*Added request")
PORT_RACE = b"EADDRINUSE"
PORT_RACE_ATTEMPTS = 3


def checkpoint_dir(output: Path, mode: str) -> Path:
    return output.resolve() / "checkpoints" / "scale_out" / mode


def tensorboard_dir(output: Path, mode: str) -> Path:
    """The TensorBoard folder of every scale-out run of ``mode`` (one sub-folder per name)."""
    return output.resolve() / "tensorboard" / "scale_out" / mode


def rollout_dir(output: Path, mode: str) -> Path:
    """verl's per-step JSONL dumps of the GRPO rows with their reward fields
    (``trainer.rollout_data_dir``), one sub-folder per run name."""
    return output.resolve() / "rollouts" / "scale_out" / mode


def run_command(
    mode: str, steps: int, output: Path, address: str, overrides=(), name: str = "run"
) -> list[str]:
    return e2e.run_command(
        mode,
        steps,
        output,
        [
            SHAPE_OVERRIDE,
            f"trainer.default_local_dir={checkpoint_dir(output, mode)}",
            f"trainer.rollout_data_dir={rollout_dir(output, mode) / name}",
            f"ray_kwargs.ray_init.address={address}",
            *overrides,
        ],
    )


def requests_per_replica(log_text: str) -> Counter:
    """The requests each vLLM replica (by its server actor's pid) added, from a run's log."""
    return Counter(pid for _, pid in VLLM_REQUEST.findall(log_text))


def _moment_reached(moment: str, folder: Path, step: int) -> bool:
    step_folder = folder / f"global_step_{step}"
    if moment == "state":
        return (step_folder / "aepo_state.json").exists()
    if moment == "shards":
        actor = step_folder / "actor"
        return actor.is_dir() and any(actor.iterdir())
    tracker = folder / TRACKER_FILE
    try:
        return tracker.read_text().strip() == str(step)
    except OSError:
        return False


def _kill_everything_started_here() -> int:
    """SIGKILL every descendant of this process at once (the driver, the GCS, both raylets,
    their workers, vLLM's engine processes): a crash of the whole job, nothing shuts down."""
    import psutil

    victims = psutil.Process().children(recursive=True)
    for process in victims:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=30)
    return len(victims)


def cpus_per_node(overrides) -> int:
    """The logical CPUs each node offers: V1 runs (``trainer.use_v1=true``) get
    TransferQueue's actors' CPUs on top."""
    return CPUS_PER_NODE + (V1_EXTRA_CPUS_PER_NODE if V1_OVERRIDE in overrides else 0)


def _start_cluster(num_cpus: int):
    from ray.cluster_utils import Cluster

    node = {"num_cpus": num_cpus, "num_gpus": 1, "object_store_memory": OBJECT_STORE_BYTES}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**node, "include_dashboard": False},
        shutdown_at_exit=True,
    )
    for _ in range(NODES - 1):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    return cluster


def _copy_output(stream, seen: dict) -> None:
    """The driver's output to ours, line by line, noting a lost port race."""
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
        if PORT_RACE in line:
            seen["port_race"] = True


def _attempt(mode, steps, output, overrides, name, env, kill_at, kill_step) -> tuple[int, bool]:
    """One cluster, one run; (exit code or KILLED, whether vLLM lost a port race)."""
    started = time.monotonic()
    cluster = _start_cluster(cpus_per_node(overrides))
    try:
        print(
            f"[scale_out] {NODES} Ray nodes at {cluster.address} "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )
        command = run_command(mode, steps, output, cluster.address, overrides, name)
        driver = subprocess.Popen(
            command,
            env=env,
            cwd=e2e.PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        seen = {"port_race": False}
        copier = threading.Thread(target=_copy_output, args=(driver.stdout, seen), daemon=True)
        copier.start()
        folder = checkpoint_dir(output, mode)
        while driver.poll() is None:
            if kill_at is not None and _moment_reached(kill_at, folder, kill_step):
                killed = _kill_everything_started_here()
                print(
                    f"[scale_out] SIGKILL at {kill_at} of step {kill_step}: {killed} processes",
                    flush=True,
                )
                return KILLED, False
            time.sleep(0.01)
        copier.join(timeout=30)
        if kill_at is not None:
            print(f"[scale_out] the run ended before {kill_at} of step {kill_step}", flush=True)
        return driver.returncode, seen["port_race"]
    finally:
        try:
            cluster.shutdown()
        except Exception as err:  # after a kill the nodes are already gone
            print(f"[scale_out] cluster shutdown: {err}", flush=True)
        print(f"[scale_out] done in {time.monotonic() - started:.0f} s", flush=True)


def launch(
    mode: str,
    steps: int,
    output: Path = e2e.DEFAULT_OUTPUT,
    overrides=(),
    name: str = "run",
    kill_at: str | None = None,
    kill_step: int | None = None,
) -> int:
    """Start the two-node cluster, run verl on it, stop the cluster; the run's exit code, or
    KILLED after a kill. Meant for a process of its own: the cluster's raylets hand this
    process's environment (the CPU platform's variables) to every worker.

    Both "nodes" share one host's ports: vLLM picks a free port for its workers' process
    group, releases it and binds it later, and a second replica (or any process on the
    machine) can take it in between (EADDRINUSE at engine start). Real nodes have a port
    space each, so a run that lost that race starts again on a fresh cluster (resuming from
    its latest checkpoint), up to PORT_RACE_ATTEMPTS times, and says so."""
    env = e2e.run_environment(mode, output, name)
    env["TENSORBOARD_DIR"] = str(tensorboard_dir(output, mode) / name)
    os.environ.update(env)
    for attempt in range(1, PORT_RACE_ATTEMPTS + 1):
        code, port_race = _attempt(mode, steps, output, overrides, name, env, kill_at, kill_step)
        if code == 0 or not port_race or attempt == PORT_RACE_ATTEMPTS:
            return code
        print(
            f"[scale_out] vLLM lost a port race on this one host (EADDRINUSE): starting "
            f"again, attempt {attempt + 1} of {PORT_RACE_ATTEMPTS}",
            flush=True,
        )
    return code


def run(
    mode: str,
    steps: int,
    output: Path = e2e.DEFAULT_OUTPUT,
    overrides=(),
    name: str = "run",
    log=None,
    kill_at: str | None = None,
    kill_step: int | None = None,
) -> int:
    """:func:`launch` in a process of its own (its environment is the cluster's); the exit
    code."""
    # The overrides right after the mode: argparse takes positionals before the options.
    command = [sys.executable, "-m", __name__, "--output", str(output), "run", mode]
    command += [*overrides, "--steps", str(steps), "--name", name]
    if kill_at is not None:
        command += ["--kill-at", kill_at, "--kill-step", str(kill_step)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(e2e.PROJECT_ROOT), env.get("PYTHONPATH")])
    )
    return subprocess.run(
        command,
        env=env,
        cwd=e2e.PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        check=False,
    ).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=e2e.DEFAULT_OUTPUT)
    sub = parser.add_subparsers(dest="command", required=True)
    runner = sub.add_parser(
        "run", help="train on two Ray nodes (resumes from the latest checkpoint)"
    )
    runner.add_argument("mode", choices=["previous_step", "current_batch"])
    runner.add_argument("--steps", type=int, default=2, help="train up to this step")
    runner.add_argument("--name", default="run", help="TensorBoard folder under scale_out/MODE")
    runner.add_argument("--kill-at", choices=KILL_MOMENTS, help="SIGKILL the run at this moment")
    runner.add_argument("--kill-step", type=int, help="... of this step's checkpoint save")
    runner.add_argument("overrides", nargs="*", help="more verl/hydra overrides")
    args = parser.parse_args(argv)
    if (args.kill_at is None) != (args.kill_step is None):
        parser.error("--kill-at and --kill-step go together")
    return launch(
        args.mode, args.steps, args.output, args.overrides, args.name, args.kill_at, args.kill_step
    )


if __name__ == "__main__":
    sys.exit(main())
