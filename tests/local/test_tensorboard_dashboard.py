"""The dashboard a local run writes: TensorBoard's own Custom Scalars plugin reads its layout,
and every line it draws is a scalar the run logs."""

from __future__ import annotations

import json

import pytest

from aepo.backends.local.presets import tiny_run_config
from aepo.backends.local.settings import run_config_from_dict
from aepo.backends.local.trainer import LocalTrainer
from aepo.core.step import TRACKING_TOLERANCE
from aepo.tensorboard_layout import (
    ENTROPY_CHART,
    LAYOUT_FILE,
    REWARD_CHART,
    SAMPLES_CHART,
    layout_tags,
)
from tests.tensorboard_reader import read_dashboard, unwritten_tags


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dashboard")
    raw = tiny_run_config(
        "aepo",
        0.5,
        output_dir=str(out / "run"),
        steps=3,
        prompts_per_step=6,
        samples_per_prompt=4,
        mini_batches=2,
        save_every=0,
        progress=False,
        torch_threads=1,
        cache_dir=str(out / "cache"),  # the default warm start: the shipped one
    )
    LocalTrainer(run_config_from_dict(raw, source="test")).fit()
    return out / "run"


def test_tensorboard_reads_the_layout_and_every_tag_is_logged(run_dir):
    layout, written = read_dashboard(run_dir / "tensorboard")
    (category,) = layout["category"]
    charts = {chart["title"]: chart for chart in category["chart"]}
    assert list(charts) == [ENTROPY_CHART, REWARD_CHART, SAMPLES_CHART]
    band, *lines = charts[ENTROPY_CHART]["margin"]["series"]
    assert band == {
        "value": "aepo/target_entropy",
        "lower": "aepo/target_low",
        "upper": "aepo/target_high",
    }
    assert [s["value"] for s in lines] == ["aepo/entropy", "actor/entropy"]
    assert unwritten_tags(layout, written) == set()  # the guard's line included
    assert {"aepo/reinforce_samples", "aepo/extra_gen_fraction", "reward/mean"} <= layout_tags()


def test_the_band_is_the_demo_tolerance_around_the_target(run_dir):
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        step = json.loads(line)
        assert step["aepo/target_entropy"] == 0.5
        assert step["aepo/target_low"] == pytest.approx(0.5 * (1 - TRACKING_TOLERANCE))
        assert step["aepo/target_high"] == pytest.approx(0.5 * (1 + TRACKING_TOLERANCE))


def test_the_scalars_file_is_the_one_tensorboard_keeps_polling(run_dir):
    # TensorBoard reads a run's event files in name order and then polls only the last
    files = sorted(p.name for p in (run_dir / "tensorboard").iterdir())
    assert files[0] == LAYOUT_FILE and len(files) == 2
