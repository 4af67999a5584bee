"""scripts/bench_vs_trl.py's pure parts: the mapping of our settings onto TRL's GRPOConfig,
the prompt stream it hands TRL and the metrics of its table. They run without TRL; the one
test that builds a real GRPOConfig is skipped when TRL (the `bench` extra) is absent."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

from aepo.backends.local.presets import TINY_TRAINER, tiny_run_config
from aepo.backends.local.prompts import DigitSumPrompts
from aepo.backends.local.settings import run_config_from_dict

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_vs_trl.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_vs_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_vs_trl"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules["bench_vs_trl"]


def tiny(**trainer):
    return run_config_from_dict(tiny_run_config("aepo", 0.25, **trainer), source="test")


def test_importing_the_script_does_not_import_trl():
    # A fresh process: TRL is imported only by the runs, so the pure parts work without it.
    code = (
        "import importlib.util as u, sys; "
        f"s = u.spec_from_file_location('b', {str(SCRIPT)!r}); m = u.module_from_spec(s); "
        "sys.modules['b'] = m; s.loader.exec_module(m); print('trl' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_settings_map_onto_trl_one_step_per_generation(bench):
    config = tiny()
    s = config.trainer
    kw = bench.trl_config_kwargs(s, config.aepo, steps=40, target=None, output_dir="o")
    rows = s.prompts_per_step * s.samples_per_prompt
    # One of our steps = one TRL generation of the same rows, cut into our mini-batches.
    assert kw["per_device_train_batch_size"] * kw["steps_per_generation"] == rows
    assert kw["steps_per_generation"] == s.mini_batches == TINY_TRAINER["mini_batches"]
    assert kw["gradient_accumulation_steps"] == 1 and kw["num_iterations"] == 1
    assert kw["max_steps"] == 40 * s.mini_batches
    assert kw["num_generations"] == s.samples_per_prompt
    assert kw["max_completion_length"] == s.max_new_tokens
    assert (kw["loss_type"], kw["delta"], kw["beta"]) == ("bnpo", 3.0, 0.0)
    assert kw["epsilon"] == kw["epsilon_high"] == config.aepo.clip_ratio == 0.2
    assert (kw["temperature"], kw["top_k"], kw["top_p"]) == (1.0, 0, 1.0)
    assert kw["learning_rate"] == s.lr and kw["lr_scheduler_type"] == "constant"
    assert kw["max_grad_norm"] == s.grad_clip and kw["weight_decay"] == s.weight_decay
    assert (kw["bf16"], kw["shuffle_dataset"], kw["seed"]) == (False, False, s.seed)
    assert "use_adaptive_entropy" not in kw

    adaptive = bench.trl_config_kwargs(
        s, config.aepo, steps=40, target=0.3, output_dir="o", coef_delta=0.01
    )
    assert adaptive["use_adaptive_entropy"] is True
    assert (adaptive["entropy_target"], adaptive["entropy_coef_delta"]) == (0.3, 0.01)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mini_batches": 3}, "not a multiple of mini_batches = 3"),
        ({"loss_agg": "seq-mean-token-mean"}, "only token-mean"),
        ({"ppo_epochs": 2}, "1 epoch"),
    ],
)
def test_settings_without_a_trl_twin_are_refused(bench, overrides, message):
    config = tiny(**overrides)
    with pytest.raises(ValueError, match=message):
        bench.trl_config_kwargs(config.trainer, config.aepo, steps=2, target=None, output_dir="o")


def test_trl_sees_the_prompts_our_engine_takes_at_each_step(bench):
    source = DigitSumPrompts(seed=3)
    rows = bench.trl_dataset_rows(source, steps=3, prompts_per_step=5)
    assert len(rows) == 15
    for step in range(3):  # LocalTrainer: take(data_position, prompts_per_step) per step
        assert rows[5 * step : 5 * step + 5] == source.take(5 * step, 5)
    # Not the same as one long take: the stream is seeded by position.
    assert rows != source.take(0, 15)


def test_metrics_use_the_tail_and_normalise_by_the_target(bench):
    entropies = [0.9, 0.7, 0.2, 0.3, 0.2, 0.3]  # tail (last half): 0.3, 0.2, 0.3
    m = bench.run_metrics(
        "x",
        target=0.25,
        seed=0,
        entropies=entropies,
        rewards=[0.0, 0.0, 0.0, 1.0, 0.5, 0.6],
        grpo_tokens=1000,
        extra_tokens=50,
        cpu_seconds=12.0,
        wall_seconds=18.0,
    )
    assert m.tracking_error == pytest.approx(abs((0.8 / 3) - 0.25) / 0.25)
    assert m.rms_deviation == pytest.approx(math.sqrt((0.05**2 * 3) / 3) / 0.25)
    assert m.reward == pytest.approx(0.7)
    assert m.extra_gen_fraction == pytest.approx(0.05)
    assert (m.cpu_s_per_step, m.wall_s_per_step) == (2.0, 3.0)
    # Constant at the target: zero error either way; a mean on target can still wobble.
    flat = bench.run_metrics(
        "f",
        target=0.25,
        seed=0,
        entropies=[0.25] * 4,
        rewards=[1] * 4,
        grpo_tokens=1,
        extra_tokens=0,
        cpu_seconds=1,
        wall_seconds=1,
    )
    assert flat.tracking_error == flat.rms_deviation == 0
    wobble = bench.run_metrics(
        "w",
        target=0.25,
        seed=0,
        entropies=[0.2, 0.3, 0.2, 0.3],
        rewards=[1] * 4,
        grpo_tokens=1,
        extra_tokens=0,
        cpu_seconds=1,
        wall_seconds=1,
    )
    assert wobble.tracking_error == pytest.approx(0) and wobble.rms_deviation == pytest.approx(0.2)
    with pytest.raises(ValueError, match="one entropy and one reward per step"):
        bench.run_metrics(
            "bad",
            target=0.25,
            seed=0,
            entropies=[0.2],
            rewards=[],
            grpo_tokens=1,
            extra_tokens=0,
            cpu_seconds=1,
            wall_seconds=1,
        )


def test_medians_ratios_and_run_order(bench):
    def run(method, seed, rms, reward, extra=0.0):
        return bench.RunMetrics(method, 0.25, seed, rms / 2, rms, reward, extra, 1.0, 1.0)

    runs = [run(bench.REFERENCE, s, rms, 0.9) for s, rms in enumerate((0.10, 0.20, 0.50))]
    runs += [run("aepo current_batch", s, rms, 0.95, 0.08) for s, rms in enumerate((0.1, 0.1, 0.9))]
    medians = bench.median_over_seeds(runs)
    ref = medians[(bench.REFERENCE, 0.25)]
    assert ref["rms_deviation"] == 0.20 and ref["seeds"] == 3
    table = bench.format_tables(medians)
    # RMS 0.1 vs 0.2: 0.50; reward 0.95 / 0.9; TRL generates nothing extra: absolute share.
    assert "| aepo current_batch | 0.50 | 0.50 | 1.06 | +8.0% | 1.00 |" in table
    assert "| trl adaptive | 10.0% | 0.200 | 0.900 | 0.0% |" in table

    orders = [bench.run_order(bench.METHODS, i) for i in range(len(bench.METHODS))]
    assert all(sorted(o) == sorted(bench.METHODS) for o in orders)
    assert len({o[0] for o in orders}) == len(bench.METHODS)  # each method leads once


def test_trl_accepts_the_mapped_config(bench, tmp_path):
    trl = pytest.importorskip("trl", reason="TRL is the optional `bench` extra")
    config = tiny()
    kw = bench.trl_config_kwargs(
        config.trainer, config.aepo, steps=5, target=0.25, output_dir=str(tmp_path)
    )
    args = trl.GRPOConfig(**kw)
    s = config.trainer
    assert args.generation_batch_size == s.prompts_per_step * s.samples_per_prompt
    assert args.steps_per_generation == s.mini_batches
    assert args.use_adaptive_entropy and args.entropy_target == 0.25
    assert args.loss_type == "bnpo" and args.delta == 3.0


def test_trl_run_logs_one_measurement_per_step(bench, tmp_path):
    """A real 2-step TRL run through the bench (skipped without TRL, the `bench` extra)."""
    pytest.importorskip("trl", reason="TRL is the optional `bench` extra")
    from aepo.backends.local.metrics_log import read_metrics

    raw = tiny_run_config(
        "aepo",
        0.25,
        output_dir=str(tmp_path / "trl"),
        steps=2,
        prompts_per_step=4,
        samples_per_prompt=4,
        mini_batches=2,
        torch_threads=1,
        progress=False,
        cache_dir=str(tmp_path / "cache"),
        warm_start={"steps": 100, "batch_size": 64, "valid_fraction": 1.0},
    )
    config = run_config_from_dict(raw, source="test")
    log, cpu, wall = bench.run_trl(config, 0.25, "trl test", coef_delta=0.002)
    assert len(log.entropies) == len(log.rewards) == 2
    assert all(0 < h < 10 for h in log.entropies) and all(0 <= r <= 1 for r in log.rewards)
    assert 0 < log.grpo_tokens <= 2 * 4 * 4 * config.trainer.max_new_tokens
    assert log.extra_tokens == 0 and cpu > 0 and wall > 0
    logged = read_metrics(tmp_path / "trl")
    assert [m["step"] for m in logged] == [1, 2]
    assert [m["actor/entropy"] for m in logged] == pytest.approx(log.entropies)
    assert all(m["aepo/target_entropy"] == 0.25 for m in logged)
