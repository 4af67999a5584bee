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

import pytest

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


def _checkpoint(root, step: int, *, data: bytes | None = None) -> None:
    """A ``global_step_N`` folder as verl 0.9.1 leaves it: actor shards, data.pt, our state."""
    import torch

    from aepo.backends.verl.checkpoint import write_state

    folder = root / f"global_step_{step}"
    (folder / "actor").mkdir(parents=True)
    (folder / "actor" / "model_world_size_2_rank_0.pt").write_bytes(b"shard")
    if data is None:
        torch.save({"step": step}, folder / "data.pt")
    else:
        (folder / "data.pt").write_bytes(data)
    write_state(str(folder), {"global_step": step})


def _trainer_config(root):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {"resume_mode": "auto", "resume_from_path": None, "default_local_dir": str(root)}
    )


def test_a_kill_while_verl_rewrites_its_latest_step_file_still_resumes(tmp_path):
    """verl rewrites latest_checkpointed_iteration.txt in place (open 'w' then write,
    ray_trainer.py:1049-1050): a kill between the two leaves it empty, and verl's own
    find_latest_ckpt_path raises ValueError on it, so no resume starts. The resume must
    continue from the newest complete checkpoint instead (here step 2: the kill came after
    its data.pt; step 3's data.pt was cut short by an earlier kill)."""
    pytest.importorskip("verl")
    from aepo.backends.verl.checkpoint import resume_folder

    for step in (1, 2):
        _checkpoint(tmp_path, step)
    _checkpoint(tmp_path, 3, data=b"PK\x03\x04 cut short")
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("")
    assert resume_folder(_trainer_config(tmp_path)) == str(tmp_path / "global_step_2")
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "2"
    # verl reads it again when the trainer resumes
    from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

    assert find_latest_ckpt_path(str(tmp_path)) == str(tmp_path / "global_step_2")


def test_an_unreadable_latest_step_file_without_a_complete_checkpoint_is_named(tmp_path):
    pytest.importorskip("verl")
    from aepo.backends.verl.checkpoint import CheckpointStateError, resume_folder

    _checkpoint(tmp_path, 1, data=b"")
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("")
    with pytest.raises(CheckpointStateError, match="latest_checkpointed_iteration.txt"):
        resume_folder(_trainer_config(tmp_path))


def test_a_readable_latest_step_file_is_left_alone(tmp_path):
    pytest.importorskip("verl")
    from aepo.backends.verl.checkpoint import resume_folder

    for step in (1, 2):
        _checkpoint(tmp_path, step)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("1")
    assert resume_folder(_trainer_config(tmp_path)) == str(tmp_path / "global_step_1")
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "1"
