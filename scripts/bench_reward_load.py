"""The math reward under verl's load: 32 threads scoring at once in a Ray actor held to one
core, for each checking-pool size and wall-clock limit; prints how many correct answers
scored 0 only because the machine was busy (``machine_busy``).

verl 0.9.1's reward workers score a batch from up to 32 threads each, on whatever CPU the node
has left beside the GPUs' host processes; one core is the worst case we size for. The answers
are DAPO-17k ground truths (integers) written in forms only math-verify settles
(``\\frac{2N}{2}``, ``N.0``, ``\\sqrt{N^2}``, and wrong ones), every pair distinct so the
reward's verdict cache does not answer them, with one answer in ``--stall-every`` taken from
the adversarial inputs that use their whole CPU budget. The actor loads the reward the way
verl does (``get_custom_reward_fn``) and is pinned to one core with ``sched_setaffinity`` as
well as ``num_cpus=1``, so the checking processes it starts share that core.

    .venv/bin/python scripts/bench_reward_load.py                      # the full table
    .venv/bin/python scripts/bench_reward_load.py --workers 4 --timeouts 5 --calls 64

Run it under ``flock /tmp/aepo-ray.lock`` where several people share the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
DAPO = PROJECT_ROOT.parent / "shared" / "data" / "train" / "dapo17k.parquet"


def load_cases(calls: int, stall_every: int, seed: int = 0) -> list[tuple[str, str, bool | None]]:
    """``calls`` distinct (response, ground truth, correct or None for a stall)."""
    import random

    import pandas as pd

    from aepo.rewards.adversarial import STALLS

    truths = [str(a).strip() for a in pd.read_parquet(DAPO, columns=["answer"])["answer"]]
    truths = [t for t in dict.fromkeys(truths) if t.lstrip("-").isdigit()]
    rng = random.Random(seed)
    rng.shuffle(truths)
    stalls = [s for s, _ in STALLS[:4] + STALLS[6:10]]
    forms = [
        (lambda n: f"\\frac{{{2 * n}}}{{2}}", True),
        (lambda n: f"{n}.0", True),
        (lambda n: f"\\sqrt{{{n * n}}}" if n >= 0 else f"-\\sqrt{{{n * n}}}", True),
        (lambda n: f"\\frac{{{2 * n + 1}}}{{2}}", False),
    ]
    cases = []
    for i in range(calls):
        truth = truths[i % len(truths)]
        if stall_every and i % stall_every == stall_every - 1:
            # a distinct ground truth per call: the verdict cache must not answer it
            cases.append((stalls[i % len(stalls)], f"{truth}", None))
            continue
        form, correct = forms[i % len(forms)]
        cases.append((f"The answer is \\boxed{{{form(int(truth))}}}.", truth, correct))
    return cases


class RewardUnderLoad:
    """Loads the reward like verl's reward worker, on one core."""

    def __init__(self, core: int | None):
        if core is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {core})
        started = time.perf_counter()
        from omegaconf import OmegaConf
        from verl.trainer.ppo.reward import get_custom_reward_fn

        self.compute_score = get_custom_reward_fn(
            OmegaConf.create(
                {
                    "reward": {
                        "custom_reward_function": {
                            "path": "pkg://aepo.rewards.math_reward",
                            "name": "compute_score",
                            "reward_kwargs": {},
                        }
                    }
                }
            )
        )
        self.load_s = time.perf_counter() - started

    def pool_started(self) -> bool:
        from aepo.rewards import sandbox

        pool = sandbox.pool()
        return pool._template is not None and pool._template.poll() is None

    def first_check_s(self, wait_s: float) -> float:
        """Seconds the first symbolic check takes, ``wait_s`` after the reward loaded."""
        time.sleep(wait_s)
        started = time.perf_counter()
        self.compute_score(
            data_source="math", solution_str="\\boxed{\\frac{4}{2}}", ground_truth="2"
        )
        return time.perf_counter() - started

    def score(self, cases, threads: int) -> dict:
        from concurrent.futures import ThreadPoolExecutor

        from aepo.rewards.math_reward import reset_reward_counters, reward_counters

        reset_reward_counters()

        def one(case):
            response, truth, _ = case
            started = time.perf_counter()
            result = self.compute_score(
                data_source="math", solution_str=response, ground_truth=truth
            )
            return result["score"], time.perf_counter() - started

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(one, cases))
        wall = time.perf_counter() - started
        counters = reward_counters()
        wrong = sum(
            1
            for (_, _, correct), (score, _) in zip(cases, results, strict=True)
            if correct is not None and (score == 1.0) != correct
        )
        latencies = sorted(latency for _, latency in results)
        return {
            "wall_s": wall,
            "machine_busy": counters["machine_busy"],
            "timed_out": counters["timed_out"],
            "wrong": wrong,
            "p50_s": statistics.median(latencies),
            "max_s": latencies[-1],
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        }


def measure(
    workers: int, timeout_s: float, cases, threads: int, core: int | None, warm_up: bool = True
) -> dict:
    import ray

    env = {"AEPO_REWARD_WORKERS": str(workers), "AEPO_REWARD_TIMEOUT": str(timeout_s)}
    env["AEPO_REWARD_WARM_UP"] = "1" if warm_up else "0"
    actor = (
        ray.remote(num_cpus=1)(RewardUnderLoad).options(runtime_env={"env_vars": env}).remote(core)
    )
    try:
        first = ray.get(actor.first_check_s.remote(3.0), timeout=600)
        row = ray.get(actor.score.remote(cases, threads), timeout=1800)
        row["first_check_s"] = first
        return row
    finally:
        ray.kill(actor)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4,8", help="checking-pool sizes")
    parser.add_argument("--timeouts", default="5,10,20", help="wall-clock limits (s)")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--calls", type=int, default=256, help="distinct answers per setting")
    parser.add_argument("--stall-every", type=int, default=32, help="0: no adversarial answers")
    parser.add_argument("--core", type=int, default=0, help="the core the actor is pinned to")
    parser.add_argument(
        "--no-warm-up", action="store_true", help="start the checking process at the first call"
    )
    args = parser.parse_args(argv)
    import ray

    cases = load_cases(args.calls, args.stall_every)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}},
    )
    print(
        f"{args.threads} threads, {len(cases)} answers ({sum(c[2] is None for c in cases)} "
        f"adversarial), one Ray actor with num_cpus=1 pinned to core {args.core}"
    )
    header = (
        f"{'workers':>7s} {'timeout_s':>9s} {'machine_busy':>12s} {'timed_out':>9s} "
        f"{'wrong':>5s} {'wall_s':>7s} {'p50_s':>6s} {'max_s':>6s} {'first_check_s':>13s}"
    )
    print(header, flush=True)
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            for timeout_s in [float(t) for t in args.timeouts.split(",")]:
                row = measure(
                    workers, timeout_s, cases, args.threads, args.core, not args.no_warm_up
                )
                print(
                    f"{workers:7d} {timeout_s:9.1f} {row['machine_busy']:12d} "
                    f"{row['timed_out']:9d} {row['wrong']:5d} {row['wall_s']:7.1f} "
                    f"{row['p50_s']:6.2f} {row['max_s']:6.2f} {row['first_check_s']:13.2f}",
                    flush=True,
                )
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
