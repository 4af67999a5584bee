"""kill -9 while ``aepo_state.json`` is being written: the file beside verl's checkpoint is the
previous state or the new one, never a truncated one (no verl needed: the writer is plain
json + os.replace)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from aepo.backends.verl.checkpoint import read_state

# Large enough that one write takes a while (the controller history grows with the run).
WRITER = """
import sys
from aepo.backends.verl.checkpoint import write_state
folder = sys.argv[1]
step = 0
while True:
    step += 1
    write_state(folder, {"global_step": step, "history": [{"step": s} for s in range(20000)]})
"""


def test_kill_9_during_state_writes_never_leaves_a_truncated_state(tmp_path):
    rng = random.Random(0)
    killed_mid_write = 0
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
        deadline = time.monotonic() + 30
        while not (tmp_path / "aepo_state.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        killed_mid_write += (tmp_path / "aepo_state.json.tmp").exists()
        state = read_state(str(tmp_path))  # raises on a truncated or garbled file
        assert state is not None and len(state["history"]) == 20000
    assert killed_mid_write, "no kill landed inside a write: the test proved nothing"
