"""kill -9 a local run at random moments, inside checkpoint saves too, and resume it each time:
it must end at the requested step with the trajectory of a run that was never killed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aepo.backends.local.checkpoint import CHECKPOINT_DIR, latest_checkpoint
from aepo.backends.local.metrics_log import read_metrics
from aepo.backends.local.presets import tiny_run_config
from aepo.backends.local.settings import run_config_from_dict
from aepo.backends.local.trainer import LocalTrainer

STEPS = 24
KILLS_IN_SAVE = 2
KILLS_AT_RANDOM = 2
TIMEOUT_S = 60  # per process: a hung run fails the test instead of stalling CI


def _raw_config(model: Path, output_dir: Path) -> dict:
    return tiny_run_config(
        "aepo",
        output_dir=str(output_dir),
        model=str(model),
        steps=STEPS,
        prompts_per_step=4,
        samples_per_prompt=4,
        mini_batches=2,
        save_every=1,  # a save after every step: many chances to be killed inside one
        progress=False,
        torch_threads=1,
    )


def _start(config: Path, log: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "aepo.cli", "train", "--config", str(config), "--no-progress"]
    if resume:
        cmd.append("--resume")
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def _unfinished_saves(run: Path) -> list[Path]:
    root = run / CHECKPOINT_DIR
    return [p for p in root.glob("step_*.tmp")] if root.is_dir() else []


def _finished_saves(run: Path) -> int:
    root = run / CHECKPOINT_DIR
    return sum(1 for p in root.glob("step_*") if not p.name.endswith(".tmp"))


def _wait(proc: subprocess.Popen, until, what: str) -> bool:
    """Poll ``until()`` every millisecond; False if the run ended first."""
    deadline = time.monotonic() + TIMEOUT_S
    while not until():
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.001)
    return True


@pytest.mark.slow
def test_kill_9_at_random_moments_and_inside_saves_then_resume(tmp_path):
    from aepo.tasks.tiny_model import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    run = tmp_path / "killed"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_raw_config(model, run)))
    rng = random.Random(0)
    moments = ["save"] * KILLS_IN_SAVE + ["random"] * KILLS_AT_RANDOM
    rng.shuffle(moments)

    left_unfinished = 0
    logs = []
    for round_, moment in enumerate(moments):
        log = tmp_path / f"round_{round_}.log"
        logs.append(log)
        proc = _start(config, log, resume=round_ > 0)
        saved_before = _finished_saves(run)
        # Every kill comes after this process saved a checkpoint, so the run always advances.
        alive = _wait(proc, lambda n=saved_before: _finished_saves(run) > n, "a checkpoint")
        if alive and moment == "save":
            alive = _wait(proc, lambda: bool(_unfinished_saves(run)), "a save")
        elif alive:
            time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is not None:
            break  # finished before this kill: the final run below checks the result
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(TIMEOUT_S)
        assert proc.returncode == -signal.SIGKILL
        left_unfinished += bool(_unfinished_saves(run))

    assert left_unfinished > 0, "no kill landed inside a save: the test proved nothing"
    final_log = tmp_path / "final.log"
    proc = _start(config, final_log, resume=True)
    assert proc.wait(TIMEOUT_S) == 0, final_log.read_text()
    resume_output = "".join(p.read_text() for p in [*logs[1:], final_log])
    assert "a save that did not finish" in resume_output  # the warning, once per left-over

    assert not _unfinished_saves(run)
    logged = read_metrics(run)
    assert [m["step"] for m in logged] == list(range(1, STEPS + 1))

    config_obj = run_config_from_dict(_raw_config(model, tmp_path / "straight"), source="test")
    straight = LocalTrainer(config_obj).fit()
    assert len(straight) == len(logged)
    for a, b in zip(straight, logged, strict=True):
        for key in ("actor/entropy", "reward/mean", "aepo/temperature", "actor/pg_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], key)

    last = latest_checkpoint(run)
    assert last.name == f"step_{STEPS:06d}"
    resumed = LocalTrainer(run_config_from_dict(_raw_config(model, run), "test"), resume_from=last)
    assert resumed.step == STEPS
