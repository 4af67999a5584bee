"""AEPO on verl's V1 trainer (``trainer.use_v1: true``): what runs here without Ray.

The start-up checks refuse each V1 setting AEPO cannot run, in one line naming the key; the
per-session seeds of a V1 submission are the legacy trainer's per-row seeds. The trainer
itself runs on the real stack (tests/e2e/test_e2e_verl_v1.py).
"""

from __future__ import annotations

import pytest

pytest.importorskip("verl")

from hydra import compose, initialize_config_module  # noqa: E402

from aepo.backends.verl.agent_loop import (  # noqa: E402
    request_seeds,
    session_seed,
    session_seeds,
)
from aepo.backends.verl.startup import check_config  # noqa: E402
from aepo.core import ConfigError  # noqa: E402

DATA = ["data.train_files=/data/train.parquet", "data.val_files=/data/val.parquet"]
V1 = ["trainer.use_v1=true", "transfer_queue.backend.SimpleStorage.num_data_storage_units=1"]


def compose_v1(*overrides: str):
    with initialize_config_module("aepo.backends.verl.config", version_base=None):
        return compose("aepo_trainer", overrides=DATA + V1 + list(overrides))


def problem_lines(config) -> list[str]:
    with pytest.raises(ConfigError) as err:
        check_config(config)
    return [line.strip() for line in str(err.value).splitlines()[1:]]


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.v1.trainer_mode=separate_async", "trainer.v1.trainer_mode=separate_async"),
        ("trainer.v1.trainer_mode=my_mode", "trainer.v1.trainer_mode=my_mode"),
        ("+trainer.v1.sync.parameter_sync_step=2", "trainer.v1.sync.parameter_sync_step=2"),
        (
            "trainer.v1.trainer_mode=colocate_async +trainer.v1.colocate_async.parameter_sync_step=2",
            "trainer.v1.colocate_async.parameter_sync_step=2",
        ),
        ("trainer.v1.sampler.sync_refill_failed_groups=true", "sync_refill_failed_groups"),
        ("algorithm.filter_groups.enable=true", "algorithm.filter_groups.enable"),
        ("aepo.merge=append", "aepo.merge=append"),
        (
            "transfer_queue.backend.SimpleStorage.num_data_storage_units=8",
            "num_data_storage_units=8",
        ),
    ],
)
def test_each_unsupported_v1_setting_is_refused_in_one_line_naming_its_key(override, key):
    config = compose_v1(*override.split(), "+ray_kwargs.ray_init.num_cpus=8")
    lines = problem_lines(config)
    naming = [line for line in lines if key in line]
    assert len(naming) == 1, lines
    assert "\n" not in naming[0]


def test_baselines_that_edit_the_update_are_refused_on_v1():
    lines = problem_lines(compose_v1("aepo.algorithm=dcpo"))
    assert any(line.startswith("aepo.algorithm=dcpo") for line in lines), lines


def test_the_same_settings_pass_on_the_legacy_trainer():
    """The V1 checks read nothing when ``trainer.use_v1`` is false."""
    with initialize_config_module("aepo.backends.verl.config", version_base=None):
        config = compose(
            "aepo_trainer",
            overrides=DATA
            + [
                "trainer.v1.trainer_mode=separate_async",
                "trainer.v1.sampler.sync_refill_failed_groups=true",
            ],
        )
    assert check_config(config).algorithm == "aepo"


@pytest.mark.parametrize("mode", ["sync", "colocate_async"])
def test_v1_aepo_passes_the_start_up_checks(mode):
    pytest.importorskip("transfer_queue")
    assert check_config(compose_v1(f"trainer.v1.trainer_mode={mode}")).algorithm == "aepo"


def test_v1_sessions_get_the_legacy_rows_seeds():
    """Prompt p of a V1 submission with n sessions holds the seeds the legacy trainer gives
    rows p*n .. p*n+n-1 of its generate call; the extras' (m sessions) follow."""
    sessions = [4, 4, 4, 6, 6]
    grouped = session_seeds(7, 3, 0, sessions)
    rows = request_seeds(7, 3, 0, sum(sessions))
    flat = [
        session_seed(text, s)
        for text, count in zip(grouped, sessions, strict=True)
        for s in range(count)
    ]
    assert flat == [int(seed) for seed in rows]
    assert len(set(flat)) == len(flat)  # the n samples of a prompt differ


def test_session_seed_reads_both_transports():
    assert session_seed(None, 2) is None
    assert session_seed(123, 5) == 123  # legacy: one row, one seed
    assert session_seed("10 20 30", 1) == 20
    with pytest.raises(ValueError, match="session 3"):
        session_seed("10 20 30", 3)


class _DictStore:
    """TransferQueue's kv_batch_get / kv_batch_put over a dict (TransferQueue itself needs a
    Ray cluster; the real one serves this padding in tests/e2e/test_e2e_verl_v1.py)."""

    def __init__(self, rows: dict):
        self.rows = rows

    def kv_batch_get(self, keys, partition_id):
        import torch
        from tensordict import TensorDict

        return TensorDict(
            {"input_ids": torch.stack([self.rows[k] for k in keys])}, batch_size=len(keys)
        )

    def kv_batch_put(self, keys, partition_id, fields, tags):
        assert len(keys) == len(tags) == fields.batch_size[0]
        for key, ids in zip(keys, fields["input_ids"], strict=True):
            assert key not in self.rows, key
            self.rows[key] = ids


@pytest.mark.e2e  # imports TransferQueue, which .venv-e2e has
def test_reinforce_passes_are_padded_with_copies_of_their_rows_not_128_token_rows():
    """3 REINFORCE rows of 16 tokens over 2 DP ranks: one copy of the first row under a
    fresh key, as the legacy passes pad; verl's padding rows are 128 tokens, more than a
    dynamic-batch budget of 16 tokens per rank holds (the e2e scale-out shape failed on it)."""
    pytest.importorskip("transfer_queue")
    import torch
    from transfer_queue import KVBatchMeta

    from aepo.backends.verl.trainer_v1 import pad_with_copies

    real = {f"r{i}_0_0": torch.full((16,), i) for i in range(3)}
    store = _DictStore(dict(real))
    rows = KVBatchMeta(keys=list(real), tags=[{"row": i} for i in range(3)], partition_id="p")
    padded = pad_with_copies(rows, 2, store)
    assert padded.keys[:3] == list(real) and len(padded.keys) == 4
    assert torch.equal(store.rows[padded.keys[3]], real["r0_0_0"])
    assert padded.tags[3] == {"row": 0} and padded.tags[3] is not rows.tags[0]
    assert max(len(ids) for ids in store.rows.values()) == 16
    assert pad_with_copies(rows, 3, store) is rows  # already divisible
