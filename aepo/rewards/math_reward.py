"""The math reward: the last ``\\boxed{}`` answer of a response, verified with math-verify.

Two entry points share one implementation:

* :func:`score` for our own code (the local engine, ``aepo eval``) returns a
  :class:`RewardResult`;
* :func:`compute_score` is verl's custom reward function (``reward.custom_reward_function``
  with ``path`` set to this file and ``name: compute_score``); it returns the dict verl's
  reward managers expect: ``score`` plus extra values that verl logs per data source.

Both are safe in threads, Ray actors and process pools, and bounded in time and memory on any
input: answers that are not settled by a cheap in-process check (the same text, two integers, a
multiple-choice letter) are compared by math-verify (:mod:`aepo.rewards.verdict`) in a worker
process (:mod:`aepo.rewards.sandbox`) that may spend 0.5 CPU-seconds on one comparison
(``AEPO_REWARD_CPU_S``) and runs under an address-space limit. CPU time, unlike the wall clock,
does not depend on what else the machine runs, so an answer gets the same verdict on an idle
and on a loaded machine. Answers sympy is known to spend minutes on are refused before that
(:mod:`aepo.rewards.cost_guard`), so they cost no worker. No input makes them raise: an answer
that cannot be read or checked within the limits scores 0 and is counted
(:func:`reward_counters`).

In verl configs prefer ``path: pkg://aepo.rewards.math_reward``; a file path also works (verl
then executes this file as an anonymous module, which is why this module avoids
``from __future__ import annotations``: dataclasses cannot resolve string annotations of a
module missing from ``sys.modules``).
"""

import logging
import os
import re
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aepo.rewards import sandbox
from aepo.rewards.boxed import last_boxed_content, without_redundant_braces
from aepo.rewards.cost_guard import MAX_ANSWER_CHARS, too_costly_to_parse
from aepo.rewards.verdict import (
    BAD_GROUND_TRUTH,
    MAX_GROUND_TRUTH_CHARS,
    UNREADABLE,
    symbolic_verdict,
    without_marks,
)

logger = logging.getLogger(__name__)

__all__ = [
    "RewardResult",
    "compute_score",
    "quick_verdict",
    "reset_reward_counters",
    "reward_counters",
    "score",
    "start_workers",
    "symbolic_verdict",
    "workers",
]

_EMPTY_ANSWER = "empty answer"
# Longer answers are not even compared as text: no ground truth we read is that long, even
# written out with spaces, and megabytes of box content would cost milliseconds per call.
_MAX_COMPARED_CHARS = 4 * MAX_GROUND_TRUTH_CHARS


@dataclass(frozen=True)
class RewardResult:
    """What one response earned.

    score: the value to optimise: 1.0 for a correct answer in the required format, else 0.0,
        minus ``format_penalty`` when the format is broken.
    correct: the boxed answer equals the ground truth (whatever the format).
    answer: the content of the last ``\\boxed{}``; None when the response has none.
    format_ok: the response has a closed final box (and ``<think>...</think>`` before it when
        ``require_think``).
    unparseable: a box was found but its content could not be read, was refused as too
        costly, or was not settled within the time or memory limit, so it scored 0 without a
        real comparison.
    problem: why the answer was not compared (None when it was): the refusal, the limit
        that stopped it, "empty answer" or "ground truth unreadable".
    """

    score: float
    correct: bool
    answer: str | None
    format_ok: bool
    unparseable: bool
    problem: str | None = None


