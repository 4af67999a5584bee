"""Checks of one AEPO run on verl's real stack, read from its TensorBoard scalars; shared by
the e2e tests of both trainers, at one node and at the scale-out shape (all from
configs/e2e/verl_cpu.yaml)."""

from __future__ import annotations

import pytest

# configs/e2e/verl_cpu.yaml
T_HIGH, T_LOW, TARGET = 1.5, 0.5, 0.85
EXTRA_SAMPLES, MOST_REINFORCE = 16, 6


def scalar(run: dict, tag: str) -> dict[int, float]:
    assert tag in run, f"{tag} not in the TensorBoard logs (found {sorted(run)})"
    steps, values = run[tag]
    return dict(zip(steps.tolist(), values.tolist(), strict=True))


def check_scalars_at_every_step(run: dict, steps, tags) -> None:
    """Every ``aepo/`` tag of ``tags`` at each of ``steps``, the temperature by the
    controller's rule and the extras generated."""
    for tag in tags:
        if tag.startswith("aepo/"):
            assert sorted(scalar(run, tag)) == list(steps), tag
    for step, temperature in scalar(run, "aepo/temperature").items():
        entropy = scalar(run, "aepo/temperature_entropy")[step]
        # The controller's rule: below the target, sample hotter.
        assert temperature == pytest.approx(T_HIGH if entropy < TARGET else T_LOW), step
        assert scalar(run, "aepo/extra_samples")[step] >= EXTRA_SAMPLES


def check_extras_at_the_controllers_temperature(run: dict) -> None:
    """vLLM's own log-probs of the extra samples: hotter samples are less likely under the
    policy than its T = 1 samples (whose mean surprise is the policy entropy), colder ones
    more likely. A temperature ignored by the agent loop or vLLM fails this."""
    nll = scalar(run, "aepo/extra_rollout_nll")
    entropy = scalar(run, "actor/entropy")
    for step, temperature in scalar(run, "aepo/temperature").items():
        if temperature > 1:
            assert nll[step] > 1.1 * entropy[step], (step, nll[step], entropy[step])
        else:
            assert nll[step] < 0.9 * entropy[step], (step, nll[step], entropy[step])


def check_extra_worker_calls(run: dict, second_generation) -> None:
    """Each step with REINFORCE rows makes their old-log-prob and reference passes (2 worker
    calls beyond GRPO's); ``second_generation(step)`` steps also generate the extras after
    the measurement: wake, generate, sleep."""
    calls = scalar(run, "aepo/extra_worker_calls")
    chosen = scalar(run, "aepo/reinforce_samples")
    for step, count in calls.items():
        expected = (3 if second_generation(step) else 0) + (2 if chosen[step] else 0)
        assert count == expected, (step, count, chosen[step])
