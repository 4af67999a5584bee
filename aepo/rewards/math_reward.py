"""The math reward: the last ``\\boxed{}`` answer of a response, verified with math-verify.

Two entry points share one implementation:

* :func:`score` for our own code (the local engine, ``aepo eval``) returns a
  :class:`RewardResult`;
* :func:`compute_score` is verl's custom reward function (``reward.custom_reward_function``
  with ``path`` set to this file and ``name: compute_score``); it returns the dict verl's
  reward managers expect: ``score`` plus extra values that verl logs per data source.

Both are safe in threads and Ray workers: math-verify is called with its signal-based
timeouts switched off (they raise outside the main thread) and time is bounded instead by
parsing only the short content of the last box and refusing answers sympy could spend
minutes on (:mod:`aepo.rewards.cost_guard`). No input makes them raise: an answer that cannot
be read scores 0 and is counted (:func:`reward_counters`).

In verl configs prefer ``path: pkg://aepo.rewards.math_reward``; a file path also works (verl
then executes this file as an anonymous module, which is why this module avoids
``from __future__ import annotations``: dataclasses cannot resolve string annotations of a
module missing from ``sys.modules``).
"""

import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aepo.rewards.boxed import last_boxed_content
from aepo.rewards.cost_guard import MAX_ANSWER_CHARS, too_costly_to_parse

logger = logging.getLogger(__name__)


def _drop_timeout_disabled_warning(record: logging.LogRecord) -> bool:
    # math-verify warns once per process that we switched its timeouts off; we did so on
    # purpose and bound the time ourselves, so the warning would only alarm users.
    return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_drop_timeout_disabled_warning)

_MAX_GROUND_TRUTH_CHARS = 2000
_BAD_GROUND_TRUTH = "ground truth unreadable"


@dataclass(frozen=True)
class RewardResult:
    """What one response earned.

    score: the value to optimise: 1.0 for a correct answer in the required format, else 0.0,
        minus ``format_penalty`` when the format is broken.
    correct: the boxed answer equals the ground truth (whatever the format).
    answer: the content of the last ``\\boxed{}``; None when the response has none.
    format_ok: the response has a closed final box (and ``<think>...</think>`` before it when
        ``require_think``).
    unparseable: a box was found but its content could not be read or was refused as too
        costly, so it scored 0 without a real comparison.
    """

    score: float
    correct: bool
    answer: str | None
    format_ok: bool
    unparseable: bool


class RewardCounters:
    """How many responses were scored, had no answer, or had an unreadable answer (per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {"scored": 0, "no_answer": 0, "unparseable": 0, "bad_ground_truth": 0}

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


_SPACES = re.compile(r"\s+|\\[,;: !]")


def _canonical_text(latex: str) -> str:
    """Text form for the exact-match shortcut: no spaces or math delimiters."""
    return _SPACES.sub("", latex).strip("$")


def think_format_ok(response: str) -> bool:
    """One ``</think>`` (an opening ``<think>`` may sit in the prompt), and the box after it."""
    if response.count("</think>") != 1 or response.count("<think>") > 1:
        return False
    close = response.index("</think>")
    if "<think>" in response and response.index("<think>") > close:
        return False
    return last_boxed_content(response[close:]) is not None


def _parse_math(latex: str) -> list:
    # Imported here so that importing this module (e.g. for the dataclass) stays cheap.
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(
        "\\boxed{" + latex + "}",
        [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=None,
    )


_TRAILING_PERCENT = re.compile(r"\s*\\?%\s*$")


def _without_percent(latex: str) -> str:
    """Benchmarks state percentages as the number (OlympiadBench keeps "%" as a unit field),
    and math-verify leaves "10\\%" unparsed, so a trailing percent sign is dropped."""
    return _TRAILING_PERCENT.sub("", latex)


@lru_cache(maxsize=4096)
def _parsed_ground_truth(ground_truth: str) -> tuple:
    # Labels are trusted to be sane but may be long (College Math has worked paragraphs),
    # so only the cost checks, not the answer length limit, apply to their start.
    if len(ground_truth) > _MAX_GROUND_TRUTH_CHARS or too_costly_to_parse(
        ground_truth[:MAX_ANSWER_CHARS]
    ):
        return ()
    try:
        return tuple(_parse_math(_without_percent(ground_truth.strip().strip("$"))))
    except Exception:  # math-verify and sympy raise many kinds; a bad label must not stop a run
        logger.debug("cannot parse ground truth %r", ground_truth, exc_info=True)
        return ()


@lru_cache(maxsize=65536)
def _verdict(answer: str, ground_truth: str) -> tuple[bool, str | None]:
    """(correct, why the answer or the ground truth could not be compared)."""
    if _canonical_text(answer) == _canonical_text(ground_truth):
        return True, None
    refusal = too_costly_to_parse(answer)
    if refusal:
        return False, f"answer refused: {refusal}"
    gold = _parsed_ground_truth(ground_truth)
    if not gold:
        return False, _BAD_GROUND_TRUTH
    try:
        predicted = _parse_math(_without_percent(answer))
        if not predicted:
            return False, "answer unreadable"
        from math_verify import verify

        return bool(verify(list(gold), predicted, timeout_seconds=None)), None
    except Exception:  # see _parsed_ground_truth
        logger.debug("cannot verify %r against %r", answer, ground_truth, exc_info=True)
        return False, "answer unreadable"


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
        if answer is None:
            _COUNTERS.add(scored=1, no_answer=1)
            correct, problem = False, None
        else:
            correct, problem = _verdict(answer, truth)
            if problem == _BAD_GROUND_TRUTH:
                _COUNTERS.add(scored=1, bad_ground_truth=1)
            elif problem:
                _COUNTERS.add(scored=1, unparseable=1)
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
            unparseable=problem is not None and problem != _BAD_GROUND_TRUTH,
        )
    except Exception:  # last line of defence: a reward must never stop training
        logger.warning("math reward failed; scoring 0", exc_info=True)
        _COUNTERS.add(scored=1, unparseable=1)
        return RewardResult(-format_penalty, False, None, False, True)


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
