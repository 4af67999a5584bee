"""Reject answers whose symbolic evaluation is known to be costly, before any worker sees them.

sympy evaluates integer powers and factorials eagerly: ``9^{9^{9}}`` has 370 million digits
and never finishes, and its parser's cost grows steeply with nesting (ten nested brackets take
0.5-1 CPU-s). The worker's CPU-time budget would stop them too, but only after spending it, and
a big-integer power runs in one C call that no signal interrupts; a rule that reads the text
decides in microseconds and the same way on every machine. Such answers are never the
intended form, so they are refused (the caller still accepts an exact textual match).
"""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 400
"""Longer boxed answers are not parsed (a real final answer is short; garbage can be huge)."""

MAX_EXPONENT_DIGITS = 4
MAX_FACTORIAL_DIGITS = 4
MAX_NESTING = 4
"""Brackets and braces nested deeper than this are refused (after braces that group nothing
are dropped, :func:`aepo.rewards.boxed.without_redundant_braces`). Real answers stay within
four (``\\left(\\frac{\\sqrt{\\frac{3}{2}}}{2}\\right)``); each level adds 0.03-0.1 CPU-s to
the parse, and what four levels cost (up to 0.3 s in a worker whose caches are cold) stays
clear of the worker's CPU budget (0.5 s), so that no answer accepted here is decided by
CPU-time noise or by which worker took it."""

_LONG_EXPONENT = re.compile(rf"\^\s*\{{?\s*[-+]?\s*\d{{{MAX_EXPONENT_DIGITS + 1},}}")
_SMALL_FACTORIAL = re.compile(rf"(?<![\d.])\d{{1,{MAX_FACTORIAL_DIGITS}}}\s*$")
# Gamma(n) is (n-1)!: the factorial rule for its argument
_LARGE_GAMMA = re.compile(
    rf"\\Gamma\s*(?:\\left)?\s*[({{]\s*[-+]?\s*\d{{{MAX_FACTORIAL_DIGITS + 1},}}"
)
_OPENERS, _CLOSERS = "({[", ")}]"

MAX_POLYNOMIAL_POWER = 99
"""``(x+1)^{100}`` and higher are refused: sympy expands them to compare (a thousand terms of
thousand-digit coefficients for ``(x+1)^{1000}``, far over the worker's CPU budget)."""
_POWER_OF_GROUP = re.compile(rf"\)\s*\^\s*\{{?\s*\d{{{len(str(MAX_POLYNOMIAL_POWER)) + 1},}}")
_COMMAND = re.compile(r"\\[a-zA-Z]+")
_TRIG = re.compile(r"\\(?:sin|cos|tan|sec|csc|cot)(?![a-zA-Z])")
_THOUSAND_DIGIT_EXPONENT = re.compile(r"\^\s*\{?\s*\d{4,}")


def nesting_depth(text: str) -> int:
    """How deep brackets and braces nest (escaped ``\\{``/``\\}`` included, unbalanced ones
    counted as they open)."""
    depth = deepest = 0
    for char in text:
        if char in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif char in _CLOSERS:
            depth = max(0, depth - 1)
    return deepest


def _superscript_argument(text: str, caret: int) -> str:
    """The argument of the ``^`` at ``caret``: a brace group or a single token."""
    i = caret + 1
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        return ""
    if text[i] != "{":
        if text[i] == "\\":  # a command such as \pi or \infty
            end = i + 1
            while end < len(text) and text[end].isalpha():
                end += 1
            return text[i:end]
        return text[i]
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return text[i + 1 :]


def _has_power_tower(text: str) -> bool:
    for caret in (m.start() for m in re.finditer(r"\^", text)):
        if "^" in _superscript_argument(text, caret):
            return True
        # "9^9^9": a second caret right after a one-token exponent.
        rest = text[caret + 1 :].lstrip()
        token_end = 0
        while token_end < len(rest) and (rest[token_end].isalnum() or rest[token_end] == "."):
            token_end += 1
        if token_end and rest[token_end:].lstrip().startswith("^"):
            return True
    return False


def _has_large_factorial(text: str) -> bool:
    for match in re.finditer(r"!", text):
        start = match.start()
        if start > 0 and text[start - 1] == "\\":
            continue  # "\!" is LaTeX spacing, not a factorial
        if not _SMALL_FACTORIAL.search(text[:start]):
            return True
    return False


def _has_large_polynomial_power(text: str) -> bool:
    """``( ... )^{N}`` with N > MAX_POLYNOMIAL_POWER around a sum that holds a variable."""
    for match in _POWER_OF_GROUP.finditer(text):
        depth, start = 0, None
        for i in range(match.start(), -1, -1):
            if text[i] == ")":
                depth += 1
            elif text[i] == "(":
                depth -= 1
                if depth == 0:
                    start = i
                    break
        if start is None:
            continue
        group = _COMMAND.sub("", text[start : match.start()])
        if re.search(r"[a-zA-Z]", group) and re.search(r"[-+]", group):
            return True
    return False


def too_costly_to_parse(latex: str) -> str | None:
    """Why ``latex`` must not be handed to sympy, or None if it is safe."""
    if len(latex) > MAX_ANSWER_CHARS:
        return f"longer than {MAX_ANSWER_CHARS} characters"
    as_carets = latex.replace("**", "^")  # math-verify also reads Python-style powers
    if _LONG_EXPONENT.search(as_carets):
        return f"an exponent with more than {MAX_EXPONENT_DIGITS} digits"
    if _has_power_tower(as_carets):
        return "a tower of powers"
    if _has_large_factorial(latex) or _LARGE_GAMMA.search(latex):
        return f"a factorial of something other than a number below 10^{MAX_FACTORIAL_DIGITS}"
    if _has_large_polynomial_power(as_carets):
        return f"a power of a polynomial above {MAX_POLYNOMIAL_POWER}"
    if _TRIG.search(latex) and _THOUSAND_DIGIT_EXPONENT.search(as_carets):
        return "a trigonometric function next to a power above 999 (argument reduction)"
    if nesting_depth(latex) > MAX_NESTING:
        return f"brackets nested deeper than {MAX_NESTING}"
    return None
