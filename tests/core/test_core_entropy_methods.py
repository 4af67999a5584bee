"""The 80/20 mask and the adaptive entropy coefficient (aepo.core.entropy_methods), and the
config sections that set them."""

from __future__ import annotations

import math

import pytest
import torch

from aepo.core import (
    AdaptiveEntropyCoef,
    AEPOConfig,
    AEPOStep,
    ConfigError,
    high_entropy_token_mask,
    load_aepo_config,
    recipe_for,
    top_entropy_advantages,
)
from aepo.core.config import AdaptiveEntropyConfig
from aepo.core.entropy_methods import quantile


@pytest.mark.parametrize("q", [0.0, 0.2, 0.5, 0.8, 0.999, 1.0])
def test_quantile_equals_torchs_linear_interpolation(q):
    values = torch.rand(1001, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(quantile(values, q), torch.quantile(values, q))


def test_high_entropy_mask_keeps_the_top_share_of_response_tokens_only():
    entropy = torch.arange(20.0).reshape(2, 10)
    mask = torch.ones(2, 10)
    mask[1, 5:] = 0  # padding with the largest entropies must not count nor be kept
    kept, threshold = high_entropy_token_mask(entropy, mask, 0.2)
    valid = entropy[mask.bool()]
    assert threshold == pytest.approx(float(torch.quantile(valid, 0.8)))
    assert kept.sum() == 3  # 15 tokens, top 20%
    assert set(entropy[kept].tolist()) == {12.0, 13.0, 14.0}
    assert not (kept & ~mask.bool()).any()


def test_ties_at_the_threshold_are_kept_and_an_empty_mask_keeps_nothing():
    entropy = torch.tensor([[0.1, 0.5, 0.5, 0.5, 0.5]])
    kept, _ = high_entropy_token_mask(entropy, torch.ones(1, 5), 0.2)
    assert kept.sum() == 4  # as TRL's `>=`
    kept, threshold = high_entropy_token_mask(entropy, torch.zeros(1, 5), 0.2)
    assert not kept.any() and math.isnan(threshold)


def test_top_entropy_advantages_zero_the_rest_and_report_the_share():
    adv = torch.full((1, 10), 2.0)
    entropy = torch.arange(10.0).unsqueeze(0)
    shaped, metrics = top_entropy_advantages(adv, entropy, torch.ones(1, 10), 0.2)
    assert shaped.tolist() == [[0.0] * 8 + [2.0, 2.0]]
    assert metrics["aepo/top_entropy_token_fraction"] == pytest.approx(0.2)


def coef(**kw):
    return AdaptiveEntropyCoef(AdaptiveEntropyConfig(**kw))


T = 0.5
"""the target the coefficient chases in these tests"""


def test_coefficient_steps_towards_the_target_within_its_range():
    c = coef(step=0.3, max_coef=0.5)
    assert c.applied(T) == 0.0, "no bonus before the first measurement"
    c.update(0.4, T)  # below the target: more bonus
    assert c.coef == pytest.approx(0.3) and c.applied(T) == pytest.approx(0.3)
    c.update(0.5, T)  # at the target counts as below (TRL: <=)
    assert c.coef == pytest.approx(0.5), "clipped at max_coef"
    c.update(0.6, T)  # above: less bonus, and none applied while above
    assert c.coef == pytest.approx(0.2) and c.applied(T) == 0.0
    c.update(0.9, T)
    c.update(0.9, T)
    assert c.coef == 0.0, "clipped at min_coef"
    with pytest.raises(ValueError, match="non-finite"):
        c.update(float("nan"), T)


def test_begin_step_applies_skyworks_alpha_k_then_moves_c():
    c = coef(initial_coef=0.1, step=0.05)
    assert c.begin_step(0.4, T) == pytest.approx(0.1)  # c_k gated by this step's e_k
    assert c.coef == pytest.approx(0.15)
    assert c.begin_step(0.7, T) == 0.0
    assert c.coef == pytest.approx(0.1)


def test_coefficient_is_aepo_step_state_and_round_trips():
    cfg = AEPOConfig(algorithm="adaptive_entropy", target_entropy=0.3)
    step = AEPOStep(cfg)
    step.adaptive_entropy.update(0.1, 0.3)
    step.adaptive_entropy.update(0.2, 0.3)
    state = step.state_dict()
    assert state["adaptive_entropy"] == {"coef": pytest.approx(0.01), "last_entropy": 0.2}
    again = AEPOStep(cfg)
    again.load_state_dict(state)
    assert again.adaptive_entropy.state_dict() == step.adaptive_entropy.state_dict()
    del state["adaptive_entropy"]
    with pytest.raises(ValueError, match="no 'adaptive_entropy' entry"):
        AEPOStep(cfg).load_state_dict(state)
    assert AEPOStep(AEPOConfig(algorithm="grpo")).adaptive_entropy is None


def test_recipes_of_the_entropy_controls():
    def recipe(algo):
        return recipe_for(AEPOConfig(algorithm=algo))

    assert recipe("clip_cov").policy_loss == "clip_cov"
    assert recipe("kl_cov").policy_loss == "kl_cov"
    assert recipe("grpo").policy_loss == "vanilla"
    adaptive = recipe("adaptive_entropy")
    assert adaptive.adaptive_entropy and adaptive.has_state and adaptive.targets_entropy
    assert adaptive.needs_current_entropy and not adaptive.extra_rollout
    assert recipe("top_entropy").top_entropy_quantile == 0.2
    assert recipe("aepo").top_entropy_quantile is None
    for algo in ("clip_cov", "kl_cov", "top_entropy"):
        r = recipe(algo)
        assert not (r.has_state or r.targets_entropy or r.needs_current_entropy), algo


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"clip_cov": {"lower": 5, "upper": 1}}, r"baselines\.clip_cov: .*upper must be > lower"),
        ({"kl_cov": {"ratio": 0}}, r"baselines\.kl_cov\.ratio"),
        (
            {"adaptive_entropy": {"initial_coef": 2}},
            r"baselines\.adaptive_entropy: .*need min_coef <= initial_coef",
        ),
        ({"adaptive_entropy": {"update": "epoch"}}, r"baselines\.adaptive_entropy\.update"),
        ({"top_entropy": {"quantile": 1.5}}, r"baselines\.top_entropy\.quantile"),
        ({"top_entropy": {"quantil": 0.2}}, r"baselines\.top_entropy\.quantil: unknown key"),
    ],
)
def test_bad_entropy_control_settings_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        load_aepo_config({"baselines": section})
