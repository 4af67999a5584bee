"""Bad configs, model paths and checkpoints fail with messages that name what is wrong."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from aepo.backends.local.checkpoint import CheckpointError, load_checkpoint_files
from aepo.backends.local.settings import load_run_config
from aepo.backends.local.trainer import LocalTrainer, ModelPathError
from aepo.cli import main
from aepo.core import ConfigError


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_trainer_key_names_file_and_key(tmp_path):
    cfg = write(tmp_path / "bad.yaml", {"aepo": {"algorithm": "grpo"}, "trainer": {"stepz": 3}})
    with pytest.raises(ConfigError, match=r"bad\.yaml:trainer\.stepz: unknown key"):
        load_run_config(cfg)


def test_bad_aepo_value_names_file_and_key(tmp_path):
    cfg = write(tmp_path / "bad.yaml", {"aepo": {"t_high": 0.5, "t_low": 0.8}})
    with pytest.raises(ConfigError, match=r"bad\.yaml:aepo.*t_high must be > t_low"):
        load_run_config(cfg)


def test_the_verl_rollout_seed_key_is_not_an_aepo_key(tmp_path):
    """Per-request vLLM seeds are a verl rollout setting (rollout.custom.per_request_seed):
    under aepo: the local engine refuses the key as it refuses any unknown one."""
    cfg = write(tmp_path / "seeded.yaml", {"aepo": {"per_request_seed": True}})
    with pytest.raises(ConfigError, match=r"seeded\.yaml:aepo\.per_request_seed: unknown key"):
        load_run_config(cfg)


def test_bad_trainer_value_and_unknown_section(tmp_path):
    cfg = write(tmp_path / "neg.yaml", {"trainer": {"lr": -1}})
    with pytest.raises(ConfigError, match=r"neg\.yaml:trainer\.lr"):
        load_run_config(cfg)
    cfg = write(tmp_path / "sec.yaml", {"optim": {"lr": 1}})
    with pytest.raises(ConfigError, match=r"sec\.yaml: unknown section.*optim"):
        load_run_config(cfg)


def test_builtin_data_names_a_task_and_unknown_ones_are_refused(tmp_path):
    assert load_run_config(write(tmp_path / "d.yaml", {})).trainer.builtin_task == "contains_digit"
    old = load_run_config(write(tmp_path / "s.yaml", {"trainer": {"data": "builtin:digit_sum"}}))
    assert old.trainer.builtin_task == old.trainer.warm_start_task == "digit_sum"
    cfg = write(tmp_path / "t.yaml", {"trainer": {"data": "builtin:digit_product"}})
    with pytest.raises(
        ConfigError, match=r"t\.yaml:trainer\.data: .*unknown built-in task 'digit_product'"
    ):
        load_run_config(cfg)


def test_max_new_tokens_must_hold_a_builtin_answer(tmp_path):
    cfg = write(tmp_path / "short.yaml", {"trainer": {"max_new_tokens": 4}})
    with pytest.raises(ConfigError, match=r"short\.yaml:trainer: max_new_tokens=4 .*5 tokens"):
        load_run_config(cfg)
    fits = {"trainer": {"max_new_tokens": 4, "data": "builtin:digit_sum"}}
    assert load_run_config(write(tmp_path / "ok.yaml", fits)).trainer.max_new_tokens == 4


def test_missing_and_unparsable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_run_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("aepo: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_run_config(broken)


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    cfg = write(tmp_path / "bad.yaml", {"trainer": {"mini_batches": 0}})
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:trainer.mini_batches" in err and "Traceback" not in err


@pytest.mark.parametrize("make", ["missing", "not_a_model"])
def test_bad_model_path_is_named(tmp_path, make):
    path = tmp_path / "model"
    if make == "not_a_model":
        path.mkdir()
        (path / "weights.txt").write_text("x")
    cfg = write(tmp_path / "m.yaml", {"trainer": {"model": str(path), "progress": False}})
    with pytest.raises(ModelPathError, match=str(path)):
        LocalTrainer(load_run_config(cfg))


def test_broken_model_directory_is_named(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text("{not json")
    cfg = write(tmp_path / "m.yaml", {"trainer": {"model": str(path), "progress": False}})
    with pytest.raises(ModelPathError, match=f"cannot load the model in {path}"):
        LocalTrainer(load_run_config(cfg))


def test_missing_dataset_is_named(tmp_path):
    from aepo.tasks.tiny_model import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    data = tmp_path / "train.parquet"
    cfg = write(tmp_path / "d.yaml", {"trainer": {"model": str(model), "data": str(data)}})
    with pytest.raises(FileNotFoundError, match=str(data)):
        LocalTrainer(load_run_config(cfg))


def test_missing_incomplete_and_corrupt_checkpoints_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*step_000009"):
        load_checkpoint_files(tmp_path / "step_000009")
    ckpt = tmp_path / "step_000002"
    (ckpt / "model").mkdir(parents=True)
    torch.save({}, ckpt / "optimizer.pt")
    with pytest.raises(CheckpointError, match="trainer_state.pt is missing"):
        load_checkpoint_files(ckpt)
    (ckpt / "trainer_state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint file .*trainer_state.pt"):
        load_checkpoint_files(ckpt)


def test_resume_without_checkpoint_fails_clearly(tmp_path, capsys):
    from aepo.tasks.tiny_model import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    out = tmp_path / "run"
    cfg = write(
        tmp_path / "r.yaml",
        {"aepo": {"algorithm": "grpo"}, "trainer": {"model": str(model), "output_dir": str(out)}},
    )
    assert main(["train", "--config", str(cfg), "--resume", "--no-progress"]) == 1
    assert f"no checkpoint to resume from under {out / 'checkpoints'}" in capsys.readouterr().err


def _fake_checkpoint(path, state_bytes=None):
    """A checkpoint directory with every file; ``state_bytes`` replaces the trainer state."""
    (path / "model").mkdir(parents=True)
    torch.save({}, path / "optimizer.pt")
    if state_bytes is None:
        torch.save({"step": 0}, path / "trainer_state.pt")
    else:
        (path / "trainer_state.pt").write_bytes(state_bytes)
    return path


@pytest.mark.parametrize("left_over", ["half_written", "complete"])
def test_resume_ignores_and_removes_unfinished_saves(tmp_path, caplog, left_over):
    from aepo.backends.local.checkpoint import latest_checkpoint

    root = tmp_path / "checkpoints"
    finished = _fake_checkpoint(root / "step_000001")
    # A save killed before its rename: a truncated trainer state, or every file written.
    state = b"\x80\x02" if left_over == "half_written" else None
    unfinished = _fake_checkpoint(root / "step_000002.tmp", state_bytes=state)
    with caplog.at_level("WARNING"):
        assert latest_checkpoint(tmp_path) == finished
    assert not unfinished.exists()
    assert f"removing {unfinished}: a save that did not finish" in caplog.text


def test_resume_skips_a_checkpoint_directory_with_missing_files(tmp_path, caplog):
    from aepo.backends.local.checkpoint import latest_checkpoint

    finished = _fake_checkpoint(tmp_path / "checkpoints" / "step_000001")
    partial = _fake_checkpoint(tmp_path / "checkpoints" / "step_000003")
    (partial / "optimizer.pt").unlink()
    with caplog.at_level("WARNING"):
        assert latest_checkpoint(tmp_path) == finished
    assert partial.exists(), "a directory a save never wrote is not ours to delete"
    assert f"skipping {partial}: not a complete checkpoint (no optimizer.pt)" in caplog.text


def test_resume_orders_checkpoints_by_step_number(tmp_path):
    from aepo.backends.local.checkpoint import latest_checkpoint

    _fake_checkpoint(tmp_path / "checkpoints" / "step_999999")
    newest = _fake_checkpoint(tmp_path / "checkpoints" / "step_1000000")
    assert latest_checkpoint(tmp_path) == newest


def test_an_unfinished_save_given_by_path_is_refused(tmp_path):
    unfinished = _fake_checkpoint(tmp_path / "step_000002.tmp")
    with pytest.raises(CheckpointError, match=r"step_000002\.tmp is a save that did not finish"):
        load_checkpoint_files(unfinished)


def test_only_unfinished_saves_is_no_checkpoint(tmp_path):
    from aepo.backends.local.checkpoint import latest_checkpoint

    _fake_checkpoint(tmp_path / "checkpoints" / "step_000001.tmp")
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        latest_checkpoint(tmp_path)


def test_resume_drops_a_metrics_line_cut_short_by_a_kill(tmp_path):
    from aepo.backends.local.metrics_log import MetricsLogger, read_metrics

    lines = [json.dumps({"step": s, "reward/mean": 0.5}) for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n" + lines[2][:9])
    MetricsLogger(tmp_path, resume_step=2).close()
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2]


def _resume_configs(tmp_path, **changes):
    """A one-step GRPO run's config, and the same run's config with ``changes`` applied
    (keys ``section__key``)."""
    from aepo.tasks.tiny_model import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    base = {
        "aepo": {"algorithm": "grpo", "target_entropy": 0.25},
        "trainer": {
            "model": str(model),
            "output_dir": str(tmp_path / "run"),
            "steps": 1,
            "prompts_per_step": 2,
            "samples_per_prompt": 2,
            "mini_batches": 1,
            "progress": False,
        },
    }
    changed = yaml.safe_load(yaml.safe_dump(base))
    for name, value in changes.items():
        section, key = name.split("__")
        changed[section][key] = value
    return write(tmp_path / "first.yaml", base), write(tmp_path / "second.yaml", changed)


def test_resuming_a_grpo_checkpoint_as_aepo_is_refused(tmp_path, capsys):
    first, second = _resume_configs(tmp_path, aepo__algorithm="aepo", trainer__steps=2)
    assert main(["train", "--config", str(first)]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(second), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "step_000001 was trained with aepo.algorithm='grpo', the config says 'aepo'" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints" / "step_000002").exists()


def test_resuming_with_other_settings_warns_and_names_each_change(tmp_path, capsys):
    first, second = _resume_configs(
        tmp_path, aepo__target_entropy=0.5, trainer__lr=0.01, trainer__steps=2
    )
    assert main(["train", "--config", str(first)]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(second), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "warning: resuming " in err and "step_000001 with changes:" in err
    assert "aepo.target_entropy 0.25 -> 0.5" in err
    assert "trainer.lr 0.001 -> 0.01 (the optimiser keeps the checkpoint's value)" in err
    assert "trainer.steps" not in err  # more steps is how a run is continued: not a change


def test_resume_differences_ignore_run_control_keys():
    from aepo.backends.local.checkpoint import resume_differences

    saved = {"aepo": {"algorithm": "aepo"}, "trainer": {"steps": 5, "device": "cpu", "seed": 0}}
    current = {"aepo": {"algorithm": "aepo"}, "trainer": {"steps": 9, "device": "cuda", "seed": 1}}
    assert resume_differences("ckpt", saved, current) == "trainer.seed 0 -> 1"
    assert resume_differences("ckpt", saved, saved) == ""


def _float_keys(model, prefix="trainer."):
    from pydantic import BaseModel

    keys = []
    for name, field in model.model_fields.items():
        if field.annotation is float:
            keys.append(prefix + name)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += _float_keys(field.annotation, f"{prefix}{name}.")
    return keys


def _nested(key, value):
    *parents, last = key.split(".")
    tree = {last: value}
    for parent in reversed(parents):
        tree = {parent: tree}
    return tree


def test_float_keys_are_found():
    from aepo.backends.local.settings import TrainerSettings

    assert {"trainer.lr", "trainer.grad_clip", "trainer.warm_start.lr"} <= set(
        _float_keys(TrainerSettings)
    )


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "nan", "inf"])
def test_every_trainer_float_key_must_be_finite(tmp_path, value):
    from aepo.backends.local.settings import TrainerSettings

    for key in _float_keys(TrainerSettings):
        cfg = write(tmp_path / "f.yaml", _nested(key, value))
        with pytest.raises(ConfigError, match=rf"f\.yaml:{key}: Input should be a finite number"):
            load_run_config(cfg)


def test_learning_rates_above_one_are_refused(tmp_path):
    cfg = write(tmp_path / "lr.yaml", {"trainer": {"lr": 1000.0, "warm_start": {"lr": 3.0}}})
    with pytest.raises(ConfigError, match=r"lr\.yaml:trainer\.lr: .*less than or equal to 1"):
        load_run_config(cfg)
    with pytest.raises(ConfigError, match=r"lr\.yaml:trainer\.warm_start\.lr: .*less than or"):
        load_run_config(cfg)


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_an_empty_config_file_is_refused(tmp_path, text):
    cfg = tmp_path / "empty.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=r"empty\.yaml is empty; a run file needs at least"):
        load_run_config(cfg)


def _train_in_a_fresh_process(path):
    """``aepo train --config path`` in a new interpreter; stdout says whether torch got imported."""
    import subprocess
    import sys

    probe = (
        "import sys; from aepo.cli import main; "
        f"rc = main(['train', '--config', {str(path)!r}]); "
        "print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)"
    )
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)


@pytest.mark.parametrize("make", ["missing", "directory", "empty", "binary", "bad_yaml"])
def test_config_file_errors_come_before_torch_is_imported(tmp_path, make):
    path = tmp_path / "c.yaml"
    if make == "directory":
        path.mkdir()
    elif make == "empty":
        path.write_text("")
    elif make == "binary":
        path.write_bytes(bytes(range(128, 256)))
    elif make == "bad_yaml":
        path.write_text("aepo: [unclosed\n")
    done = _train_in_a_fresh_process(path)
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == "no torch"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and lines[0].startswith("aepo train: ")


@pytest.mark.parametrize(
    "text, key",
    [("aepo:\n  alpha: .nan\n", "aepo.alpha"), ("trainer:\n  lr: .inf\n", "trainer.lr")],
)
def test_bad_config_keys_are_refused_before_torch_is_imported(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    done = _train_in_a_fresh_process(path)
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == "no torch"
    assert f"{path}:{key}" in done.stderr


def test_a_fresh_run_into_a_folder_with_checkpoints_is_refused(tmp_path, capsys):
    first, _ = _resume_configs(tmp_path)
    assert main(["train", "--config", str(first)]) == 0
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["train", "--config", str(first)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"aepo train: {tmp_path / 'run'} already holds a run (checkpoints up to step_000001): "
        f"--resume continues it; to start over, delete {tmp_path / 'run' / 'checkpoints'} or "
        "pass another --output-dir"
    )
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics  # nothing overwritten


def test_a_diverged_step_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    first, _ = _resume_configs(tmp_path)
    real_step = LocalTrainer.train_step
    monkeypatch.setattr(
        LocalTrainer, "train_step", lambda self: {**real_step(self), "actor/pg_loss": float("nan")}
    )
    capsys.readouterr()
    assert main(["train", "--config", str(first)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "aepo train: the run diverged at step 1: actor/pg_loss is nan; checkpoints up to the "
        f"last save are in {tmp_path / 'run'}"
    )


def test_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch):
    first, _ = _resume_configs(tmp_path)

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalTrainer, "train_step", interrupted)
    capsys.readouterr()
    assert main(["train", "--config", str(first)]) == 130
    err = capsys.readouterr().err.strip()
    assert err == (
        "aepo train: interrupted; --resume continues from the last checkpoint in "
        f"{tmp_path / 'run'}"
    )
