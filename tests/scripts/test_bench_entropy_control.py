"""scripts/bench_entropy_control.py's rows: every row that names a target trains at it."""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_entropy_control.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_entropy_control", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_row_that_names_a_target_carries_it():
    rows = _bench().bench_rows([0.25, 1.0], ["current_batch", "previous_step"])
    named = 0
    for name, algorithm, variant in rows:
        match = re.search(r"H\*=([0-9.]+)", name)
        if match is None:
            continue
        named += 1
        target, mode = variant
        assert target == float(match.group(1)), name
        assert (mode is not None) == (algorithm == "aepo"), name
    # AEPO per target and mode; adaptive entropy, DCPO, EntroPIC and Entrocraft per target
    assert named == 2 * 2 + 2 + 2 + 2 + 2
    assert len({name for name, _, _ in rows}) == len(rows)


def test_schedule_rows_run_aepo_and_entrocraft_on_each_schedule():
    bench = _bench()
    rows = bench.bench_rows([0.5], ["previous_step"])
    scheduled = [
        (name, algorithm, variant)
        for name, algorithm, variant in rows
        if isinstance(variant, tuple) and variant[0] == "schedule"
    ]
    assert sorted((a, v[1]) for _, a, v in scheduled) == [
        ("aepo", "cosine"),
        ("aepo", "linear"),
        ("entrocraft", "cosine"),
        ("entrocraft", "linear"),
    ]
    # decided before any run (docs/entrocraft.md): start high, end slightly lower
    assert (bench.SCHEDULE_START, bench.SCHEDULE_END) == (1.0, 0.75)


def test_from_runs_refuses_a_row_that_was_not_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _bench().main(["--from-runs", "--output-dir", str(tmp_path), "--only", "grpo"])
    assert "0 logged steps" in capsys.readouterr().err


def test_the_per_run_table_names_each_seeds_worst_case(tmp_path, capsys):
    """Medians hide the one seed that lost its target; the per-run table shows every run."""
    name = "aepo H*=0.5 previous_step"
    _fake_runs(tmp_path, name, [0], (1.0, 1.0, 0.5, 0.5))
    _fake_runs(tmp_path, name, [1], (1.0, 1.0, 0.6, 0.6))  # seed 1 sits 20 % above its target
    argv = ["--from-runs", "--output-dir", str(tmp_path), "--only", name]
    assert _bench().main([*argv, "--steps", "4", "--seeds", "0", "1", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    kernels = torch.backends.cpu.get_cpu_capability()
    assert f"| {name} | 0 | 2 | {kernels} | 0.5000 | 0.00% | 0 | 0.900 |" in out
    assert f"| {name} | 1 | 2 | {kernels} | 0.6000 | 20.00% | 0 | 0.900 |" in out


def _fake_runs(root, name: str, seeds, entropies) -> None:
    import json

    from aepo.backends.local.metrics_log import METRICS_FILE

    for seed in seeds:
        run_dir = root / name.replace(" ", "_").replace("*=", "_") / f"seed{seed}"
        run_dir.mkdir(parents=True)
        lines = [
            {"step": i + 1, "actor/entropy": h, "reward/mean": 0.9} for i, h in enumerate(entropies)
        ]
        (run_dir / METRICS_FILE).write_text("\n".join(json.dumps(x) for x in lines))


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="AVX2 is x86")
def test_cpu_kernels_avx2_runs_torchs_avx2_kernels_and_says_so(tmp_path):
    """``--cpu-kernels avx2`` must reach torch before it loads: the per-run table names the
    kernels torch dispatched to in that process, so a native run cannot pass for AVX2."""
    name = "aepo H*=0.5 previous_step"
    _fake_runs(tmp_path, name, (0, 1), (1.0, 1.0, 0.5, 0.5))
    argv = ["--from-runs", "--output-dir", str(tmp_path), "--only", name, "--steps", "4"]
    argv += ["--seeds", "0", "1", "--cpu-kernels", "avx2"]
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    assert f"| {name} | 0 | default | AVX2 | 0.5000 | 0.00% |" in result.stdout


def test_cpu_kernels_after_torch_loaded_is_refused(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # nothing leaks into later tests
    with pytest.raises(SystemExit, match="torch is already loaded"):
        _bench()._select_cpu_kernels("avx2")