class RewardCounters:
    """Responses scored, with no (or an empty) answer, with an answer that could not be checked
    (``unparseable``; ``timed_out`` counts those of them stopped by the CPU-time, memory or
    wall-clock limit, ``out_of_memory`` those stopped by the memory limit, and
    ``machine_busy`` those stopped by the wall clock before they used their CPU time: only
    these verdicts depend on the machine's load), and with a ground truth that could not be
    read (per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {
            "scored": 0,
            "no_answer": 0,
            "unparseable": 0,
            "timed_out": 0,
            "machine_busy": 0,
            "out_of_memory": 0,
            "bad_ground_truth": 0,
        }

    def add(self, **increments: int) -> None:
        with self._lock:
            for key, value in increments.items():
                self._counts[key] += value

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            for key in self._counts:
                self._counts[key] = 0


_COUNTERS = RewardCounters()


def reward_counters() -> dict[str, int]:
    """Counts since the process started (or the last :func:`reset_reward_counters`)."""
    return _COUNTERS.snapshot()


def reset_reward_counters() -> None:
    _COUNTERS.reset()


def ground_truth_text(ground_truth: Any) -> str:
    """One string for a ground truth given as str, number or list (of several answers)."""
    if isinstance(ground_truth, (list, tuple)) or type(ground_truth).__name__ == "ndarray":
        return ", ".join(ground_truth_text(item) for item in ground_truth)
    if isinstance(ground_truth, float) and ground_truth.is_integer():
        return str(int(ground_truth))
    return str(ground_truth).strip()


# Typesetting only: spaces, delimiter sizing and display-style fractions change how an answer
# looks, never what it means, so the exact-match shortcut ignores them.
_SPACES = re.compile(r"\s+|\\[,;: !]|\\(?:left|right|displaystyle)(?![a-zA-Z])")
_STYLED_FRACTION = re.compile(r"\\[dt]frac(?![a-zA-Z])")


def _canonical_text(latex: str) -> str:
    """Text form for the exact-match shortcut: no spaces, sizing, math delimiters or unit
    marks."""
    text = _STYLED_FRACTION.sub(r"\\frac", _SPACES.sub("", latex))
    return without_marks(text.strip("$"))


def think_format_ok(response: str) -> bool:
    """One ``</think>`` (an opening ``<think>`` may sit in the prompt), and the box after it."""
    if response.count("</think>") != 1 or response.count("<think>") > 1:
        return False
    close = response.index("</think>")
    if "<think>" in response and response.index("<think>") > close:
        return False
    return last_boxed_content(response[close:]) is not None


_INTEGER = re.compile(r"[-+]?\d{1,15}")
_CHOICE_ALONE = re.compile(r"(?:\\(?:text|textbf|mathrm|mathbf)\{)?\(?([A-E])\)?\}?")
_CHOICE_LABEL = re.compile(r"(?:\\(?:text|textbf|mathrm|mathbf)\{)?\(([A-E])\)")


def _choice_letter(answer: str) -> str | None:
    """The option an answer names: "C", "(C)", "\\text{(C)}", or "\\textbf{(C)}\\ 7" (AMC
    answer keys print the letter and the value)."""
    alone = _CHOICE_ALONE.fullmatch(answer)
    if alone:
        return alone.group(1)
    labelled = _CHOICE_LABEL.match(answer)
    return labelled.group(1) if labelled else None


def quick_verdict(answer: str, ground_truth: str) -> tuple[bool, str | None] | None:
    """The verdict when plain text settles it, else None (then math-verify must compare)."""
    if len(answer) > _MAX_COMPARED_CHARS:
        return False, f"answer refused: longer than {_MAX_COMPARED_CHARS} characters"
    answer = without_redundant_braces(answer)
    text, truth = _canonical_text(answer), _canonical_text(ground_truth)
    if not text:
        return False, _EMPTY_ANSWER
    if not truth:
        return False, BAD_GROUND_TRUTH
    if text == truth:
        return True, None
    if _INTEGER.fullmatch(text) and _INTEGER.fullmatch(truth):
        return int(text) == int(truth), None
    # A multiple-choice key ("C", "(C)", "\text{(C)}") is matched by an answer naming that
    # option, with or without its value; an answer naming another option is wrong.
    key = _CHOICE_ALONE.fullmatch(truth)
    if key:
        chosen = _choice_letter(text)
        if chosen is not None:
            return chosen == key.group(1), None
    refusal = too_costly_to_parse(answer)
    if refusal:
        return False, f"answer refused: {refusal}"
    return None


class _VerdictCache:
    """Least-recently-used verdicts, bounded in bytes as well as in entries: answers are
    policy output, so neither their number nor their length is ours to choose."""

    def __init__(self, max_bytes: int = 16 << 20, max_key_chars: int = 2 * MAX_ANSWER_CHARS):
        self.max_bytes = max_bytes
        self.max_key_chars = max_key_chars
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[tuple, int]] = OrderedDict()
        self.bytes = 0

    def get(self, key: tuple[str, str]) -> tuple | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: tuple[str, str], value: tuple) -> None:
        if len(key[0]) + len(key[1]) > self.max_key_chars:
            return
        size = sys.getsizeof(key[0]) + sys.getsizeof(key[1]) + 300  # key, tuple, dict slot
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped

    def __len__(self) -> int:
        return len(self._entries)


_CACHE = _VerdictCache()
_IN_PROCESS = threading.Lock()
_sandbox_failure: str | None = None

_VERDICT = "aepo.rewards.verdict:symbolic_verdict"
_WARM_UP = "aepo.rewards.verdict:warm_up"


def _env_number(name: str, default: float, kind=float):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        logger.warning("ignoring %s=%r (not a number); using %s", name, raw, default)
        return default


def checking_pool(**settings: Any) -> sandbox.WorkerPool:
    """A new pool of worker processes that run :func:`symbolic_verdict`. Settings not given
    come from ``AEPO_REWARD_CPU_S`` (CPU seconds per comparison), ``AEPO_REWARD_TIMEOUT``
    (wall-clock seconds a call may run in its worker), ``AEPO_REWARD_WORKERS`` and
    ``AEPO_REWARD_MEMORY_MB`` when set, else from the pool's defaults."""
    from_env = {
        "max_workers": _env_number("AEPO_REWARD_WORKERS", sandbox.DEFAULT_MAX_WORKERS, int),
        "timeout_s": _env_number("AEPO_REWARD_TIMEOUT", sandbox.DEFAULT_TIMEOUT_S),
        "cpu_budget_s": _env_number("AEPO_REWARD_CPU_S", sandbox.DEFAULT_CPU_BUDGET_S),
        "memory_limit_bytes": int(
            _env_number("AEPO_REWARD_MEMORY_MB", sandbox.DEFAULT_MEMORY_LIMIT_BYTES >> 20) * 2**20
        ),
    }
    return sandbox.WorkerPool(_VERDICT, _WARM_UP, **{**from_env, **settings})


