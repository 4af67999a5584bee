"""The local engine on any HF model directory and a verl-schema parquet (math reward)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from aepo.backends.local.checkpoint import CheckpointError, latest_checkpoint
from aepo.backends.local.metrics_log import read_metrics
from aepo.backends.local.prompts import ParquetPrompts
from aepo.backends.local.settings import run_config_from_dict
from aepo.backends.local.trainer import LocalTrainer
from aepo.tasks.tiny_model import build_tokenizer, save_tiny_model


def write_verl_parquet(path, rows):
    frame = pd.DataFrame(
        {
            "data_source": ["test"] * len(rows),
            "prompt": [[{"role": "user", "content": q}] for q, _ in rows],
            "ability": ["math"] * len(rows),
            "reward_model": [{"style": "rule", "ground_truth": a} for _, a in rows],
            "extra_info": [{"index": i} for i in range(len(rows))],
        }
    )
    frame.to_parquet(path)
    return path


def test_parquet_prompts_replay_by_position_across_epochs(tmp_path):
    rows = [(f"What is {i}+1?", str(i + 1)) for i in range(5)]
    path = write_verl_parquet(tmp_path / "d.parquet", rows)
    source = ParquetPrompts(path, build_tokenizer(), seed=1, apply_chat_template=True)
    first_epoch = source.take(0, 5)
    assert sorted(p.ground_truth for p in first_epoch) == ["1", "2", "3", "4", "5"]
    assert first_epoch[0].text.startswith("user: What is ") and first_epoch[0].text.endswith(
        "assistant: "
    )
    # A batch straddling the epoch boundary equals the two halves asked for separately.
    assert source.take(3, 4) == source.take(3, 2) + source.take(5, 2)
    assert source.reward("so the answer is \\boxed{3}", "3") == 1.0
    assert source.reward("\\boxed{4}", "3") == 0.0


def two_step_run(tmp_path, rows, aepo: dict, **trainer) -> dict:
    """The raw config of a 2-step run, 2 prompts x 2 samples, of a tiny model on ``rows``."""
    model = save_tiny_model(tmp_path / "tiny")
    data = write_verl_parquet(tmp_path / "train.parquet", rows)
    settings = {
        "model": str(model),
        "data": str(data),
        "steps": 2,
        "prompts_per_step": 2,
        "samples_per_prompt": 2,
        "mini_batches": 1,
        "output_dir": str(tmp_path / "run"),
        "progress": False,
    }
    return {"aepo": aepo, "trainer": settings | trainer}


def test_aepo_steps_on_a_local_model_dir_and_parquet(tmp_path):
    raw = two_step_run(
        tmp_path,
        [("1+1=?", "2"), ("2+2=?", "4")],
        {"algorithm": "aepo", "target_entropy": 1.0, "samples_up": 2, "samples_down": 2},
        max_new_tokens=6,
        save_every=0,
    )
    trainer = LocalTrainer(run_config_from_dict(raw, "test"))
    trainer.fit()
    logged = read_metrics(tmp_path / "run")
    assert [m["step"] for m in logged] == [1, 2]
    assert all(m["actor/entropy"] > 1.0 for m in logged)  # an untrained model is near uniform
    assert trainer.data_position == 4


def checkpointed_grpo_run(tmp_path) -> dict:
    """The raw config of a 2-step GRPO run on a 4-row parquet, run with a checkpoint at step 2."""
    rows = [(f"{i}+{i}=?", str(2 * i)) for i in range(4)]
    raw = two_step_run(tmp_path, rows, {"algorithm": "grpo"}, max_new_tokens=3, save_every=2)
    LocalTrainer(run_config_from_dict(raw, "test")).fit()  # 2 steps x 2 prompts = 1 epoch
    return raw


def test_resume_exactly_at_an_epoch_boundary_runs_the_remaining_steps(tmp_path):
    raw = checkpointed_grpo_run(tmp_path)
    raw["trainer"]["steps"] = 3
    resumed = LocalTrainer(
        run_config_from_dict(raw, "test"), resume_from=latest_checkpoint(tmp_path / "run")
    )
    assert (resumed.step, resumed.data_position) == (2, 4)
    history = resumed.fit()
    assert [h["step"] for h in history] == [3]  # not silently zero steps
    assert resumed.data_position == 6
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3]


def count_model_loads(monkeypatch) -> list:
    """The directories ``from_pretrained`` is asked to load, in order, from now on."""
    loaded = []
    original = AutoModelForCausalLM.from_pretrained

    def counted(path, *args, **kwargs):
        loaded.append(Path(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counted)
    return loaded


def test_resume_loads_the_weights_once_from_the_checkpoint(tmp_path, monkeypatch):
    raw = checkpointed_grpo_run(tmp_path)
    checkpoint = latest_checkpoint(tmp_path / "run")
    loaded = count_model_loads(monkeypatch)
    resumed = LocalTrainer(run_config_from_dict(raw, "test"), resume_from=checkpoint)
    assert loaded == [checkpoint / "model"]  # the configured model is never loaded first
    saved = AutoModelForCausalLM.from_pretrained(checkpoint / "model")
    for name, weight in saved.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], weight), name


def test_a_bad_checkpoint_fails_before_any_model_is_loaded(tmp_path, monkeypatch):
    raw = checkpointed_grpo_run(tmp_path)
    loaded = count_model_loads(monkeypatch)
    missing = tmp_path / "run" / "checkpoints" / "step_000009"
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint not found: {missing}")):
        LocalTrainer(run_config_from_dict(raw, "test"), resume_from=missing)
    assert loaded == []


def _bad_parquet(path, prompts, reward_models):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": prompts, "reward_model": reward_models}), path)
    return path


GOOD_PROMPT = [{"role": "user", "content": "1+1=?"}]
GOOD_TRUTH = {"style": "rule", "ground_truth": "2"}


@pytest.mark.parametrize(
    ("prompts", "reward_models", "message"),
    [
        ([GOOD_PROMPT, None, None], [GOOD_TRUTH] * 3, "row 2: prompt is null"),
        (["1+1=?", "2+2=?"], [GOOD_TRUTH] * 2, "row 1: prompt is a plain string"),
        ([GOOD_PROMPT, []], [GOOD_TRUTH] * 2, "row 2: prompt should be a non-empty list"),
        ([GOOD_PROMPT, [{"role": "user"}]], [GOOD_TRUTH] * 2, "row 2: prompt[0] needs text"),
        ([GOOD_PROMPT] * 2, [GOOD_TRUTH, None], "row 2: reward_model is null"),
        ([GOOD_PROMPT] * 2, [{"style": "rule"}] * 2, "row 1: reward_model.ground_truth is missing"),
        (
            [GOOD_PROMPT] * 2,
            [GOOD_TRUTH, {"style": "rule", "ground_truth": None}],
            "row 2: reward_model.ground_truth is null",
        ),
        (
            [GOOD_PROMPT] * 2,
            [GOOD_TRUTH, {"style": "rule", "ground_truth": "  "}],
            "row 2: reward_model.ground_truth is empty",
        ),
    ],
)
def test_a_bad_data_row_is_named_with_file_and_row(tmp_path, prompts, reward_models, message):
    path = _bad_parquet(tmp_path / "bad.parquet", prompts, reward_models)
    with pytest.raises(ValueError) as caught:
        ParquetPrompts(path, build_tokenizer(), seed=0, apply_chat_template=True)
    text = str(caught.value)
    assert text.startswith(f"{path}: {message}") and "\n" not in text
    if prompts[-1] is None:
        assert text.endswith("(and 1 more bad rows)")


def test_a_bad_data_row_is_a_one_line_train_error(tmp_path, capsys):
    from aepo.cli import main

    raw = two_step_run(tmp_path, [("1+1=?", "2")], {"algorithm": "grpo"})
    _bad_parquet(Path(raw["trainer"]["data"]), [GOOD_PROMPT, None], [GOOD_TRUTH] * 2)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"aepo train: {raw['trainer']['data']}: row 2: prompt is null"
