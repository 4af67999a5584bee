"""The worker pool runs any named function, and the reward's modules import no cycle."""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

from aepo.rewards import sandbox

REWARDS = Path(__file__).resolve().parents[2] / "aepo" / "rewards"


def _imported_reward_modules(path: Path) -> set[str]:
    """The ``aepo.rewards`` modules ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "aepo.rewards":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("aepo.rewards."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("aepo.rewards."):
                    found.add(alias.name.split(".")[2])
    return found


def test_no_reward_module_imports_one_that_imports_it_back():
    graph = {path.stem: _imported_reward_modules(path) for path in REWARDS.glob("*.py")}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert [module for module in graph if reaches(module, module, set())] == []
    assert graph["sandbox"] == set()  # the pool knows nothing of math


def test_the_pool_runs_any_named_function_in_another_process():
    pool = sandbox.WorkerPool("os:getpid", max_workers=1)
    try:
        worker_pid, problem = pool.call()
        assert problem is None and worker_pid != os.getpid()
        assert pool.idle_worker_pids() == [worker_pid]
        assert pool.call("not an int") == (None, sandbox.RAISED)  # getpid takes no argument
        assert pool.call() == (worker_pid, None)  # the same worker: raising ends nothing
    finally:
        pool.close()


def test_the_wall_clock_starts_when_a_worker_takes_the_call():
    """Four threads share one worker; each call sleeps 1 s in it (no CPU time, so only the
    wall clock can stop it) under a 2 s limit. Counted from the call, the third and fourth
    would be stopped as MACHINE_BUSY after queueing 2 and 3 s behind the others although their
    worker is idle-fast; counted from when the worker takes them, each has 1 s to spare."""
    from concurrent.futures import ThreadPoolExecutor

    pool = sandbox.WorkerPool("time:sleep", max_workers=1, timeout_s=2.0)
    try:
        pool.start()
        with ThreadPoolExecutor(4) as threads:
            results = list(threads.map(lambda _: pool.call(1.0), range(4)))
        assert results == [(None, None)] * 4
        assert pool.kills == 0
    finally:
        pool.close()


def test_a_caller_waiting_for_a_worker_of_a_closed_pool_is_told_so():
    """With no limit on the wait for a worker, closing the pool must end the wait."""
    import threading

    pool = sandbox.WorkerPool("time:sleep", max_workers=1, timeout_s=5.0)
    pool.start()
    outcome = []

    def wait_for_a_worker():
        try:
            outcome.append(pool.call(1.0))
        except sandbox.SandboxUnavailable as err:
            outcome.append(str(err))

    # the first call holds the only worker for 1 s (or waits for its fork): the second waits
    busy = threading.Thread(target=wait_for_a_worker)
    waiting = threading.Thread(target=wait_for_a_worker)
    busy.start()
    waiting.start()
    time.sleep(0.2)
    pool.close()
    waiting.join(timeout=10)
    busy.join(timeout=10)
    assert not waiting.is_alive() and not busy.is_alive()
    assert "the pool for time:sleep is closed" in outcome


def test_callers_get_a_worker_in_the_order_they_came():
    """One worker; a thread that was just served and calls again queues behind the callers
    already waiting, so no caller waits for calls that came after it."""
    import threading

    pool = sandbox.WorkerPool("time:sleep", max_workers=1, timeout_s=5.0)
    finished: list[str] = []
    try:
        pool.start()
        assert pool.call(0.0) == (None, None)  # the worker is forked and idle

        def calls(name: str, times: int) -> None:
            for number in range(times):
                pool.call(0.3)
                finished.append(f"{name}{number}")

        first = threading.Thread(target=calls, args=("a", 2))
        first.start()
        time.sleep(0.1)  # a's first call holds the worker
        later = [threading.Thread(target=calls, args=(name, 1)) for name in "bc"]
        for thread in later:
            thread.start()
            time.sleep(0.05)
        for thread in [first, *later]:
            thread.join(timeout=30)
    finally:
        pool.close()
    assert finished == ["a0", "b0", "c0", "a1"]
