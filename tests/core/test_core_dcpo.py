"""DCPO's core (aepo.core.entropy_methods): held to the authors' code, typed in from
597358816/AEPO 15dc716 ``verl/trainer/ray_trainer.py`` (branch ``alg == "DCPO"``), and its own
effect on a policy: the mixed-in ratio moves pi towards pi_old at T."""

from __future__ import annotations

import math

import pytest
import torch

from aepo.core import AEPOConfig, AEPOStep, dcpo_advantages, dcpo_control
from aepo.core.config import ConfigError, DCPOConfig, load_aepo_config
from aepo.core.entropy import token_logprobs_and_entropy


def authors_dcpo(advantages, old_log_probs, old_log_probs_t, scores, entropy, entropy_base):
    """The authors' lines, with their names (bool_reward: score > 0.05)."""
    bool_reward = scores > 0.05
    entropy_delta = entropy_base - entropy
    entropy_factor = torch.exp(old_log_probs_t - old_log_probs)
    true_ratio = (bool_reward == 1).sum() / len(scores)
    alpha = abs(entropy_delta)
    alpha = min(alpha, 0.1)
    alpha = alpha / true_ratio
    alpha = alpha / (alpha + 1)
    return (1 - alpha) * advantages + alpha * bool_reward.to(advantages.dtype).unsqueeze(
        1
    ) * entropy_factor


def authors_temperature(entropy, entropy_base):
    return 1.2 if entropy <= entropy_base else 0.8


@pytest.mark.parametrize(
    ("entropy", "target"), [(0.0, 0.5), (0.45, 0.5), (0.5, 0.5), (0.9, 0.5), (0.52, 0.5)]
)
def test_dcpo_equals_the_authors_code(entropy, target):
    gen = torch.Generator().manual_seed(3)
    rows, length = 12, 7
    advantages = torch.randn(rows, 1, generator=gen).expand(rows, length).clone()
    logp = -torch.rand(rows, length, generator=gen) * 3
    logp_t = logp + 0.2 * torch.randn(rows, length, generator=gen)
    scores = (torch.rand(rows, generator=gen) < 0.4).float()
    mask = torch.ones(rows, length)
    cfg = DCPOConfig()
    control = dcpo_control(cfg, entropy, target)
    assert control.temperature == authors_temperature(entropy, target)
    ours, metrics = dcpo_advantages(cfg, control, advantages, logp, logp_t, scores, mask)
    expected = authors_dcpo(advantages, logp, logp_t, scores, entropy, target)
    torch.testing.assert_close(ours, expected)
    c = min(abs(target - entropy), 0.1) / float((scores > 0.05).float().mean())
    assert metrics["aepo/dcpo_mix"] == pytest.approx(c / (c + 1))
    assert metrics["aepo/temperature"] == control.temperature


def test_dcpo_step_one_reads_zero_as_the_code_does_then_the_previous_measurement():
    step = AEPOStep(AEPOConfig(algorithm="dcpo", target_entropy=0.3))
    first = step.measured(step.begin(1, num_prompts=2, samples_per_prompt=2), 0.8)
    # the code's `entropy = 0` before the first update: sample hot, gap min(H*, 0.1)
    assert (first.dcpo.entropy, first.dcpo.temperature, first.dcpo.gap) == (0.0, 1.2, 0.1)
    assert first.metrics["aepo/target_entropy"] == 0.3
    second = step.measured(step.begin(2, num_prompts=2, samples_per_prompt=2), 0.25)
    assert second.dcpo.entropy == 0.8 and second.dcpo.temperature == 0.8
    third = step.measured(step.begin(3, num_prompts=2, samples_per_prompt=2), 0.1)
    assert third.dcpo.entropy == 0.25 and third.dcpo.temperature == 1.2
    assert third.dcpo.gap == pytest.approx(0.05)
    assert first.plan is None, "DCPO generates nothing extra"

    # What DCPO keeps (the previous measurement) resumes exactly.
    resumed = AEPOStep(AEPOConfig(algorithm="dcpo", target_entropy=0.3))
    resumed.load_state_dict(step.state_dict())
    again = resumed.measured(resumed.begin(4, num_prompts=2, samples_per_prompt=2), 0.3)
    fourth = step.measured(step.begin(4, num_prompts=2, samples_per_prompt=2), 0.3)
    assert again.dcpo == fourth.dcpo and again.dcpo.entropy == 0.1


