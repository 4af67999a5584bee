"""scripts/install_e2e_env.sh refuses, in one line and before it writes anything, a disk too
full for the e2e venv (a CI run once died midway with pip's OSError instead)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_e2e_env.sh"


def test_a_disk_without_room_is_refused_in_one_line_naming_the_place(tmp_path):
    e2e_venv = tmp_path / "venv-e2e"
    env = {**os.environ, "E2E_MIN_FREE_MB": str(10**12)}  # more than any disk has
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "no-main-venv"), str(e2e_venv), "0.27.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"MB free on {tmp_path}" in lines[0] and "E2E_MIN_FREE_MB" in lines[0]
    assert not e2e_venv.exists()  # nothing written
