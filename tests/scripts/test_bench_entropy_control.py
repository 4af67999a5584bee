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
