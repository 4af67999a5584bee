"""The math reward inside a Ray actor, loaded the way verl 0.9.1 loads a custom reward
function, scored from threads as verl's reward loop does: the same verdicts as in this
process, and no checking process left behind when the actor is killed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from aepo.rewards.adversarial import FALSE_POSITIVES, ORDINARY, STALLS  # noqa: E402

CASES = [(f"\\boxed{{{answer}}}", truth) for answer, truth, _ in ORDINARY]
CASES += STALLS[:4] + STALLS[6:10] + FALSE_POSITIVES


def verl_reward_function():
    """``reward.custom_reward_function`` as the shipped verl config sets it, loaded by verl."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
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
    return get_custom_reward_fn(config)


def score_from_threads(cases) -> list[float]:
    from concurrent.futures import ThreadPoolExecutor

    compute_score = verl_reward_function()
    with ThreadPoolExecutor(4) as threads:
        return list(
            threads.map(
                lambda case: compute_score(
                    data_source="math", solution_str=case[0], ground_truth=case[1]
                )["score"],
                cases,
            )
        )


class RewardActor:
    def score(self, cases) -> list[float]:
        return score_from_threads(cases)

    def checking_processes(self) -> dict:
        from aepo.rewards import math_reward

        pool = math_reward.workers()
        return {
            "actor": __import__("os").getpid(),
            "template": pool.template_pid,
            "workers": pool.idle_worker_pids(),
        }


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for whoever adopted it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_verdicts_in_a_ray_actor_equal_the_drivers_and_nothing_outlives_it(local_ray):
    actor = ray.remote(num_cpus=0)(RewardActor).remote()
    in_actor = ray.get(actor.score.remote(CASES), timeout=180)
    processes = ray.get(actor.checking_processes.remote(), timeout=60)
    assert in_actor == score_from_threads(CASES)
    assert in_actor.count(1.0) == sum(expected for _, _, expected in ORDINARY)
    # the actor checked answers in its own processes, not in the driver's
    from aepo.rewards import math_reward

    assert processes["actor"] != __import__("os").getpid()
    assert processes["template"] != math_reward.workers().template_pid
    assert processes["workers"]
    ray.kill(actor)  # as at the end of a run: no atexit handler runs
    pids = [processes["actor"], processes["template"], *processes["workers"]]
    deadline = time.monotonic() + 30
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in pids if not _gone(pid)] == []


class LoadsTheReward:
    """A Ray worker that loads the reward as verl's reward worker does, and nothing else."""

    def __init__(self):
        self.compute_score = verl_reward_function()

    def checking_process_running(self, within_s: float) -> bool:
        from aepo.rewards.math_reward import workers

        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if workers().running:
                return True
            time.sleep(0.1)
        return False


def test_the_checking_process_starts_when_a_ray_worker_loads_the_reward(local_ray):
    """Before any answer is scored: the first batch does not pay sympy's import (about 2 s)
    inside its per-call wall-clock limit."""
    actor = ray.remote(num_cpus=0)(LoadsTheReward).remote()
    try:
        assert ray.get(actor.checking_process_running.remote(60.0), timeout=120)
    finally:
        ray.kill(actor)


def test_32_threads_on_one_core_score_without_machine_busy(local_ray):
    """scripts/bench_reward_load.py, small: the shipped pool size and wall-clock limit, one
    answer in two using its whole CPU budget in a worker (12 CPU-seconds queued on one core,
    about 20 s). With the wall clock counting the wait for a worker, correct answers queued
    behind the burners scored 0 as machine_busy."""
    from aepo.rewards import load_bench, sandbox

    cases = load_bench.load_cases(48, stall_every=16, burn_every=2)
    burners = sum(load_bench.BURNER in response for response, _, _ in cases)
    row = load_bench.measure(
        sandbox.DEFAULT_MAX_WORKERS, sandbox.DEFAULT_TIMEOUT_S, cases, threads=32, core=0
    )
    assert row["cpus"] == 1
    assert row["pool"][:2] == (sandbox.DEFAULT_MAX_WORKERS, sandbox.DEFAULT_TIMEOUT_S)
    assert row["machine_busy"] == 0 and row["wrong"] == 0
    assert row["timed_out"] == burners == 24  # each reached a worker and stopped at the budget
    assert row["first_check_s"] < 1.0  # the checking process was started at load