_POOL: sandbox.WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def workers() -> sandbox.WorkerPool:
    """This process's checking pool (a forked child gets its own: it must not share the
    parent's sockets)."""
    global _POOL
    current = _POOL
    if current is not None and current._pid == os.getpid():
        return current
    with _POOL_LOCK:
        if _POOL is None or _POOL._pid != os.getpid():
            _POOL = checking_pool()
        return _POOL


def verdict_in(pool: sandbox.WorkerPool, answer: str, ground_truth: str):
    """(correct, problem, stopped by a limit) of :func:`symbolic_verdict` run in ``pool``."""
    result, problem = pool.call(answer, ground_truth)
    if problem == sandbox.RAISED:
        return False, UNREADABLE, False
    if problem is not None:
        return False, problem, problem in sandbox.STOPPED
    correct, why_not_compared = result
    return bool(correct), why_not_compared, False


def _checked_verdict(answer: str, ground_truth: str) -> tuple[bool, str | None, bool]:
    """(correct, problem, stopped by a limit), from a worker process; a verdict that depends
    on the machine's load is not cached."""
    global _sandbox_failure
    cached = _CACHE.get((answer, ground_truth))
    if cached is not None:
        return cached
    pool = workers()
    result = None
    if _sandbox_failure is None and pool.timeout_s > 0:
        try:
            result = verdict_in(pool, answer, ground_truth)
        except sandbox.SandboxUnavailable as err:
            _sandbox_failure = str(err)
            logger.warning(
                "math reward: %s; checking answers in this process, without a time limit", err
            )
    if result is None:
        # one at a time: sympy's numeric evaluation changes process-wide mpmath state
        with _IN_PROCESS:
            result = (*symbolic_verdict(answer, ground_truth), False)
    if result[1] not in sandbox.LOAD_DEPENDENT:  # the next call may well be checked
        _CACHE.put((answer, ground_truth), result)
    return result


