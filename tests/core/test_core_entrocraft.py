"""Entrocraft's core (aepo.core.entropy_methods): the band, its schedule, the three advantage
regimes and the fixed-target variant's alpha, held to the authors' code typed in from
lblaoke/entrocraft 26165bd (``verl/trainer/ppo/core_algos.py``: ``compute_raftpp_*``,
``compute_nsr_*``, ``compute_grpo_*``, ``compute_grpo_range*``, ``compute_entropic_*``)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from aepo.core import (
    AEPOConfig,
    AEPOStep,
    EntrocraftAlpha,
    entrocraft_band,
    group_advantage,
    shape_advantages,
    target_at,
)
from aepo.core.config import ConfigError, EntrocraftConfig, load_aepo_config

# ---- the authors' code, typed in (their +1 / -1 scores) ---------------------------------------


def code_raftpp(token_level_rewards, response_mask):
    scores = token_level_rewards.sum(dim=-1)
    advantages = scores.clone()
    advantages[advantages < 0.0] = 0.0
    return advantages.unsqueeze(-1) * response_mask


def code_nsr(token_level_rewards, response_mask):
    scores = token_level_rewards.sum(dim=-1)
    advantages = scores.clone()
    advantages[advantages > 0.0] = 0.0
    return advantages.unsqueeze(-1) * response_mask


def code_grpo(token_level_rewards, response_mask, index, epsilon=1e-6):
    scores = token_level_rewards.sum(dim=-1)
    id2score, id2mean, id2std = defaultdict(list), {}, {}
    for i in range(scores.shape[0]):
        id2score[index[i]].append(scores[i])
    for idx in id2score:
        if len(id2score[idx]) == 1:
            id2mean[idx], id2std[idx] = torch.tensor(0.0), torch.tensor(1.0)
        else:
            stacked = torch.stack(id2score[idx])
            id2mean[idx], id2std[idx] = torch.mean(stacked), torch.std(stacked)
    for i in range(scores.shape[0]):
        scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + epsilon)
    return scores.unsqueeze(-1) * response_mask


def code_grpo_range(token_level_rewards, response_mask, current_entropy, lower, upper, index):
    if current_entropy > upper:
        return code_raftpp(token_level_rewards, response_mask)
    if current_entropy < lower:
        return code_nsr(token_level_rewards, response_mask)
    return code_grpo(token_level_rewards, response_mask, index)


def code_linear_bounds(step, total_steps, lower_range, upper_range):
    lower = lower_range[0] + (lower_range[1] - lower_range[0]) * step / total_steps
    upper = upper_range[0] + (upper_range[1] - upper_range[0]) * step / total_steps
    return lower, upper


def code_cos_bounds(step, total_steps, lower_range, upper_range):
    progress = 0.5 * (1 - math.cos(math.pi * step / total_steps))
    lower = lower_range[0] + (lower_range[1] - lower_range[0]) * progress
    upper = upper_range[0] + (upper_range[1] - upper_range[0]) * progress
    return lower, upper


def code_entropic(token_level_rewards, response_mask, current_entropy, target_entropy, last_alpha):
    scores = token_level_rewards.sum(dim=-1)
    advantages = scores.clone()
    weights = torch.ones_like(scores)
    alpha = last_alpha + 1.0 * (current_entropy - target_entropy)
    weights[advantages > 0.0] = 1.0 + alpha
    weights[advantages < 0.0] = 1.0 - alpha
    advantages = advantages * weights
    advantages = advantages.unsqueeze(-1) * response_mask
    return advantages, alpha - 0.99 * (current_entropy - target_entropy)


# ---- a batch: 3 groups of 4, binary rewards, ragged masks -------------------------------------

REWARDS = torch.tensor([1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 1, 0], dtype=torch.float32)
GROUPS = [g for g in range(3) for _ in range(4)]
MASK = torch.tensor([[1] * (2 + i % 3) + [0] * (3 - i % 3) for i in range(12)], dtype=torch.float32)


def token_rewards(signed: torch.Tensor) -> torch.Tensor:
    """the code's token_level_rewards: the outcome on the last response token"""
    out = torch.zeros_like(MASK)
    last = MASK.sum(-1).long() - 1
    out[torch.arange(12), last] = signed
    return out


