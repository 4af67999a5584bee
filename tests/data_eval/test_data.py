"""Benchmark loading, answer normalisation, unreadable-row reports, and `aepo data prepare`."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from aepo.cli import main
from aepo.data.answers import AnswerError, boxed_solution_answer, gsm8k_answer, plain_answer
from aepo.data.benchmarks import BENCHMARKS, PAPER_BENCHMARKS, load_benchmark
from aepo.data.prepare import drop_exact_duplicates, find_duplicates
from aepo.data.problems import MathProblem, load_problems
from aepo.data.prompts import FORMAT_INSTRUCTION

EXPECTED_ROWS = {
    "aime24": 30,
    "aime25": 30,
    "amc23": 40,
    "gsm8k": 1319,
    "math500": 500,
    "minerva_math": 272,
    "olympiadbench": 675,
    "college_math": 2818,
}


def test_every_benchmark_is_known():
    assert set(EXPECTED_ROWS) == set(BENCHMARKS)
    assert set(PAPER_BENCHMARKS) <= set(BENCHMARKS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_shipped_benchmark_loads_completely(repo_data, name):
    loaded = load_benchmark(name, repo_data / "eval")
    assert loaded.issues == []
    assert len(loaded.problems) == EXPECTED_ROWS[name]
    assert [p.row for p in loaded.problems] == list(range(1, EXPECTED_ROWS[name] + 1))
    for problem in loaded.problems:
        assert problem.source == name
        assert problem.problem and problem.problem == problem.problem.strip()
        assert isinstance(problem.answer, str) and problem.answer
        assert "####" not in problem.answer
        assert not problem.answer.startswith("$")


def test_answer_fields_are_normalised(repo_data):
    eval_dir = repo_data / "eval"
    amc = load_benchmark("amc23", eval_dir).problems
    assert amc[0].answer == "27"  # stored as the float 27.0
    gsm = load_benchmark("gsm8k", eval_dir).problems
    assert gsm[0].answer == "18" and gsm[0].problem.startswith("Janet")
    minerva = load_benchmark("minerva_math", eval_dir)
    first_solution = json.loads(
        (eval_dir / "minerva_math" / "test.jsonl").read_text().splitlines()[0]
    )["solution"]
    assert minerva.problems[0].answer == first_solution.rsplit("\\boxed{", 1)[1].split("}")[0]
    olympiad = {p.answer for p in load_benchmark("olympiadbench", eval_dir).problems}
    assert "69,84" in olympiad  # final_answer ["$69$,$84$"]
    aime25 = load_benchmark("aime25", eval_dir).problems
    assert aime25[0].answer == "70" and aime25[0].problem.startswith("Find the sum")


def test_olympiadbench_context_is_put_before_the_question(tmp_path):
    path = tmp_path / "test.jsonl"
    rows = [
        {"question": "Find x.", "final_answer": ["$3$"], "context": "Let x = 3."},
        {"question": "Find y.", "final_answer": ["$4$", "$5$"], "context": None},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    loaded = load_problems(
        path, problem_key="question", answer_key="final_answer", context_key="context"
    )
    assert [p.problem for p in loaded.problems] == ["Let x = 3.\n\nFind x.", "Find y."]
    assert [p.answer for p in loaded.problems] == ["3", "4, 5"]


def test_malformed_rows_are_reported_with_their_position(tmp_path):
    path = tmp_path / "broken.jsonl"
    lines = [
        json.dumps({"problem": "1+1?", "answer": "2"}),
        json.dumps({"problem": "2+2?", "answer": 4}),
        '{"problem": "cut off", "ans',
        json.dumps({"problem": "no answer here"}),
        "",  # blank lines hold no record and are not errors
        json.dumps({"problem": "null answer", "answer": None}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"problem": "   ", "answer": "1"}),
        json.dumps({"problem": "3+3?", "answer": "6"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    loaded = load_problems(path)
    assert [(p.row, p.answer) for p in loaded.problems] == [(1, "2"), (2, "4"), (9, "6")]
    issues = {issue.row: issue.message for issue in loaded.issues}
    assert sorted(issues) == [3, 4, 6, 7, 8]
    assert "invalid JSON" in issues[3]
    assert "missing field 'answer'" in issues[4] and "problem" in issues[4]
    assert "'answer'" in issues[6] and "null" in issues[6]
    assert "not an object" in issues[7]
    assert "'problem'" in issues[8] and "empty" in issues[8]
    assert str(loaded.issues[0]) == f"{path}: row 3: {issues[3]}"
    assert loaded.rows_read == 8


def test_missing_nested_field_is_named(tmp_path):
    path = tmp_path / "verl.parquet"
    pd.DataFrame(
        {
            "prompt": [[{"role": "user", "content": "What is 2+3?"}]] * 2,
            "reward_model": [
                {"ground_truth": "5", "style": "rule"},
                {"style": "rule", "ground_truth": None},
            ],
        }
    ).to_parquet(path)
    loaded = load_problems(path, problem_key="prompt", answer_key="reward_model.ground_truth")
    assert [(p.row, p.problem, p.answer) for p in loaded.problems] == [(1, "What is 2+3?", "5")]
    assert loaded.issues[0].row == 2 and "reward_model.ground_truth" in loaded.issues[0].message
    wrong_key = load_problems(path, problem_key="prompt", answer_key="reward_model.answer")
    assert len(wrong_key.issues) == 2
    assert "missing field 'reward_model.answer'" in wrong_key.issues[0].message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("$69$,$84$", "69,84"),
        ("\\$5", "\\$5"),  # an escaped dollar is a currency sign, not a delimiter
        (27.0, "27"),
        (0.25, "0.25"),
        (7, "7"),
        (["$1$", "$2$"], "1, 2"),
    ],
)
def test_plain_answer(value, expected):
    assert plain_answer(value) == expected


@pytest.mark.parametrize("value", [None, "", "$$", [], True, math.nan, {"a": 1}])
def test_plain_answer_rejects(value):
    with pytest.raises(AnswerError):
        plain_answer(value)


def test_gsm8k_and_boxed_answers():
    assert gsm8k_answer("so 3 * 5 = 15\n#### 70,000") == "70000"
    assert gsm8k_answer("a #### b\n#### -3.5") == "-3.5"
    with pytest.raises(AnswerError, match="####"):
        gsm8k_answer("no marker")
    assert boxed_solution_answer("x = \\boxed{1} then \\boxed{\\frac{a}{b}}.") == "\\frac{a}{b}"
    with pytest.raises(AnswerError, match="boxed"):
        boxed_solution_answer("no box at all")


def _problem(text: str, answer: str, row: int) -> MathProblem:
    return MathProblem("s", text, answer, path=None, row=row)  # type: ignore[arg-type]


def test_duplicate_report_and_dropping():
    items = [
        _problem("a", "1", 1),
        _problem("b", "2", 2),
        _problem("a", "1", 3),
        _problem("a", "1", 4),
        _problem("b", "3", 5),  # same problem, another answer: kept and reported
    ]
    report = find_duplicates(items)
    assert report.exact == {("a", "1"): 3}
    assert report.exact_extra_rows == 2
    assert report.conflicting == {"b": ["2", "3"]}
    assert [p.row for p in drop_exact_duplicates(items)] == [1, 2, 5]


def test_prepare_dapo_into_verl_schema(repo_data, tmp_path, capsys):
    source = repo_data / "train" / "dapo17k.parquet"
    output = tmp_path / "out" / "dapo.parquet"
    assert main(["data", "prepare", str(source), "--output", str(output)]) == 0

    raw = pd.read_parquet(source)
    stripped = raw.assign(problem=raw["problem"].str.strip())
    expected_rows = len(stripped.drop_duplicates(["problem", "answer"]))
    prepared = pd.read_parquet(output)
    assert len(prepared) == expected_rows < len(raw)
    printed = capsys.readouterr().out
    assert f"dropped {len(raw) - expected_rows} exact duplicate" in printed
    assert f"wrote {expected_rows} rows" in printed

    assert list(prepared.columns) == [
        "data_source",
        "prompt",
        "ability",
        "reward_model",
        "extra_info",
    ]
    first = prepared.iloc[0]
    assert first["data_source"] == "dapo17k" and first["ability"] == "math"
    (message,) = list(first["prompt"])
    assert message["role"] == "user"
    assert message["content"] == f"{raw['problem'][0].strip()} {FORMAT_INSTRUCTION}"
    assert first["reward_model"] == {"style": "rule", "ground_truth": raw["answer"][0]}
    assert first["extra_info"]["split"] == "train"
    assert list(prepared["extra_info"].map(lambda e: e["index"])) == list(range(len(prepared)))

    kept = tmp_path / "all.parquet"
    assert main(["data", "prepare", str(source), "--output", str(kept), "--keep-duplicates"]) == 0
    assert len(pd.read_parquet(kept)) == len(raw)


def test_prepare_benchmarks_defaults_to_the_working_directory(repo_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "data",
            "prepare",
            "--benchmarks",
            "aime24",
            "amc23",
            "--eval-dir",
            str(repo_data / "eval"),
        ]
    )
    assert code == 0
    prepared = pd.read_parquet(tmp_path / "outputs" / "data" / "benchmarks.parquet")
    assert prepared["data_source"].value_counts().to_dict() == {"aime24": 30, "amc23": 40}
    assert set(prepared["extra_info"].map(lambda e: e["split"])) == {"test"}
    assert prepared["reward_model"].map(lambda r: r["ground_truth"]).iloc[30] == "27"


def test_prepare_custom_keys_and_strict(tmp_path, capsys):
    source = tmp_path / "mine.jsonl"
    source.write_text(
        json.dumps({"q": "What is 6*7?", "sol": "6*7 = 42\n#### 42"})
        + "\n"
        + json.dumps({"q": "Broken", "sol": "no marker"})
        + "\n"
    )
    output = tmp_path / "mine.parquet"
    args = [
        "data",
        "prepare",
        str(source),
        "--output",
        str(output),
        "--problem-key",
        "q",
        "--answer-key",
        "sol",
        "--answer-format",
        "gsm8k",
        "--data-source",
        "mine",
        "--no-instruction",
    ]
    assert main(args + ["--strict"]) == 1
    assert not output.exists()
    assert f"{source}: row 2: field 'sol'" in capsys.readouterr().err
    assert main(args) == 0
    prepared = pd.read_parquet(output)
    assert len(prepared) == 1
    assert list(prepared.iloc[0]["prompt"])[0]["content"] == "What is 6*7?"
    assert prepared.iloc[0]["reward_model"]["ground_truth"] == "42"
    assert prepared.iloc[0]["data_source"] == "mine"


def test_data_check(repo_data, tmp_path, capsys):
    assert main(["data", "check", "--eval-dir", str(repo_data / "eval")]) == 0
    assert "5684 problems, 0 unreadable" in capsys.readouterr().out
    (tmp_path / "aime24").mkdir()
    (tmp_path / "aime24" / "test.jsonl").write_text(
        '{"problem": "p", "answer": "1"}\n{"problem": "q"}\n'
    )
    assert main(["data", "check", "--eval-dir", str(tmp_path), "--benchmarks", "aime24"]) == 1
    assert "row 2: missing field 'answer'" in capsys.readouterr().err
    assert main(["data", "check", "--eval-dir", str(tmp_path), "--benchmarks", "gsm8k"]) == 1
    assert "gsm8k" in capsys.readouterr().err


def test_missing_input_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(["data", "prepare", str(missing), "--output", str(tmp_path / "x.parquet")]) == 1
    assert str(missing) in capsys.readouterr().err


def _good_json(path):
    path.write_text(json.dumps([{"problem": "1+1", "answer": "2"}]))
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bin.json", bytes(range(128, 256)) * 8, "not UTF-8 text (byte 0"),
        ("cut.json", b'[{"problem": "1+1", "answer": "2"}, {"problem": "2+', "not a valid JSON"),
        ("bin.parquet", bytes(range(256)) * 8, "cannot read as parquet"),
    ],
)
def test_unreadable_input_files_are_one_line_errors_naming_the_file(
    tmp_path, capsys, name, content, message
):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["data", "prepare", str(path), "--output", str(tmp_path / "o.parquet")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"aepo data prepare: {path}: {message}")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "o.parquet").exists()


def test_output_that_cannot_be_written_is_refused_before_reading(tmp_path, capsys):
    data = _good_json(tmp_path / "in.json")
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = {
        folder: "is a directory",
        data / "x.parquet": f"{data} is a file, not a directory",
        data: "is also an input; writing it would destroy the input",
    }
    for output, message in cases.items():
        assert main(["data", "prepare", str(data), "--output", str(output)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"aepo data prepare: --output {output}") and message in err
        assert len(err.splitlines()) == 1
    assert json.loads(data.read_text()) == [{"problem": "1+1", "answer": "2"}]  # untouched
    assert list(folder.iterdir()) == []
