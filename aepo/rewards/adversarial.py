"""Inputs the math reward must survive, shared by its tests and ``scripts/bench_reward_fuzz.py``.

Each was found to break an earlier version of the reward; keeping one list means a new case
is tried by the fuzz benchmark and the tests alike.
"""

from __future__ import annotations


def nested(depth: int, pair: str = "{}", inner: str = "1") -> str:
    """``inner`` inside ``depth`` pairs of brackets."""
    return pair[0] * depth + inner + pair[1] * depth


STALLS = [
    ("\\boxed (x+1)^{999}", "10"),
    ("\\boxed (x+y)^{9999}", "x^2+1"),
    ("\\boxed 999999^{999999}", "\\sqrt{2}"),
    ("\\boxed \\Gamma(999999)", "\\pi/4"),
    ("\\boxed \\sin(10^{999999})", "[1,2)"),
    ("\\boxed 2^{-999999}", "0"),
    ("\\boxed{" + nested(50) + "}", "2"),
    ("\\boxed{" + nested(18) + "}", "2"),
    ("\\boxed{" + nested(40, "()") + "}", "2"),
    ("\\boxed{(x+1)^{1000}}", "3"),
    ("\\boxed{999999^{999999}}", "1"),
    ("\\boxed{(x+1)^{999999}}", "1"),
    ("\\boxed{9^{9^{9}}}", "1"),
    ("\\boxed{100000!}", "1"),
    ("The answer follows from the lemma. " * 300, "1"),
    ("The answer follows from the lemma. " * 300 + "\\boxed{4}", "5"),
]
"""(response, ground truth) that took seconds to minutes of CPU, or gigabytes (``(x+1)^{999999}``
grew to 23 GB), in the first reward; each must score 0 within a second."""

FALSE_POSITIVES = [
    ("\\boxed{2^{\\infty}}", "0.5"),
    ("\\boxed{}", ""),
    ("\\boxed{}", " "),
]
"""(response, ground truth) the first reward scored 1 (the first for some ``PYTHONHASHSEED``
values only); each must score 0."""

ORDINARY = [
    ("204", "204", True),
    ("240", "204", False),
    ("\\frac{14}{3}", "14/3", True),
    ("-1.5", "-\\frac{3}{2}", True),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("48\\sqrt2", "48 \\sqrt{2}", True),
    ("4n - 10", "10-4 n", False),
    ("[2, 5)", "[2,5)", True),
    ("30°", "30", True),
    ("\\textbf{(C)}\\ 7", "C", True),
    ("\\text{diverges}", "diverges", True),
    ("-2, 1", "1,-2", True),
]
"""(boxed answer, ground truth, correct): forms the reward must keep judging right under load."""

MEMORY_BOMB = ("(x+1)^{999999}", "1")
"""An answer whose expansion needs gigabytes: sympy builds a million-term polynomial."""
