"""The built-in verifiable task: write two digits that add up to a target.

Prompt ``"12="``, correct answers ``"3+9"``, ``"4+8"``, ... ``"9+3"``. Every target in 0..18
has between 1 and 10 correct answers, so a policy can be fully accurate *and* keep entropy
(spread over the correct pairs) -- the regime where GRPO's collapse onto one answer per
prompt is visible and AEPO's entropy target is meaningful.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from aepo.tasks import verl_schema

NAME = "digit_sum"
MAX_DIGIT = 9
TARGETS = tuple(range(2 * MAX_DIGIT + 1))
ANSWER_TOKENS = 4  # "a", "+", "b", <eos>
DATA_SOURCE = "aepo/digit_sum"
_ANSWER = re.compile(r"(\d)\+(\d)")


def prompt_text(target: int) -> str:
    return f"{target}="


def valid_answers(target: int) -> list[str]:
    return [f"{a}+{target - a}" for a in range(10) if 0 <= target - a <= MAX_DIGIT]


def reward(response: str, target: int | str) -> float:
    """1.0 when the response is exactly ``"a+b"`` with digits summing to ``target``."""
    match = _ANSWER.fullmatch(response.strip())
    if match is None:
        return 0.0
    return float(int(match.group(1)) + int(match.group(2)) == int(target))


def sample_targets(rng: np.random.Generator, count: int) -> list[int]:
    return [int(t) for t in rng.integers(0, len(TARGETS), size=count)]


def warm_start_answer(rng: np.random.Generator, target: int, valid: bool) -> str:
    """A warm-start target: a uniformly chosen correct pair (``valid``), else two uniformly
    random digits."""
    if valid:
        options = valid_answers(target)
        return options[int(rng.integers(len(options)))]
    a, b = rng.integers(0, 10, size=2)
    return f"{a}+{b}"


def entropy_ceiling() -> float:
    """Token-mean entropy (nats) of the policy that is uniform over the correct answers of
    a uniformly drawn target: the most entropy a fully accurate policy can have here.
    Only the first digit carries a choice; '+', the second digit and <eos> are forced."""
    per_prompt = [math.log(len(valid_answers(t))) for t in TARGETS]
    return float(np.mean(per_prompt)) / ANSWER_TOKENS


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **kwargs
) -> dict[str, float]:
    """verl's custom reward function signature (verl 0.9.1, ``reward.custom_reward_function``
    with ``path: pkg://aepo.tasks.digit_sum``); ``acc`` is verl's headline metric."""
    score = reward(solution_str, ground_truth)
    return {"score": score, "acc": score}


def compute_boxed_math_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **kwargs
) -> dict[str, Any]:
    """The math reward (``aepo.rewards.math_reward.compute_score``) on this task, for runs
    that must exercise it in verl's reward path on the built-in model: the bare answer
    ``"3+9"`` is scored as ``\\boxed{3+9}`` against the target, so math-verify evaluates the
    sum in the reward's sandbox. It is more lenient than :func:`reward` (``"12+0"`` or
    ``"12"`` count as correct for ``"12="``), which the warm-started model rarely writes."""
    from aepo.rewards import math_reward

    boxed = "\\boxed{" + solution_str.strip() + "}"
    return math_reward.compute_score(data_source, boxed, ground_truth, extra_info, **kwargs)


def verl_rows(count: int, seed: int = 0) -> list[dict]:
    """``count`` prompts in verl's parquet schema (chat ``prompt``, ``reward_model.ground_truth``),
    targets drawn like the local engine's."""
    targets = sample_targets(np.random.default_rng(seed), count)
    return verl_schema.verl_rows(
        DATA_SOURCE, "arithmetic", [(prompt_text(t), str(t)) for t in targets]
    )
