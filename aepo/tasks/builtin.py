"""The built-in verifiable tasks, by name (``trainer.data: builtin:<name>``).

Each is a module with the same functions: ``prompt_text``, ``sample_targets``, ``reward``,
``warm_start_answer``, ``entropy_ceiling``, ``compute_score`` and ``verl_rows`` (so it also
runs on verl as ``pkg://aepo.tasks.<name>``), plus ``ANSWER_TOKENS``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BUILTIN_TASKS = ("contains_digit", "digit_sum", "same_sum")
DEFAULT_TASK = "contains_digit"
"""the demo's task: its entropy ceiling (1.63 nats/token) leaves room for the paper's targets;
digit_sum's is 0.367"""


def builtin_task(name: str) -> ModuleType:
    if name not in BUILTIN_TASKS:
        raise ValueError(f"unknown built-in task {name!r}; choose one of {list(BUILTIN_TASKS)}")
    return importlib.import_module(f"aepo.tasks.{name}")
