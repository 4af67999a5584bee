"""EntroPIC's core (aepo.core.entropy_methods): the PI controller and the added loss term,
held to the authors' code typed in from yk7333/EntroPIC 2470730 (``dp_actor.py``,
``core_algos.compute_policy_loss_entropic``), and the term's own effect on a policy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aepo.core import AEPOConfig, AEPOStep, EntroPICController, entropic_adjust_loss
from aepo.core.config import ConfigError, EntroPICConfig, load_aepo_config


def authors_alphas(entropies, target, k_p=1.0, k_i=0.01):
    """dp_actor.py's lines, one micro-batch = one mini-batch (weight 1)."""
    accumulate_entropy_error, alphas = 0.0, []
    for entropy_loss_item in entropies:
        control_alpha_i = accumulate_entropy_error * k_i
        control_alpha_p = (entropy_loss_item - target) * k_p
        control_alpha = np.clip(control_alpha_i + control_alpha_p, -1.0, 1.0)
        accumulate_entropy_error += (entropy_loss_item - target) * 1
        alphas.append(float(control_alpha))
    return alphas, accumulate_entropy_error


def test_pi_controller_equals_the_authors_code_and_resumes():
    entropies = [0.9, 0.7, 0.55, 0.45, 0.3, 0.2, 2.5, 0.1]
    expected, integral = authors_alphas(entropies, 0.5)
    controller = EntroPICController(EntroPICConfig())
    ours = [controller.step(h, 0.5) for h in entropies[:4]]
    resumed = EntroPICController(EntroPICConfig())
    resumed.load_state_dict(controller.state_dict())
    ours += [resumed.step(h, 0.5) for h in entropies[4:]]
    assert ours == pytest.approx(expected)
    assert resumed.integral == pytest.approx(integral)
    assert 1.0 in ours, "the clip at +-1 was exercised"
    with pytest.raises(ValueError, match="no 'integral' entry"):
        resumed.load_state_dict({"last_alpha": 0.0})


def test_training_step_cadence_sets_alpha_at_the_measurement_and_saves_the_integral():
    cfg = AEPOConfig(
        algorithm="entropic",
        target_entropy=0.4,
        baselines={"entropic": {"update": "training_step"}},
    )
    step = AEPOStep(cfg)
    alphas = [
        step.measured(step.begin(k, num_prompts=2, samples_per_prompt=2), h).entropic_alpha
        for k, h in ((1, 0.6), (2, 0.5))
    ]
    assert alphas == pytest.approx(authors_alphas([0.6, 0.5], 0.4)[0])
    again = AEPOStep(cfg)
    again.load_state_dict(step.state_dict())
    assert again.entropic.state_dict() == step.entropic.state_dict()
    measured = again.measured(again.begin(3, num_prompts=2, samples_per_prompt=2), 0.2)
    assert measured.metrics["aepo/entropic_alpha"] == measured.entropic_alpha
    assert measured.metrics["aepo/target_entropy"] == 0.4
    # optimizer_step (the default): alpha is set in the update, not at the measurement
    default = AEPOStep(AEPOConfig(algorithm="entropic"))
    assert (
        default.measured(default.begin(1, num_prompts=1, samples_per_prompt=2), 0.3).entropic_alpha
        is None
    )


def authors_adjust(log_prob, old_log_prob, advantages, response_mask, control_alpha):
    """compute_policy_loss_entropic's added lines, with verl 0.9.1's token-mean agg_loss over
    the update's response tokens (batch_num_tokens, dp_size 1)."""
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    prob_high = log_prob > torch.log(torch.tensor(0.95))
    prob_mask = response_mask * prob_high
    loss_mat = -ratio * advantages.abs()
    return control_alpha * (loss_mat * prob_mask).sum() / response_mask.sum()


def test_adjust_term_equals_the_authors_code():
    gen = torch.Generator().manual_seed(1)
    log_prob = -torch.rand(6, 5, generator=gen) * 0.2  # p in (0.82, 1): both sides of 0.95
    old = log_prob + 0.05 * torch.randn(6, 5, generator=gen)
    adv = torch.randn(6, 1, generator=gen).expand(6, 5)
    mask = torch.ones(6, 5)
    mask[0, 3:] = 0
    for alpha in (0.7, -0.4):
        ours = entropic_adjust_loss(log_prob, old, adv, mask, alpha, 0.95)
        torch.testing.assert_close(ours, authors_adjust(log_prob, old, adv, mask, alpha))


@pytest.mark.parametrize(("alpha", "sign"), [(0.5, -1), (-0.5, 1)])
def test_adjust_term_sharpens_above_the_target_and_flattens_below(alpha, sign):
    """EntroPIC's own effect: alpha > 0 (entropy above H*) lowers the entropy of a policy whose
    sampled token is already likely; alpha < 0 raises it. One gradient step on the term alone."""
    logits = torch.tensor([[5.0, 0.5, 0.0, -0.5]], requires_grad=True)
    log_prob = torch.log_softmax(logits, -1)[:, :1]  # token 0, p ~ 0.95+
    assert math.exp(float(log_prob.detach())) > 0.95
    loss = entropic_adjust_loss(
        log_prob, log_prob.detach(), torch.ones(1, 1), torch.ones(1, 1), alpha, 0.95
    )
    loss.backward()
    with torch.no_grad():

        def entropy(z):
            p = torch.softmax(z, -1)
            return float(-(p * p.log()).sum())

        moved = logits - 1.0 * logits.grad
        assert sign * (entropy(moved) - entropy(logits)) > 1e-5


def test_entropic_section_is_checked():
    with pytest.raises(ConfigError, match="does not read baselines.entropic"):
        load_aepo_config({"algorithm": "grpo", "baselines": {"entropic": {"integral_gain": 0.1}}})
    with pytest.raises(ConfigError, match=r"baselines\.entropic\.high_prob_threshold"):
        load_aepo_config(
            {"algorithm": "entropic", "baselines": {"entropic": {"high_prob_threshold": 1.5}}}
        )