def ours(cfg: AEPOConfig, entropy: float, step: int = 1):
    aepo_step = AEPOStep(cfg)
    start = aepo_step.begin(step, num_prompts=3, samples_per_prompt=4)
    measured = aepo_step.measured(start, entropy)
    grpo = group_advantage(REWARDS, GROUPS).unsqueeze(1) * MASK
    shaped, metrics = shape_advantages(
        cfg, grpo, MASK, scores=REWARDS, entrocraft=measured.entrocraft
    )
    return shaped, metrics, measured


@pytest.mark.parametrize(
    ("entropy", "mode"), [(0.71, "raftpp"), (0.5, "grpo"), (0.6, "grpo"), (0.39, "nsr")]
)
def test_band_advantages_equal_the_codes_on_signed_rewards(entropy, mode):
    cfg = AEPOConfig(
        algorithm="entrocraft", target_entropy=0.5, baselines={"entrocraft": {"band_width": 0.2}}
    )
    shaped, metrics, measured = ours(cfg, entropy)
    assert measured.entrocraft.mode == mode
    assert (measured.entrocraft.lower, measured.entrocraft.upper) == pytest.approx((0.4, 0.6))
    # the code's scorers return +1 / -1: ours maps R -> 2R - 1 for RAFT++ and NSR
    expected = code_grpo_range(token_rewards(2 * REWARDS - 1), MASK, entropy, 0.4, 0.6, GROUPS)
    # (inside the band GRPO's eps sees a std twice as large on +-1: 1e-6-level differences)
    assert shaped == pytest.approx(expected, abs=1e-5)
    assert metrics["aepo/entrocraft_mode"] == {"raftpp": 1.0, "grpo": 0.0, "nsr": -1.0}[mode]
    assert metrics["aepo/entrocraft_lower"] == pytest.approx(0.4)


def test_raftpp_trains_only_positives_and_nsr_only_negatives():
    cfg = AEPOConfig(algorithm="entrocraft", target_entropy=0.5)
    above, m_above, _ = ours(cfg, 0.9)
    below, m_below, _ = ours(cfg, 0.1)
    positive = REWARDS > 0
    assert (above[positive].sum(-1) == MASK[positive].sum(-1)).all()
    assert (above[~positive] == 0).all()
    assert (below[~positive].sum(-1) == -MASK[~positive].sum(-1)).all()
    assert (below[positive] == 0).all()
    assert m_above["aepo/entrocraft_trained_share"] == pytest.approx(7 / 12)
    assert m_below["aepo/entrocraft_trained_share"] == pytest.approx(5 / 12)
    # inside the band: GRPO's own advantages, all-correct group 1 gets none
    inside, m_inside, _ = ours(cfg, 0.5)
    assert inside == pytest.approx(group_advantage(REWARDS, GROUPS).unsqueeze(1) * MASK)
    assert m_inside["aepo/entrocraft_trained_share"] == pytest.approx(8 / 12)


def test_bounds_are_strict_as_in_the_code():
    cfg = AEPOConfig(
        algorithm="entrocraft", target_entropy=0.5, baselines={"entrocraft": {"band_width": 0.0}}
    )
    assert ours(cfg, 0.5)[2].entrocraft.mode == "grpo"  # width 0: H == H* is inside
    assert ours(cfg, 0.5 + 1e-9)[2].entrocraft.mode == "raftpp"
    assert ours(cfg, 0.5 - 1e-9)[2].entrocraft.mode == "nsr"


