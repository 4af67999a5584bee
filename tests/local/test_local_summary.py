"""The summary columns the demo and the benchmark report."""

from __future__ import annotations

import pytest

from aepo.backends.local.summary import format_table, summarize


def history(entropies, rewards, extra=0.0, generated=100.0):
    return [
        {
            "step": i + 1,
            "actor/entropy": h,
            "reward/mean": r,
            "aepo/extra_gen_tokens": extra,
            "perf/gen_tokens": generated + extra,
            "perf/step_time_s": 0.5,
            "perf/tokens_per_s": 200.0,
        }
        for i, (h, r) in enumerate(zip(entropies, rewards, strict=True))
    ]


def test_summary_columns():
    entropies = [0.8, 0.6, 0.4, 0.2, 0.3, 0.1, 0.3, 0.1]
    rewards = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9]
    s = summarize("aepo", history(entropies, rewards, extra=5.0), target=0.25)
    assert s.entropy_mean == pytest.approx(0.2)  # last half: 0.3, 0.1, 0.3, 0.1
    assert s.entropy_std == pytest.approx(0.1)
    assert s.tracking_error == pytest.approx(0.2)  # |0.2 - 0.25| / 0.25
    # deviations 0.05, -0.15, 0.05, -0.15: RMS sqrt(0.0125) over 0.25
    assert s.rms_deviation == pytest.approx(0.0125**0.5 / 0.25)
    assert s.step_std == pytest.approx((8 / 9 * 0.04) ** 0.5)  # std of -0.2, +0.2, -0.2
    assert s.final_reward == pytest.approx(0.8)  # last quarter: 0.7, 0.9
    assert s.last_quarter_entropy == pytest.approx(0.2)
    assert s.first_entropy == 0.8
    assert s.extra_token_fraction == pytest.approx(0.05)  # 5 extra per 100 GRPO tokens
    table = format_table([s, summarize("grpo", history(entropies, rewards))], timing=True)
    assert (
        "| aepo " in table
        and "20.0%" in table
        and "0.447" in table
        and "5.0%" in table
        and "| -" in table
    )


def test_summary_of_an_empty_run_fails_clearly():
    with pytest.raises(ValueError, match="'x' has no logged steps"):
        summarize("x", [])


def test_deviation_follows_each_steps_target_under_a_schedule():
    """A run exactly on a moving target has no tracking error, however far the schedule's end
    is; the same entropies judged against the end alone would have one."""
    targets = [1.0 - 0.25 * i / 19 for i in range(20)]
    on_schedule = [
        {"actor/entropy": t, "reward/mean": 1.0, "aepo/target_entropy": t} for t in targets
    ]
    on_line = summarize("on the schedule", on_schedule, 0.75)
    assert on_line.tracking_error == 0 and on_line.rms_deviation == 0
    offset = [dict(h, **{"actor/entropy": h["actor/entropy"] + 0.05}) for h in on_schedule]
    off = summarize("0.05 above", offset, 0.75)
    last_half = targets[10:]
    assert off.tracking_error == pytest.approx(0.05 / (sum(last_half) / len(last_half)))
    unscheduled = [{k: v for k, v in h.items() if k != "aepo/target_entropy"} for h in on_schedule]
    assert summarize("judged against the end", unscheduled, 0.75).tracking_error > 0.05


def test_guard_steps_and_lowest_reward_show_a_run_that_nearly_died():
    """A run whose reward fell to 0 and recovered ends well; only its lowest step and the
    steps the reward guard held tell a reader it nearly died."""
    rewards = [0.6, 0.3, 0.0, 0.0, 0.4, 0.9, 0.9, 0.9]
    steps = history([0.5] * 8, rewards)
    for step in steps[2:4]:
        step["aepo/guard"] = 1.0
    s = summarize("aepo", steps, target=0.5)
    assert (s.guard_steps, s.min_reward, s.final_reward) == (2, 0.0, 0.9)
    assert summarize("grpo", history([0.5] * 8, rewards)).guard_steps == 0
