"""A built-in task where exploration pays: write three digits with the prompt's digit sum
that are not a rearrangement of the prompt.

Prompt ``"123:"`` (digit sum 6), correct answers ``"006"``, ``"510"``, ``"222"``, ... : 3 to 72
of the 1000 three-digit strings per prompt, so a fully accurate policy can spread over many
answers (up to 0.94 nats/token on average) while a narrowed one can lose a prompt entirely.
Three right digits make an answer; uniformly random digits are right 5.0 % of the time on
average, and far less on prompts whose sum is near 0 or 27 (3 answers of 1000 at the
extremes), which gives the spread of difficulty across prompts. (A four-digit version was
right only 7.3 % of the time after 2000 warm-start steps, barely above its random 4.6 %.)

The prompts are split once, by a fixed seed that no run setting changes: ``EVAL_POOL``
prompts are held out for pass@k and never reach the warm start or RL (``sample_targets``
draws only from the training pool).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from typing import Any

import numpy as np

from aepo.tasks import verl_schema

NAME = "same_sum"
ANSWER_DIGITS = 3
ANSWER_TOKENS = ANSWER_DIGITS + 1  # the digits, then <eos>
DATA_SOURCE = "aepo/same_sum"
EVAL_POOL = 512
"""held-out prompts (the evaluation takes the first ``count`` of them)"""
SPLIT_SEED = 20
"""seeds the one train/held-out split; fixed so that every run and cache agrees on it"""
_ANSWER = re.compile(rf"\d{{{ANSWER_DIGITS}}}")


def prompt_text(digits: str) -> str:
    return f"{digits}:"


def _digit_sum(text: str) -> int:
    return sum(int(c) for c in text)


def reward(response: str, prompt_digits: str | int) -> float:
    """1.0 when the response is exactly three digits with the digit sum of ``prompt_digits``
    and not a rearrangement of them; 0.0 otherwise (a malformed ground truth too)."""
    text = response.strip()
    wanted = str(prompt_digits).strip()
    if _ANSWER.fullmatch(text) is None or _ANSWER.fullmatch(wanted) is None:
        return 0.0
    return float(_digit_sum(text) == _digit_sum(wanted) and sorted(text) != sorted(wanted))


@functools.cache
def _strings_by_sum() -> dict[int, tuple[str, ...]]:
    by_sum: dict[int, list[str]] = {}
    for digits in itertools.product("0123456789", repeat=ANSWER_DIGITS):
        text = "".join(digits)
        by_sum.setdefault(_digit_sum(text), []).append(text)
    return {s: tuple(v) for s, v in by_sum.items()}


def valid_answers(prompt_digits: str) -> list[str]:
    key = sorted(prompt_digits)
    return [a for a in _strings_by_sum()[_digit_sum(prompt_digits)] if sorted(a) != key]


@functools.cache
def _split() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(held-out prompts, training prompts); prompts with no correct answer (every string with
    their sum is a rearrangement of them, e.g. ``001``) are in neither."""
    usable = [
        s
        for strings in _strings_by_sum().values()
        for s in strings
        if len(strings) > len(set(itertools.permutations(s)))
    ]
    usable.sort()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(usable))
    shuffled = [usable[i] for i in order]
    return tuple(shuffled[:EVAL_POOL]), tuple(shuffled[EVAL_POOL:])


def eval_prompts(count: int) -> list[str]:
    """The first ``count`` held-out prompts (ground truths), the same on every call."""
    held_out = _split()[0]
    if not 1 <= count <= len(held_out):
        raise ValueError(f"held-out prompts: need 1 <= count <= {len(held_out)}, got {count}")
    return list(held_out[:count])


def sample_targets(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` training prompts drawn uniformly (never a held-out one)."""
    train = _split()[1]
    return [train[int(i)] for i in rng.integers(0, len(train), size=count)]


def warm_start_answer(rng: np.random.Generator, prompt_digits: str, valid: bool) -> str:
    """A warm-start target: a uniformly chosen correct answer (``valid``), else uniformly
    random digits."""
    if valid:
        options = valid_answers(prompt_digits)
        return options[int(rng.integers(len(options)))]
    return "".join(str(d) for d in rng.integers(0, 10, size=ANSWER_DIGITS))


def random_guess_rate(prompts: list[str]) -> float:
    """Mean chance that uniformly random digits are right, over ``prompts``."""
    return float(np.mean([len(valid_answers(p)) / 10**ANSWER_DIGITS for p in prompts]))


def entropy_ceiling() -> float:
    """Token-mean entropy (nats) of the policy that is uniform over each held-out prompt's
    correct answers, averaged over those prompts: the most a fully accurate policy can have."""
    per_prompt = [math.log(len(valid_answers(p))) for p in _split()[0]]
    return float(np.mean(per_prompt)) / ANSWER_TOKENS


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **kwargs
) -> dict[str, float]:
    """verl's custom reward function signature (verl 0.9.1, ``reward.custom_reward_function``
    with ``path: pkg://aepo.tasks.same_sum``); ``acc`` is verl's headline metric."""
    score = reward(solution_str, ground_truth)
    return {"score": score, "acc": score}


def verl_rows(count: int, seed: int = 0) -> list[dict]:
    """``count`` training prompts in verl's parquet schema, drawn like the local engine's."""
    prompts = sample_targets(np.random.default_rng(seed), count)
    return verl_schema.verl_rows(DATA_SOURCE, "arithmetic", [(prompt_text(p), p) for p in prompts])
