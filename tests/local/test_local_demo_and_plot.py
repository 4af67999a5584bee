"""The demo's outputs, ``aepo plot`` on them, and the shipped tiny configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from aepo.backends.local.demo import run_demo, target_checks
from aepo.backends.local.presets import tiny_config_files
from aepo.backends.local.settings import load_run_config
from aepo.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    small = {
        "prompts_per_step": 4,
        "samples_per_prompt": 4,
        "mini_batches": 2,
        "warm_start": {"steps": 100, "batch_size": 64, "valid_fraction": 1.0},
        "cache_dir": str(tmp_path_factory.mktemp("cache")),
    }
    summaries = run_demo(
        out, [0.1, 0.3], steps=3, progress=False, threads=1, trainer_overrides=small
    )
    return out, summaries


def test_demo_writes_figure_summary_and_one_run_per_curve(demo_dir):
    out, summaries = demo_dir
    assert [s.name for s in summaries] == ["grpo", "aepo_H*=0.1", "aepo_H*=0.3"]
    assert [s.target for s in summaries] == [None, 0.1, 0.3]
    assert (out / "entropy.png").stat().st_size > 10_000
    saved = json.loads((out / "summary.json").read_text())
    assert saved[1]["tracking_error"] == pytest.approx(abs(saved[1]["entropy_mean"] - 0.1) / 0.1)
    assert saved[0]["extra_token_fraction"] == 0.0
    assert saved[1]["extra_token_fraction"] > 0.0
    assert len(target_checks(summaries)) == 1 + 3 * 2


def test_plot_command_reads_tensorboard_logs(demo_dir, tmp_path):
    from aepo.plot.curves import load_scalars

    out, _ = demo_dir
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    scalars = load_scalars(runs[0])
    assert list(scalars["actor/entropy"][0]) == [1, 2, 3]
    png = tmp_path / "curves.png"
    assert main(["plot", *map(str, runs), "-o", str(png)]) == 0
    assert png.stat().st_size > 10_000


def test_plot_command_names_a_missing_run_dir(tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    assert main(["plot", str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(tiny_config_files()))
def test_shipped_tiny_configs_load_and_match_the_presets(name):
    path = CONFIGS / name
    assert path.is_file(), f"{path} missing: the demo presets and configs/tiny must agree"
    config = load_run_config(path)
    assert yaml.safe_load(path.read_text()) == tiny_config_files()[name]
    assert config.trainer.model == "builtin" and config.trainer.data == "builtin"


def test_no_stray_tiny_configs():
    assert {p.name for p in CONFIGS.glob("*.yaml")} == set(tiny_config_files())


def test_plot_labels_tell_apart_runs_in_same_named_folders(tmp_path):
    """The benchmark writes every method to ``<method>/seed0``: folder names alone clash."""
    from aepo.plot.curves import run_labels

    methods = ["grpo", "clip_cov", "kl_cov", "adaptive_entropy", "top_entropy"]
    dirs = [tmp_path / m / "seed0" for m in methods] + [tmp_path / "solo"]
    assert run_labels(dirs) == [f"{m}/seed0" for m in methods] + ["solo"]


def test_plot_draws_more_runs_than_colours_each_distinguishable(tmp_path):
    import numpy as np

    from aepo.plot.curves import ENTROPY, REWARD, TARGET, plot_runs

    steps = np.arange(1, 6)
    runs = {
        f"run{i}": {ENTROPY: (steps, 0.1 * i + 0 * steps), REWARD: (steps, 0.5 + 0 * steps)}
        for i in range(13)
    }
    runs["run0"][TARGET] = (steps, 0.25 + 0 * steps)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved = {}
    real_savefig = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        saved["fig"] = fig
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        plot_runs(runs, tmp_path / "many.png")
    finally:
        plt.Figure.savefig = real_savefig
    lines = saved["fig"].axes[0].get_legend().get_lines()
    looks = {(line.get_color(), line.get_linestyle()) for line in lines}
    assert len(lines) == 13 and len(looks) == 13
