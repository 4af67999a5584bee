"""scripts/check_commits.py flags each commit about to land whose subject is too long or WIP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_commits.py"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _commit(repo: Path, subject: str) -> str:
    _git(
        repo,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        subject,
    )
    return _git(repo, "rev-parse", "--short", "HEAD")


def test_only_the_range_about_to_land_is_checked(tmp_path):
    _git(tmp_path, "init", "-q")
    _commit(tmp_path, "x" * 90)  # landed history: not rewritten, not reported
    base = _git(tmp_path, "rev-parse", "HEAD")
    good = _commit(tmp_path, "y" * 72)
    long = _commit(tmp_path, "z" * 73)
    wip = _commit(tmp_path, "WIP: half a change")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), base], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [wip, long]
    assert "73 characters" in lines[1] and '"WIP"' in lines[0]
    assert good not in run.stdout


def test_a_clean_range_passes_and_a_bad_base_is_named(tmp_path):
    _git(tmp_path, "init", "-q")
    base = _commit(tmp_path, "first")
    _commit(tmp_path, "Local engine: one line naming the file")
    ok = subprocess.run([sys.executable, str(SCRIPT), base], cwd=tmp_path, capture_output=True)
    assert ok.returncode == 0 and ok.stdout == b""
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "no-such-ref"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no-such-ref" in bad.stdout