@pytest.mark.parametrize(
    ("kind", "code_bounds"), [("linear", code_linear_bounds), ("cosine", code_cos_bounds)]
)
def test_scheduled_band_is_the_codes_bound_pairs_one_step_later(kind, code_bounds):
    """The code's reference run: lower [0.6, 0.4], upper [0.7, 0.5] over total_steps; ours:
    centre 0.65 -> 0.45 with width 0.1. The code's step s is ours s + 1 (ours starts the
    schedule at step 1, the code's weight is s / total at verl's global step s)."""
    total = 40
    cfg = AEPOConfig(
        algorithm="entrocraft",
        target_entropy=0.45,
        target_schedule={"kind": kind, "start": 0.65, "steps": total},
    )
    for code_step in range(0, total + 1):
        lower, upper = entrocraft_band(cfg.baselines.entrocraft, target_at(cfg, code_step + 1))
        expected = code_bounds(code_step, total, (0.6, 0.4), (0.7, 0.5))
        assert (lower, upper) == pytest.approx(expected, abs=1e-12), code_step
    # and the mode each step follows those bounds: an entropy of 0.52 is inside at the start,
    # above the band once the upper bound passes below it
    modes = [ours(cfg, 0.52, step=s)[2].entrocraft.mode for s in (1, total // 2, total + 1)]
    assert modes[0] == "nsr" and modes[-1] == "raftpp"


def test_fixed_variant_alpha_recursion_and_advantages_equal_the_codes():
    entropies = [1.3, 0.9, 0.55, 0.4, 0.2, 0.35, 0.5, 2.0]
    target, last = 0.5, 0.0
    cfg = AEPOConfig(
        algorithm="entrocraft",
        target_entropy=target,
        baselines={"entrocraft": {"variant": "fixed"}},
    )
    step = AEPOStep(cfg)
    for i, h in enumerate(entropies):
        if i == 4:  # a resumed run continues alpha (the code restarts it at 0)
            saved = step.state_dict()
            step = AEPOStep(cfg)
            step.load_state_dict(saved)
        start = step.begin(i + 1, num_prompts=3, samples_per_prompt=4)
        measured = step.measured(start, h)
        grpo = group_advantage(REWARDS, GROUPS).unsqueeze(1) * MASK
        shaped, metrics = shape_advantages(
            cfg, grpo, MASK, scores=REWARDS, entrocraft=measured.entrocraft
        )
        expected, new_last = code_entropic(token_rewards(2 * REWARDS - 1), MASK, h, target, last)
        assert measured.entrocraft.alpha == pytest.approx(last + (h - target))
        assert metrics["aepo/entrocraft_alpha"] == pytest.approx(last + (h - target))
        assert shaped == pytest.approx(expected, abs=1e-6), i
        last = new_last
    assert step.entrocraft_alpha.last_alpha == pytest.approx(last)
    # unclipped, as in the code: H = 2.0 with the accumulated state pushes alpha past 1
    assert measured.entrocraft.alpha > 1.0


def test_alpha_state_refuses_a_corrupt_checkpoint():
    alpha = EntrocraftAlpha()
    with pytest.raises(ValueError, match="no 'last_alpha' entry"):
        alpha.load_state_dict({})
    with pytest.raises(ValueError, match="malformed Entrocraft state"):
        alpha.load_state_dict({"last_alpha": float("nan")})
    with pytest.raises(ValueError, match="non-finite"):
        alpha.step(float("inf"), 0.5)


def test_band_variant_reads_this_steps_own_measurement():
    """The code's current_entropy is the batch's own old-log-prob entropy, not last step's."""
    cfg = AEPOConfig(algorithm="entrocraft", target_entropy=0.5)
    step = AEPOStep(cfg)
    modes = []
    for i, h in enumerate([0.9, 0.1, 0.5]):
        start = step.begin(i + 1, num_prompts=3, samples_per_prompt=4)
        modes.append(step.measured(start, h).entrocraft.mode)
    assert modes == ["raftpp", "nsr", "grpo"]


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"baselines\.entrocraft\.band_width"):
        load_aepo_config(
            {"algorithm": "entrocraft", "baselines": {"entrocraft": {"band_width": -0.1}}}
        )
    with pytest.raises(ConfigError, match="variant fixed has no band"):
        load_aepo_config(
            {
                "algorithm": "entrocraft",
                "baselines": {"entrocraft": {"variant": "fixed", "band_width": 0.2}},
            }
        )
    with pytest.raises(ConfigError, match=r"does not read baselines\.entrocraft"):
        load_aepo_config({"algorithm": "aepo", "baselines": {"entrocraft": {"band_width": 0.2}}})
    assert EntrocraftConfig().band_width == 0.1 and EntrocraftConfig().variant == "band"


def test_grpo_inside_the_band_does_not_see_the_sign_map():
    """GRPO is affine-invariant up to its eps: the code's +-1 scores and our {0, 1} rewards give
    the same advantages inside the band (so the engines' GRPO needs no map)."""
    signed = code_grpo(token_rewards(2 * REWARDS - 1), MASK, GROUPS)
    raw = code_grpo(token_rewards(REWARDS.clone()), MASK, GROUPS)
    assert np.allclose(signed.numpy(), raw.numpy(), atol=1e-5)
