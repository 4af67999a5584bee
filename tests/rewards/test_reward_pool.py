"""The worker pool runs any named function, and the reward's modules import no cycle."""

from __future__ import annotations

import ast
import os
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
