"""The CPU harness's clean-up after an e2e run (main suite; plain processes stand in for a
run's Ray processes, which keep the session of the driver that started them)."""

from __future__ import annotations

import subprocess
import time

import psutil

from aepo.backends.verl.cpu_harness import e2e


def test_a_runs_leftovers_are_killed_and_other_processes_are_not():
    bystander = subprocess.Popen(["sleep", "60"])  # e.g. another Ray cluster of this user
    run = subprocess.Popen(["bash", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(psutil.Process(run.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        left = psutil.Process(run.pid).children()
        assert len(left) == 2
        assert e2e.kill_session(run.pid) == 3  # bash and both sleeps
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in left)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        run.kill()
        run.wait()
        bystander.wait()
