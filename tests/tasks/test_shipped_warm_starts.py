"""The warm starts shipped in the package: found for their settings, checked by hash, as
accurate as their record says, and never confused with a changed task."""

from __future__ import annotations

import fnmatch
import json
import math
import shutil
from pathlib import Path

import pytest

from aepo.backends.local.passk_demo import PASSK_TASK, PASSK_WARM_START
from aepo.backends.local.settings import load_trainer_settings
from aepo.tasks import warm_start as ws
from aepo.tasks.builtin import BUILTIN_TASKS
from aepo.tasks.warm_start import (
    RECORD,
    SHIPPED_DIR,
    WEIGHTS,
    WarmStartError,
    WarmStartSettings,
    definition_hash,
    warm_start_model,
)

REPO = Path(__file__).resolve().parents[2]


def record_of(task: str) -> dict:
    return json.loads((SHIPPED_DIR / task / RECORD).read_text())


def must_not_train(*args, **kwargs):
    raise AssertionError("trained a warm start instead of loading the shipped one")


@pytest.mark.parametrize("task", BUILTIN_TASKS)
def test_every_builtin_task_ships_a_current_small_warm_start(task):
    record = record_of(task)
    settings = WarmStartSettings.model_validate(record["settings"])
    # built from the task's code as it is now (an edit that changes what the task generates
    # must come with scripts/build_warm_starts.py)
    assert record["key"] == settings.key(task), f"{task}: rebuild with build_warm_starts.py"
    weights = SHIPPED_DIR / task / WEIGHTS
    assert ws.file_sha256(weights) == record["sha256"]
    assert weights.stat().st_size < 1_000_000
    assert 0 < record["accuracy"]["pass@1"] < 1


def test_the_demo_train_and_verl_settings_load_the_shipped_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(ws, "train_warm_start", must_not_train)
    # aepo demo and aepo train (configs/tiny: model and data builtin, default warm start)
    default = load_trainer_settings({})
    assert warm_start_model(default.warm_start, tmp_path, task=default.warm_start_task) == (
        SHIPPED_DIR / "contains_digit"
    )
    # the verl end-to-end runs (aepo.backends.verl.e2e)
    assert warm_start_model(task="digit_sum", cache_dir=tmp_path) == SHIPPED_DIR / "digit_sum"
    # aepo demo --passk
    passk = WarmStartSettings.model_validate(PASSK_WARM_START)
    assert warm_start_model(passk, tmp_path, task=PASSK_TASK) == SHIPPED_DIR / PASSK_TASK
    assert not any(tmp_path.iterdir())  # nothing was cached


def tolerance(record: dict, samples_per_prompt: int) -> float:
    """Four standard errors of the difference between two accuracies measured by independent
    sampling on the same prompts, bounding each answer's variance by 1/4: a correct model
    fails this less than once in 15,000 runs, on any CPU (its arithmetic moves the sampled
    answers, not the model's accuracy)."""
    prompts = record["accuracy"]["prompt_count"]
    recorded = prompts * record["accuracy"]["samples_per_prompt"]
    return 4 * math.sqrt(0.25 / (prompts * samples_per_prompt) + 0.25 / recorded)


# a quarter of the recorded answers (same_sum: 16 of 64 per held-out prompt) with another seed
SUBSET_SAMPLES = {"contains_digit": 256, "digit_sum": 256, "same_sum": 16}


@pytest.mark.parametrize("task", BUILTIN_TASKS)
def test_shipped_warm_start_is_as_accurate_as_recorded(task):
    from aepo.backends.local.trainer import load_model

    record = record_of(task)
    path = warm_start_model(WarmStartSettings.model_validate(record["settings"]), task=task)
    model, tokenizer = load_model(path, "float32", "cpu")
    accuracy = ws.measure_accuracy(model, tokenizer, task, SUBSET_SAMPLES[task], seed=12345)
    allowed = tolerance(record, SUBSET_SAMPLES[task])
    assert allowed < 0.05
    assert abs(accuracy - record["accuracy"]["pass@1"]) < allowed, (accuracy, record)


def test_corrupted_shipped_weights_fail_naming_the_file(tmp_path, monkeypatch):
    copy = tmp_path / "warm_starts"
    shutil.copytree(SHIPPED_DIR / "digit_sum", copy / "digit_sum")
    weights = copy / "digit_sum" / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(ws, "SHIPPED_DIR", copy)
    monkeypatch.setattr(ws, "train_warm_start", must_not_train)
    with pytest.raises(WarmStartError) as error:
        warm_start_model(task="digit_sum", cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert message.startswith(f"{weights}: sha256 ") and "\n" not in message


def test_a_changed_task_definition_misses_the_shipped_and_cached_warm_starts(tmp_path, monkeypatch):
    settings = WarmStartSettings(steps=2, batch_size=8)
    cached = warm_start_model(settings, tmp_path, progress=False, task="same_sum")
    source = (REPO / "aepo" / "tasks" / "same_sum.py").read_text()
    assert "SPLIT_SEED = 20\n" in source
    changed = source.replace("SPLIT_SEED = 20\n", "SPLIT_SEED = 21\n")
    real_source = ws._task_source
    monkeypatch.setattr(
        ws, "_task_source", lambda task: changed if task == "same_sum" else real_source(task)
    )
    monkeypatch.setattr(ws, "train_warm_start", must_not_train)
    with pytest.raises(AssertionError, match="trained"):  # not the cached one
        warm_start_model(settings, tmp_path, progress=False, task="same_sum")
    passk = WarmStartSettings.model_validate(PASSK_WARM_START)
    assert ws.shipped_warm_start(passk, "same_sum") is None  # nor the shipped one
    assert cached.is_dir()


def test_definition_hash_follows_code_not_prose_or_formatting():
    source = (REPO / "aepo" / "tasks" / "contains_digit.py").read_text()
    reworded = source.replace("A built-in verifiable task", "A task").replace(
        "# the digits, then <eos>", "# four digits and an end token"
    )
    reformatted = source.replace("ANSWER_DIGITS = 4\n", "ANSWER_DIGITS = (\n    4\n)\n")
    assert reworded != source and reformatted != source
    assert definition_hash(reworded) == definition_hash(reformatted) == definition_hash(source)
    for edit in (
        ("ANSWER_DIGITS = 4", "ANSWER_DIGITS = 5"),
        ("WARM_START_DIGIT_SHARE = 0.5", "WARM_START_DIGIT_SHARE = 0.6"),
    ):
        assert edit[0] in source
        assert definition_hash(source.replace(*edit)) != definition_hash(source)


def test_the_wheel_carries_every_shipped_file():
    """pyproject's package-data patterns cover each file of every shipped warm start (the
    wheel takes a package's non-Python files only by these patterns)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["aepo.tasks"]
    package = REPO / "aepo" / "tasks"
    files = [p.relative_to(package).as_posix() for p in SHIPPED_DIR.rglob("*") if p.is_file()]
    assert len(files) >= 3 * 4
    assert [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)] == []
