"""A built-in verifiable task with room for the paper's entropy targets: write four digits
that include a given digit.

Prompt ``"7:"``, correct answers ``"7000"``, ``"1274"``, ``"9997"``, ... : 10^4 - 9^4 = 3439 of
the 10^4 four-digit strings contain the prompt's digit. A fully accurate policy can therefore
spread over thousands of answers, up to ln(3439) / 5 = 1.63 nats per token (four digits and
<eos>), where the digit-sum task stops at 0.367: the paper's targets 0.25, 0.5, 0.75 and 1.0
are all reachable at full reward. Random digits are right 34 % of the time, so a short warm
start finds many correct answers, and GRPO's collapse onto a few answers per prompt is still
there to be seen.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from aepo.tasks import verl_schema

NAME = "contains_digit"
ANSWER_DIGITS = 4
ANSWER_TOKENS = ANSWER_DIGITS + 1  # the digits, then <eos>
TARGETS = tuple(range(10))
DATA_SOURCE = "aepo/contains_digit"
_ANSWER = re.compile(rf"\d{{{ANSWER_DIGITS}}}")


def prompt_text(digit: int) -> str:
    return f"{digit}:"


def reward(response: str, digit: int | str) -> float:
    """1.0 when the response is exactly four digits, one of them ``digit``; 0.0 otherwise
    (a malformed ground truth too: it names no digit an answer could contain)."""
    text = response.strip()
    if _ANSWER.fullmatch(text) is None:
        return 0.0
    wanted = str(digit).strip()
    return float(len(wanted) == 1 and wanted.isdigit() and wanted in text)


def num_valid_answers() -> int:
    """Four-digit strings containing a given digit: all of them minus those without it."""
    return 10**ANSWER_DIGITS - 9**ANSWER_DIGITS


def sample_targets(rng: np.random.Generator, count: int) -> list[int]:
    """``count`` prompt digits, every digit as often as possible (shuffled permutations of
    0-9, cut to length): a collapsed policy's entropy differs from digit to digit, so drawing
    them independently made the mix, and so the measured entropy, jump from batch to batch
    (std 0.042 at H = 0.5 over 32-prompt batches of one fixed policy; 0.009 balanced)."""
    digits: list[int] = []
    while len(digits) < count:
        digits.extend(int(d) for d in rng.permutation(len(TARGETS)))
    return digits[:count]


def entropy_ceiling() -> float:
    """Token-mean entropy (nats) of the policy that is uniform over the correct answers: the
    most entropy a fully accurate policy can have here (the same for every prompt digit).
    A sequence's entropy is the sum of its tokens' conditional entropies, so the token mean
    is ln(#answers) over the answer's tokens, <eos> included."""
    return math.log(num_valid_answers()) / ANSWER_TOKENS


WARM_START_DIGIT_SHARE = 0.5
"""in a correct warm-start answer, each digit is the prompt's with this probability"""


def warm_start_answer(rng: np.random.Generator, digit: int, valid: bool) -> str:
    """A warm-start target. ``valid``: each position is the prompt's digit with probability
    WARM_START_DIGIT_SHARE, else another digit, redrawn until the answer contains it; the
    tiny model learns this per-position rule in a few hundred steps, where uniform draws
    over the 3439 correct answers (whose last digit depends on the first three) left it
    right only 41-57 % of the time after 600 steps. Otherwise uniform over all four-digit
    strings (noise, right 34 % of the time as random digits are)."""
    while True:
        if valid:
            own = rng.random(ANSWER_DIGITS) < WARM_START_DIGIT_SHARE
            others = (digit + rng.integers(1, 10, size=ANSWER_DIGITS)) % 10
            digits = np.where(own, digit, others)
        else:
            digits = rng.integers(0, 10, size=ANSWER_DIGITS)
        answer = "".join(str(d) for d in digits)
        if not valid or str(digit) in answer:
            return answer


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **kwargs
) -> dict[str, float]:
    """verl's custom reward function signature (verl 0.9.1, ``reward.custom_reward_function``
    with ``path: pkg://aepo.tasks.contains_digit``); ``acc`` is verl's headline metric."""
    score = reward(solution_str, ground_truth)
    return {"score": score, "acc": score}


def verl_rows(count: int, seed: int = 0) -> list[dict]:
    """``count`` prompts in verl's parquet schema (chat ``prompt``, ``reward_model.ground_truth``),
    digits drawn like the local engine's."""
    digits = sample_targets(np.random.default_rng(seed), count)
    return verl_schema.verl_rows(
        DATA_SOURCE, "constraint", [(prompt_text(d), str(d)) for d in digits]
    )
