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
    # AEPO per target and mode; adaptive entropy, DCPO and EntroPIC per target
    assert named == 2 * 2 + 2 + 2 + 2
    assert len({name for name, _, _ in rows}) == len(rows)