def start_workers() -> None:
    """Start the answer-checking process now (a second or two: it imports sympy) instead of
    on the first call that needs it; the wait for that start is not counted against the
    per-call time limit."""
    workers().start()


WARM_UP_VARIABLE = "AEPO_REWARD_WARM_UP"
"""``0``: a Ray worker that imports this module starts the checking process at its first
symbolic check rather than at import (the task runner sets it: it loads the reward only
to check the config)."""


def _in_ray_worker() -> bool:
    """A process Ray started (verl's reward workers), not a driver or a plain script."""
    if "ray" not in sys.modules:
        return False
    try:
        from ray._private.worker import WORKER_MODE, global_worker

        return global_worker.mode == WORKER_MODE
    except Exception:  # another Ray layout: start lazily, as anywhere else
        return False


def _start_workers_in_background() -> None:
    def start() -> None:
        try:
            start_workers()
        except Exception:  # the first call retries and reports it
            logger.warning("math reward: could not start the checking process", exc_info=True)

    threading.Thread(target=start, name="aepo-reward-warm-up", daemon=True).start()


# verl's reward workers load this module when they start (``get_custom_reward_fn``) and call
# it from many threads once the first batch is generated: starting the checking process here,
# in the background, pays its start-up (about 2 s: it imports sympy and math-verify) while
# the models load, not inside the first batch's wall-clock limit.
if _in_ray_worker() and os.environ.get(WARM_UP_VARIABLE, "1") != "0":
    _start_workers_in_background()


def score(
    response: str,
    ground_truth: Any,
    *,
    require_think: bool = False,
    format_penalty: float = 0.0,
) -> RewardResult:
    """Score one response against its ground truth (str, number, or list of answers)."""
    try:
        truth = ground_truth_text(ground_truth)
        answer = last_boxed_content(response if isinstance(response, str) else str(response))
        format_ok = answer is not None and (not require_think or think_format_ok(response))
        problem, timed_out = None, False
        if answer is None:
            correct = False
        else:
            quick = quick_verdict(answer, truth)
            if quick is not None:
                correct, problem = quick
            else:
                correct, problem, timed_out = _checked_verdict(answer, truth)
        if answer is None or problem == _EMPTY_ANSWER:
            _COUNTERS.add(scored=1, no_answer=1)
        elif problem == BAD_GROUND_TRUTH:
            _COUNTERS.add(scored=1, bad_ground_truth=1)
        elif problem:
            _COUNTERS.add(
                scored=1,
                unparseable=1,
                timed_out=int(timed_out),
                machine_busy=int(problem == sandbox.MACHINE_BUSY),
                out_of_memory=int(problem == sandbox.OUT_OF_MEMORY),
            )
        else:
            _COUNTERS.add(scored=1)
        value = 1.0 if (correct and format_ok) else 0.0
        if not format_ok:
            value -= format_penalty
        return RewardResult(
            score=value,
            correct=correct,
            answer=answer,
            format_ok=format_ok,
            unparseable=problem is not None and problem not in (BAD_GROUND_TRUTH, _EMPTY_ANSWER),
            problem=problem,
        )
    except Exception:  # last line of defence: a reward must never stop training
        logger.warning("math reward failed; scoring 0", exc_info=True)
        _COUNTERS.add(scored=1, unparseable=1)
        return RewardResult(-format_penalty, False, None, False, True, "the reward raised")


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    require_think: bool = False,
    format_penalty: float = 0.0,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl's custom reward function signature (verl 0.9.1, ``reward.custom_reward_function``).

    ``require_think`` and ``format_penalty`` come from ``custom_reward_function.reward_kwargs``.
    verl averages the numeric extra values per data source (``acc`` is its headline metric)
    and uses the string ``pred`` for majority voting.
    """
    result = score(
        solution_str, ground_truth, require_think=require_think, format_penalty=format_penalty
    )
    return {
        "score": result.score,
        "acc": float(result.correct),
        "pred": result.answer if result.answer is not None else "",
        "format_ok": float(result.format_ok),
        "unparseable": float(result.unparseable),
    }
