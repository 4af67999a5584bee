"""Reject answers whose symbolic evaluation could run for minutes.

math-verify's own time limits use ``signal.alarm``, which only works in the main thread, so
rewards computed in threads (verl's reward loop, our evaluation) run without them. sympy
evaluates integer powers and factorials eagerly: ``9^{9^{9}}`` has 370 million digits and
never finishes. Such answers are rare and never the intended form, so they are refused
before parsing (the caller still accepts an exact textual match).
"""

from __future__ import annotations

import re

MAX_ANSWER_CHARS = 400
"""Longer boxed answers are not parsed (a real final answer is short; garbage can be huge)."""

MAX_EXPONENT_DIGITS = 6
MAX_FACTORIAL_DIGITS = 4

_LONG_EXPONENT = re.compile(rf"\^\s*\{{?\s*[-+]?\s*\d{{{MAX_EXPONENT_DIGITS + 1},}}")
_SMALL_FACTORIAL = re.compile(rf"(?<![\d.])\d{{1,{MAX_FACTORIAL_DIGITS}}}\s*$")


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


def too_costly_to_parse(latex: str) -> str | None:
    """Why ``latex`` must not be handed to sympy, or None if it is safe."""
    if len(latex) > MAX_ANSWER_CHARS:
        return f"longer than {MAX_ANSWER_CHARS} characters"
    as_carets = latex.replace("**", "^")  # math-verify also reads Python-style powers
    if _LONG_EXPONENT.search(as_carets):
        return f"an exponent with more than {MAX_EXPONENT_DIGITS} digits"
    if _has_power_tower(as_carets):
        return "a tower of powers"
    if _has_large_factorial(latex):
        return f"a factorial of something other than a number below 10^{MAX_FACTORIAL_DIGITS}"
    return None
