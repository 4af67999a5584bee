"""The built-in same_sum task: the exploration demo's prompts, verifier and held-out split."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from aepo.tasks import same_sum
from aepo.tasks.builtin import builtin_task


def brute_force_answers(prompt: str) -> set[str]:
    """Every three-digit string with the prompt's digit sum that no permutation of it equals."""
    rearrangements = {"".join(p) for p in itertools.permutations(prompt)}
    return {
        f"{i:03d}"
        for i in range(1000)
        if sum(map(int, f"{i:03d}")) == sum(map(int, prompt)) and f"{i:03d}" not in rearrangements
    }


def test_reward_accepts_exactly_the_brute_force_answers():
    for prompt in ("123", "000", "999", "505", "019", "900"):
        expected = brute_force_answers(prompt)
        accepted = {f"{i:03d}" for i in range(1000) if same_sum.reward(f"{i:03d}", prompt)}
        assert accepted == expected == set(same_sum.valid_answers(prompt)), prompt
    assert same_sum.reward(" 600\n", "123") == 1.0
    for bad in ("321", "123", "6", "0006", "60", "6 0", "", "abc"):
        assert same_sum.reward(bad, "123") == 0.0, bad
    for bad_truth in ("", "12", "1234", "x", None):
        assert same_sum.reward("600", bad_truth) == 0.0


def test_held_out_and_training_prompts_are_disjoint_and_fixed():
    held_out = same_sum.eval_prompts(same_sum.EVAL_POOL)
    assert len(set(held_out)) == same_sum.EVAL_POOL == 512
    train = set(same_sum.sample_targets(np.random.default_rng(0), 50_000))
    assert not train & set(held_out)
    usable = {f"{i:03d}" for i in range(1000) if brute_force_answers(f"{i:03d}")}
    assert train | set(held_out) == usable  # every usable prompt is in one of the two
    assert same_sum.eval_prompts(8) == held_out[:8]
    with pytest.raises(ValueError, match="held-out prompts"):
        same_sum.eval_prompts(same_sum.EVAL_POOL + 1)


def test_warm_start_mixture_and_random_floor():
    rng = np.random.default_rng(0)
    prompts = same_sum.sample_targets(rng, 400)
    valid = [same_sum.warm_start_answer(rng, p, valid=True) for p in prompts]
    assert all(same_sum.reward(a, p) == 1.0 for a, p in zip(valid, prompts, strict=True))
    noise = [same_sum.warm_start_answer(rng, p, valid=False) for p in prompts for _ in range(20)]
    hit = np.mean(
        [same_sum.reward(a, p) for a, p in zip(noise, np.repeat(prompts, 20), strict=True)]
    )
    floor = same_sum.random_guess_rate(prompts)
    assert 0.03 < floor < 0.07 and abs(hit - floor) < 0.02


def test_entropy_ceiling_and_registry():
    expected = np.mean([math.log(len(brute_force_answers(p))) for p in same_sum.eval_prompts(512)])
    assert same_sum.entropy_ceiling() == pytest.approx(expected / 4)
    assert builtin_task("same_sum") is same_sum
    rows = same_sum.verl_rows(6, seed=1)
    for row in rows:
        prompt = row["reward_model"]["ground_truth"]
        assert row["prompt"] == [{"role": "user", "content": f"{prompt}:"}]
        answer = same_sum.valid_answers(prompt)[0]
        assert same_sum.compute_score(row["data_source"], answer, prompt)["score"] == 1.0
