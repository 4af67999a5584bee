"""math-verify's verdict on one answer: the comparison the reward runs in a worker process.

This module holds the math and nothing of processes: :func:`symbolic_verdict` is unbounded in
time and memory, so :mod:`aepo.rewards.math_reward` hands it by name to a
:class:`aepo.rewards.sandbox.WorkerPool`, which bounds any function it runs.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from aepo.rewards.boxed import without_redundant_braces
from aepo.rewards.cost_guard import MAX_ANSWER_CHARS, too_costly_to_parse

logger = logging.getLogger(__name__)


def _drop_timeout_disabled_warning(record: logging.LogRecord) -> bool:
    # math-verify warns once per process that we switched its timeouts off; we did so on
    # purpose and bound the time ourselves, so the warning would only alarm users.
    return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_drop_timeout_disabled_warning)

MAX_GROUND_TRUTH_CHARS = 2000
BAD_GROUND_TRUTH = "ground truth unreadable"
UNREADABLE = "answer unreadable"


def _parse_math(latex: str) -> list:
    # Imported here so that importing this module stays cheap.
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(
        "\\boxed{" + latex + "}",
        [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=None,
    )


# Benchmarks state percentages and angles as the bare number (OlympiadBench keeps "%" in a unit
# field, MATH writes "30^\circ" for an answer of 30), and math-verify leaves "10\%" and "30°"
# unparsed, so a trailing percent or degree mark is dropped from both sides.
_TRAILING_MARK = re.compile(r"\s*(?:\\?%|°|\\degree|\^\s*\{?\s*\\circ\s*\}?)\s*$")


def without_marks(latex: str) -> str:
    """``latex`` without a trailing percent or degree mark."""
    return _TRAILING_MARK.sub("", latex)


@lru_cache(maxsize=1024)
def _parsed_ground_truth(ground_truth: str) -> tuple:
    # Labels are trusted to be sane but may be long (College Math has worked paragraphs),
    # so only the cost checks, not the answer length limit, apply to their start.
    if len(ground_truth) > MAX_GROUND_TRUTH_CHARS or too_costly_to_parse(
        ground_truth[:MAX_ANSWER_CHARS]
    ):
        return ()
    try:
        return tuple(_parse_math(without_marks(ground_truth.strip().strip("$"))))
    except Exception:  # math-verify and sympy raise many kinds; a bad label must not stop a run
        logger.debug("cannot parse ground truth %r", ground_truth, exc_info=True)
        return ()


def _has_infinity(parsed) -> bool:
    from sympy import Basic, S

    marks = (S.Infinity, S.NegativeInfinity, S.ComplexInfinity, S.NaN)
    return any(isinstance(item, Basic) and item.has(*marks) for item in parsed)


def symbolic_verdict(answer: str, ground_truth: str) -> tuple[bool, str | None]:
    """math-verify's comparison: (correct, why the answer or the ground truth could not be
    compared). Unbounded in time and memory: the reward runs it in a worker process."""
    import mpmath

    # sympy raises mpmath's process-wide precision while it evaluates; start every call from
    # the default, whatever a previous call left behind
    mpmath.mp.prec = 53
    answer = without_redundant_braces(answer)
    refusal = too_costly_to_parse(answer)
    if refusal:
        return False, f"answer refused: {refusal}"
    gold = _parsed_ground_truth(ground_truth)
    if not gold:
        return False, BAD_GROUND_TRUTH
    try:
        predicted = _parse_math(without_marks(answer))
        if not predicted:
            return False, UNREADABLE
        from math_verify import verify

        correct = bool(verify(list(gold), predicted, timeout_seconds=None))
    except MemoryError:
        raise
    except Exception:  # see _parsed_ground_truth
        logger.debug("cannot verify %r against %r", answer, ground_truth, exc_info=True)
        return False, UNREADABLE
    # sympy's simplify sometimes reduces "2^{\infty} - 1/2" to zero, depending on the order
    # of terms it happens to build: an infinite answer never equals a finite ground truth
    if correct and _has_infinity(predicted) and not _has_infinity(gold):
        return False, None
    return correct, None


_WARM_UP = [
    ("1", "1"),
    ("(3, \\frac{\\pi}{2})", "[2, 5)"),
    ("x^2+1", "\\{1,2\\}"),
    ("\\left(\\frac{\\sqrt{2}}{2}\\right)", "0.5"),
    ("((\\frac{1}{2}))", "\\frac{\\pi}{4}"),
    ("(((x)))", "x^2+1"),
    ("[[1]]", "(1, 2)"),
    ("\\text{yes}", "10\\%"),
    ("-2, 1", "1,-2"),
]


def warm_up() -> None:
    """Load the parser's grammar and sympy's lazily imported modules, and warm the parser's
    prediction cache, so that an answer costs about the same CPU time in a fresh worker as in
    one that has run for hours."""
    for answer, truth in _WARM_UP:
        symbolic_verdict(answer, truth)
