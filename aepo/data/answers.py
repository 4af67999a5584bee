"""Turn the answer fields of math datasets into one ground-truth string.

The shipped files state answers as str, int, float (``27.0``), lists of strings
(OlympiadBench), a rationale ending in ``#### N`` (GSM8K) or a solution whose last
``\\boxed{}`` is the answer (Minerva). Each function raises :class:`AnswerError` with a
message saying what was wrong; the loaders attach the file and row.
"""

from __future__ import annotations

import math
import re
from typing import Any

from aepo.rewards.boxed import last_boxed_content


class AnswerError(ValueError):
    """An answer field that cannot be turned into a ground truth."""


_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


def strip_math_delimiters(text: str) -> str:
    """``$\\frac{1}{2}$`` -> ``\\frac{1}{2}``; ``$69$,$84$`` -> ``69,84``; keeps ``\\$``."""
    return _UNESCAPED_DOLLAR.sub("", text).strip()


def number_text(value: float | int) -> str:
    """27.0 -> "27"; 0.5 -> "0.5"."""
    if isinstance(value, bool):
        raise AnswerError(f"answer is a boolean ({value}), not a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AnswerError(f"answer is {value}")
        if value.is_integer():
            return str(int(value))
        return repr(value)
    return str(value)


def plain_answer(value: Any) -> str:
    """A str, number or list of those (several answers, joined by ", ")."""
    if value is None:
        raise AnswerError("answer is empty (null)")
    if isinstance(value, str):
        text = strip_math_delimiters(value)
    elif isinstance(value, (int, float)):
        text = number_text(value)
    elif isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        parts = [plain_answer(item) for item in value]
        if not parts:
            raise AnswerError("answer is an empty list")
        text = ", ".join(parts)
    else:
        raise AnswerError(f"answer has unsupported type {type(value).__name__}")
    if not text:
        raise AnswerError("answer is an empty string")
    return text


def gsm8k_answer(rationale: Any) -> str:
    """The number after the final ``####`` of a GSM8K rationale, without thousands separators."""
    if not isinstance(rationale, str):
        raise AnswerError(f"answer should be a rationale string, got {type(rationale).__name__}")
    if "####" not in rationale:
        raise AnswerError("answer has no '#### <number>' line")
    text = rationale.rsplit("####", 1)[1].strip()
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    if not text:
        raise AnswerError("nothing after '####'")
    return text


def boxed_solution_answer(solution: Any) -> str:
    """The content of the last ``\\boxed{}`` of a worked solution."""
    if not isinstance(solution, str):
        raise AnswerError(f"solution should be a string, got {type(solution).__name__}")
    content = last_boxed_content(solution)
    if content is None:
        raise AnswerError("solution has no closed \\boxed{...}")
    if not content:
        raise AnswerError("the last \\boxed{} of the solution is empty")
    return strip_math_delimiters(content)


ANSWER_FORMATS = {
    "plain": plain_answer,
    "gsm8k": gsm8k_answer,
    "boxed": boxed_solution_answer,
}
"""How to read an answer field, by name (the ``--answer-format`` choices)."""
