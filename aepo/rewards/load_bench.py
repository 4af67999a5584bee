"""The math reward under verl's load, measured in a Ray actor held to one core
(``scripts/bench_reward_load.py`` prints the table; ``tests/rewards/test_reward_in_ray.py`` runs a
small version). In the package so that Ray workers can import the actor class."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

DAPO = Path(__file__).resolve().parents[2] / "data" / "train" / "dapo17k.parquet"
"""DAPO-17k in the checkout's ``data/train`` (the wheel does not carry it), as the tests read it."""


BURNER = "(x+y+z)^{60}"
"""Sympy expands it against an integer ground truth: seconds of CPU, more than the budget."""


def budget_burner(index: int) -> str:
    """A response no text rule refuses whose comparison with an integer uses the whole CPU
    budget (sympy expands a 1,891-term polynomial): ``(x+y+z)^{60}+k``, distinct per
    ``index`` so that the verdict cache cannot answer it."""
    return f"The answer is \\boxed{{{BURNER}+{17 + index}}}."


def load_cases(
    calls: int, stall_every: int, seed: int = 0, burn_every: int = 0
) -> list[tuple[str, str, bool | None]]:
    """``calls`` distinct (response, ground truth, correct or None for a stall); one in
    ``stall_every`` is a stall the text rules refuse, one in ``burn_every`` (1: all) a
    :func:`budget_burner` (wrong, and stopped at the CPU budget)."""
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
        if burn_every and i % burn_every == 0:  # not where the stalls sit
            cases.append((budget_burner(i), truth, False))
            continue
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
        from aepo.rewards.math_reward import workers

        return workers().running

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

        from aepo.rewards.math_reward import reset_reward_counters, reward_counters, workers

        reset_reward_counters()
        workers().max_in_worker_s = 0.0  # the first check's start-up is not this load's
        load_before = os.getloadavg()[0]

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
        pool = workers()
        return {
            "pool": (pool.max_workers, pool.timeout_s, pool.cpu_budget_s),
            # against the wall clock: how close a call in its worker came to machine_busy
            "max_in_worker_s": pool.max_in_worker_s,
            "load": (load_before, os.getloadavg()[0]),
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
