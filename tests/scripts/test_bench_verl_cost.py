"""scripts/bench_verl_cost.py's table: medians pooled over runs, steps after the first, and
AEPO/GRPO ratios (the runs themselves need verl's stack: see docs/verl_startup.md)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_verl_cost  # noqa: E402


def test_medians_pool_every_run_and_ratios_are_aepo_over_grpo():
    runs = {
        "grpo": [{"timing_s/step": [1.0, 3.0]}, {"timing_s/step": [2.0]}],
        "aepo": [
            {"timing_s/step": [3.0, 4.0], "aepo/extra_gen_fraction": [0.2, 0.4]},
            {
                "timing_s/step": [5.0],
                "aepo/extra_worker_calls": [2.0, 2.0],
                "aepo/reinforce_samples": [6.0, 8.0],
            },
        ],
    }
    table = bench_verl_cost.summarise(runs)
    assert table["grpo"]["timing_s/step"] == 2.0 and table["aepo"]["timing_s/step"] == 4.0
    text = bench_verl_cost.format_table(table, steps_per_run=4, repeats=2)
    (step,) = [line for line in text.splitlines() if line.startswith("timing_s/step")]
    assert step.split()[-1] == "2.00"
    (tokens,) = [line for line in text.splitlines() if line.startswith("generated tokens")]
    assert tokens.split()[-1] == "1.30"
    assert "extra worker calls / step" in text
    (chosen,) = [line for line in text.splitlines() if line.startswith("REINFORCE rows")]
    assert chosen.split()[-1] == "7.0"


def test_step_one_is_left_out(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:
        for step, value in [(1, 9.0), (2, 1.0), (3, 2.0)]:
            writer.add_scalar("timing_s/step", value, step)
    assert bench_verl_cost.step_values(tmp_path, ("timing_s/step",)) == {
        "timing_s/step": [1.0, 2.0]
    }


def test_cpu_runs_compose_a_config_each_algorithm_accepts():
    """Both runs start from configs/e2e/verl_cpu.yaml, whose aepo: section has AEPO's keys;
    GRPO's run must not carry them (the config check refuses keys an algorithm ignores)."""
    import pytest

    pytest.importorskip("verl")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from aepo.backends.verl.cpu_harness import e2e
    from aepo.backends.verl.trainer import aepo_config_from

    for algorithm in bench_verl_cost.ALGORITHMS:
        overrides = e2e.run_command("previous_step", 4, Path("unused"))[5:]
        overrides += [*bench_verl_cost.cpu_overrides(algorithm), f"aepo.algorithm={algorithm}"]
        with initialize_config_dir(str(e2e.CONFIG_DIR), version_base=None):
            config = compose(e2e.CONFIG_NAME, overrides=overrides)
        OmegaConf.resolve(config)  # as the task runner does (the config interpolates aepo keys)
        cfg = aepo_config_from(config)
        assert cfg.algorithm == algorithm
        assert config.data.train_batch_size == bench_verl_cost.CPU_PROMPTS
        if algorithm == "aepo":
            assert cfg.extra_rollout.max_fraction == 0.51


def test_gpu_runs_drop_the_keys_grpo_does_not_read_from_the_shipped_config():
    """The default (GPU) run composes configs/aepo_h0.5.yaml, whose AEPO keys (alpha, ...)
    GRPO's config check refuses; the deletions make it GRPO's config."""
    import pytest

    pytest.importorskip("verl")
    from hydra import compose, initialize_config_dir

    from aepo.backends.verl.trainer import aepo_config_from

    configs = Path(__file__).resolve().parents[2] / "configs"
    for algorithm in bench_verl_cost.ALGORITHMS:
        drop = bench_verl_cost.unread_keys(algorithm, configs, "aepo_h0.5", [])
        assert (algorithm == "grpo") == bool(drop), drop
        with initialize_config_dir(str(configs), version_base=None):
            config = compose("aepo_h0.5", overrides=[f"aepo.algorithm={algorithm}", *drop])
        assert aepo_config_from(config).algorithm == algorithm
