"""scripts/bench_entropy_control.py's rows: every row that names a target trains at it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

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
    import pytest

    with pytest.raises(SystemExit):
        _bench().main(["--from-runs", "--output-dir", str(tmp_path), "--only", "grpo"])
    assert "0 logged steps" in capsys.readouterr().err


def test_the_per_run_table_names_each_seeds_worst_case(tmp_path, capsys):
    """Medians hide the one seed that lost its target; the per-run table shows every run."""
    import json

    from aepo.backends.local.metrics_log import METRICS_FILE

    name = "aepo H*=0.5 previous_step"
    for seed, late in ((0, 0.5), (1, 0.6)):  # seed 1 sits 20 % above its target
        run_dir = tmp_path / name.replace(" ", "_").replace("*=", "_") / f"seed{seed}"
        run_dir.mkdir(parents=True)
        lines = [
            {"step": i + 1, "actor/entropy": 1.0 if i < 2 else late, "reward/mean": 0.9}
            for i in range(4)
        ]
        (run_dir / METRICS_FILE).write_text("\n".join(json.dumps(x) for x in lines))
    argv = ["--from-runs", "--output-dir", str(tmp_path), "--only", name]
    assert _bench().main([*argv, "--steps", "4", "--seeds", "0", "1", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert f"| {name} | 0 | 2 | 0.5000 | 0.00% | 0 | 0.900 |" in out
    assert f"| {name} | 1 | 2 | 0.6000 | 20.00% | 0 | 0.900 |" in out
