"""The 7B presets (configs/*.yaml): checkpoints kept, and the REINFORCE weight at the
authors' effective weight for the paper's batch shape, recomputed from eq1_row_scale."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("verl")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from aepo.core.losses import eq1_row_scale  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PRESETS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
REINFORCE_ALGORITHMS = {"aepo", "aepo_no_temperature", "aepo_advantage"}


def preset(name: str):
    with initialize_config_dir(str(CONFIGS), version_base=None):
        return compose(name)


def authors_weight_under_paper_meaning(
    prompts=512, n=8, mini_prompts=128, reinforce_rows=60, length=500.0
) -> float:
    """The alpha under ``alpha_meaning: paper`` whose REINFORCE / GRPO weight equals the one
    the authors' code gives alpha = 1 (rows replace GRPO rows, token-mean over the
    mini-batch), at the paper's shape, responses of one length."""
    rows, mini_rows = prompts * n, mini_prompts * n
    minibatch = torch.arange(rows) // mini_rows
    reinforce = torch.zeros(rows, dtype=torch.bool)
    per_minibatch = reinforce_rows // (rows // mini_rows)
    for b in range(rows // mini_rows):
        reinforce[b * mini_rows : b * mini_rows + per_minibatch] = True
    scale = eq1_row_scale(
        torch.full((rows,), length),
        reinforce,
        minibatch,
        mode="token-mean",
        rows_per_minibatch=mini_rows,
    )
    # token-mean gives every row the same coefficient, so the authors' REINFORCE / GRPO
    # ratio is alpha = 1; ours is alpha * scale_rf / scale_grpo.
    return float(scale[~reinforce].mean() / scale[reinforce].mean())


def test_the_paper_weight_is_60_of_4036():
    assert authors_weight_under_paper_meaning() == pytest.approx(60 / 4036, rel=1e-5)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_keeps_two_checkpoints(name):
    assert preset(name).trainer.max_actor_ckpt_to_keep == 2


@pytest.mark.parametrize("name", PRESETS)
def test_reinforce_presets_weigh_the_term_as_the_authors_did(name):
    config = preset(name)
    if config.aepo.algorithm not in REINFORCE_ALGORITHMS:
        assert config.aepo.alpha == 1.0  # no REINFORCE term: left at the package default
        return
    # the shape the arithmetic assumes is the preset's own
    assert config.data.train_batch_size == 512 and config.actor_rollout_ref.rollout.n == 8
    assert config.actor_rollout_ref.actor.ppo_mini_batch_size == 128
    assert config.aepo.samples_up == 60
    assert config.aepo.alpha_meaning == "paper"
    assert config.aepo.alpha == pytest.approx(authors_weight_under_paper_meaning(), abs=5e-5)
    assert config.aepo.controller.gain == "fixed"


def test_the_presets_are_the_reinforce_ones_expected():
    names = {n for n in PRESETS if preset(n).aepo.algorithm in REINFORCE_ALGORITHMS}
    assert names == {
        "aepo_h0.25",
        "aepo_h0.5",
        "aepo_h0.75",
        "aepo_h1.0",
        "aepo_linear_anneal",
        "aepo_no_temperature",
        "aepo_advantage",
    }