def test_dcpo_without_positives_keeps_grpo_where_the_code_gives_nan():
    advantages = torch.zeros(4, 3)
    logp = torch.full((4, 3), -1.0)
    scores = torch.zeros(4)
    control = dcpo_control(DCPOConfig(), 0.2, 0.5)
    nan = authors_dcpo(advantages, logp, logp - 0.1, scores, 0.2, 0.5)
    assert torch.isnan(nan).all()
    ours, metrics = dcpo_advantages(
        DCPOConfig(), control, advantages, logp, logp - 0.1, scores, torch.ones(4, 3)
    )
    assert torch.equal(ours, advantages) and metrics["aepo/dcpo_mix"] == 0.0


def test_dcpo_pads_get_no_advantage():
    control = dcpo_control(DCPOConfig(), 0.2, 0.5)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    ours, _ = dcpo_advantages(
        DCPOConfig(),
        control,
        torch.zeros(1, 3),
        torch.zeros(1, 3),
        torch.ones(1, 3),
        torch.ones(1),
        mask,
    )
    assert ours[0, 2] == 0 and ours[0, 0] > 0


@pytest.mark.parametrize(("temperature", "sign"), [(1.2, 1), (0.8, -1)])
def test_dcpo_term_moves_entropy_towards_pi_old_at_t(temperature, sign):
    """DCPO's own effect: with the group advantage 0, the mixed-in term's expected policy
    gradient is sum_x pi_T(x) grad log pi(x): pi moves towards pi_old at T, so entropy rises
    at T_high and falls at T_low. Exact expectation over a 6-token vocabulary."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.5], requires_grad=True)
    tokens = torch.arange(6).unsqueeze(0)
    logp_1, h_before = token_logprobs_and_entropy(
        logits.detach().view(1, 1, 6).expand(1, 6, 6), tokens, temperature=1.0
    )
    logp_t, _ = token_logprobs_and_entropy(
        logits.detach().view(1, 1, 6).expand(1, 6, 6), tokens, temperature=temperature
    )
    control = dcpo_control(DCPOConfig(), 0.2 if temperature > 1 else 0.8, 0.5)
    assert control.temperature == temperature
    adv, _ = dcpo_advantages(
        DCPOConfig(), control, torch.zeros(1, 6), logp_1, logp_t, torch.ones(1), torch.ones(1, 6)
    )
    probs = torch.softmax(logits, -1)
    # the surrogate's gradient at ratio 1, each token weighted by how often pi samples it
    objective = (probs.detach() * adv[0] * torch.log_softmax(logits, -1)).sum()
    objective.backward()
    with torch.no_grad():
        moved = torch.softmax(logits + 0.5 * logits.grad, -1)
        entropy = lambda p: float(-(p * p.log()).sum())  # noqa: E731
    assert sign * (entropy(moved) - entropy(probs.detach())) > 1e-4
    assert math.isfinite(float(h_before.mean()))


def test_dcpo_section_is_refused_under_another_algorithm():
    with pytest.raises(ConfigError, match="does not read baselines.dcpo"):
        load_aepo_config({"algorithm": "grpo", "baselines": {"dcpo": {"max_gap": 0.2}}})
    with pytest.raises(ConfigError, match="t_high must be > t_low"):
        load_aepo_config({"algorithm": "dcpo", "baselines": {"dcpo": {"t_high": 0.7}}})
