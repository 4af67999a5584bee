"""The built-in task, tokenizer, tiny model and the cached warm start."""

from __future__ import annotations

import math

import pytest

from aepo.tasks import contains_digit, digit_sum
from aepo.tasks.builtin import builtin_task
from aepo.tasks.tiny_model import build_tokenizer, save_tiny_model
from aepo.tasks.warm_start import WarmStartSettings, warm_start_model


def test_reward_accepts_every_valid_pair_and_nothing_else():
    for target in digit_sum.TARGETS:
        valid = set(digit_sum.valid_answers(target))
        assert len(valid) == min(target, 18 - target) + 1
        for a in range(10):
            for b in range(10):
                answer = f"{a}+{b}"
                assert digit_sum.reward(answer, target) == float(answer in valid)
    assert digit_sum.reward("3+9", "12") == 1.0  # ground truth from a parquet is a string
    for bad in ("39", "3+9+0", "3 + 9", "", "12", "a+b"):
        assert digit_sum.reward(bad, 12) == 0.0


def test_verl_rows_and_compute_score_follow_verls_schema():
    rows = digit_sum.verl_rows(20, seed=3)
    assert rows == digit_sum.verl_rows(20, seed=3) and rows != digit_sum.verl_rows(20, seed=4)
    for i, row in enumerate(rows):
        target = row["reward_model"]["ground_truth"]
        assert row["prompt"] == [{"role": "user", "content": f"{target}="}]
        assert row["extra_info"] == {"index": i} and row["data_source"] == digit_sum.DATA_SOURCE
        answer = digit_sum.valid_answers(int(target))[0]
        scored = digit_sum.compute_score(row["data_source"], answer, target, row["extra_info"])
        assert scored == {"score": 1.0, "acc": 1.0}
        assert digit_sum.compute_score(row["data_source"], "x", target)["score"] == 0.0


def test_entropy_ceiling_is_the_uniform_correct_policy():
    expected = sum(math.log(min(t, 18 - t) + 1) for t in range(19)) / 19 / 4
    assert digit_sum.entropy_ceiling() == pytest.approx(expected)
    assert 0.3 < digit_sum.entropy_ceiling() < 0.4


def test_tokenizer_is_character_level_and_round_trips_ascii():
    tok = build_tokenizer()
    text = "Let x = 3.5; find $\\frac{x^2}{2}$?\n\tOK"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    unknown = tok("é€", add_special_tokens=False)["input_ids"]
    assert unknown == [tok.unk_token_id, tok.unk_token_id]
    assert tok.pad_token_id != tok.eos_token_id
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "2+2?"}], add_generation_prompt=True, tokenize=False
    )
    assert chat == "user: 2+2?\nassistant: "


def test_saved_tiny_model_loads_offline_with_auto_classes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = save_tiny_model(tmp_path / "tiny", seed=3)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.vocab_size == len(tok)
    ids = tok("7=", return_tensors="pt")
    out = model.generate(**ids, do_sample=False, max_new_tokens=3, pad_token_id=tok.pad_token_id)
    assert out.shape[0] == 1 and out.shape[1] <= ids["input_ids"].shape[1] + 3
    same = save_tiny_model(tmp_path / "again", seed=3)
    again = AutoModelForCausalLM.from_pretrained(same)
    first = next(iter(model.state_dict().values()))
    assert (first == next(iter(again.state_dict().values()))).all()  # seeded


def test_warm_start_is_cached_by_its_settings(tmp_path, monkeypatch):
    settings = WarmStartSettings(steps=5, batch_size=32)
    path = warm_start_model(settings, tmp_path, progress=False)
    assert (path / "config.json").is_file() and (path / "warm_start.json").is_file()

    def must_not_train(*args, **kwargs):
        raise AssertionError("cached warm start was retrained")

    monkeypatch.setattr("aepo.tasks.warm_start.train_warm_start", must_not_train)
    assert warm_start_model(settings, tmp_path, progress=False) == path
    other = WarmStartSettings(steps=6, batch_size=32)
    assert other.key("contains_digit") != settings.key("contains_digit")
    with pytest.raises(AssertionError, match="retrained"):
        warm_start_model(other, tmp_path, progress=False)


def test_contains_digit_reward_is_an_exact_format_and_constraint_check():
    assert contains_digit.reward("1274", 7) == 1.0
    assert contains_digit.reward("7000", "7") == 1.0  # ground truth from a parquet is a string
    assert contains_digit.reward(" 9997\n", 7) == 1.0
    assert contains_digit.reward("1234", 7) == 0.0
    for bad in ("127", "12745", "12a4", "1 74", "", "7"):
        assert contains_digit.reward(bad, 7) == 0.0, bad
    for bad_truth in ("", "77", "x", None):
        assert contains_digit.reward("7777", bad_truth) == 0.0


def test_contains_digit_ceiling_counts_the_valid_answers_exactly():
    valid = [f"{i:04d}" for i in range(10_000) if contains_digit.reward(f"{i:04d}", 3)]
    assert len(valid) == contains_digit.num_valid_answers() == 3439
    assert contains_digit.entropy_ceiling() == pytest.approx(math.log(3439) / 5)
    assert contains_digit.entropy_ceiling() >= 1.2  # room for the paper's targets up to 1.0


def test_contains_digit_prompts_are_balanced_and_seeded():
    import numpy as np

    digits = contains_digit.sample_targets(np.random.default_rng(0), 32)
    counts = [digits.count(d) for d in range(10)]
    assert sorted(counts) == [3] * 8 + [4] * 2
    assert digits == contains_digit.sample_targets(np.random.default_rng(0), 32)
    assert digits != contains_digit.sample_targets(np.random.default_rng(1), 32)


def test_contains_digit_warm_start_answers_follow_the_mixture():
    import numpy as np

    rng = np.random.default_rng(0)
    valid = [contains_digit.warm_start_answer(rng, 4, valid=True) for _ in range(300)]
    assert all(contains_digit.reward(a, 4) == 1.0 for a in valid)
    assert len(set(valid)) > 150  # spread over the 3439 answers, not a few
    noise = [contains_digit.warm_start_answer(rng, 4, valid=False) for _ in range(2000)]
    hit = sum(contains_digit.reward(a, 4) for a in noise) / len(noise)
    assert abs(hit - 0.3439) < 0.04  # random digits, right as often as chance says


def test_contains_digit_verl_functions_follow_verls_schema():
    rows = contains_digit.verl_rows(12, seed=3)
    assert rows == contains_digit.verl_rows(12, seed=3) and rows != contains_digit.verl_rows(12, 4)
    for i, row in enumerate(rows):
        digit = row["reward_model"]["ground_truth"]
        assert row["prompt"] == [{"role": "user", "content": f"{digit}:"}]
        assert row["extra_info"] == {"index": i}
        assert row["data_source"] == contains_digit.DATA_SOURCE
        scored = contains_digit.compute_score(row["data_source"], digit * 4, digit)
        assert scored == {"score": 1.0, "acc": 1.0}
        assert contains_digit.compute_score(row["data_source"], "x", digit)["score"] == 0.0


def test_unknown_builtin_task_is_named():
    with pytest.raises(ValueError, match="unknown built-in task 'nope'.*contains_digit"):
        builtin_task("nope")
    with pytest.raises(ValueError, match="unknown built-in task"):
        warm_start_model(WarmStartSettings(steps=1), progress=False, task="nope")


def test_warm_start_cache_key_names_the_task():
    settings = WarmStartSettings()
    assert settings.key("contains_digit") != settings.key("digit_sum")
