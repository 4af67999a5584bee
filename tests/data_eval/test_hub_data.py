"""``aepo data prepare hf:OWNER/NAME[:CONFIG][@SPLIT]``: Hugging Face datasets through the real
``datasets.load_dataset`` call, with no network (tests/conftest.py sets HF_HUB_OFFLINE=1).

The datasets are folders laid out as a hub dataset repository (data files plus a README whose
YAML header declares configs and splits), placed at OWNER/NAME in the working directory, where
``load_dataset`` looks before it asks the hub: the same code path as a download, minus the
download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from aepo.cli import main
from aepo.data.benchmarks import DEFAULT_EVAL_DIR
from aepo.data.hub import HubDatasetError, HubDatasetId, load_hub_problems, parse_hub_id
from aepo.data.problems import load_problems
from tests.readme_commands import in_a_user_folder, readme_commands

datasets = pytest.importorskip("datasets")

CARD = """---
configs:
- config_name: algebra
  data_files:
  - split: train
    path: algebra/train.jsonl
  - split: test
    path: algebra/test.jsonl
- config_name: geometry
  data_files:
  - split: test
    path: geometry/test.jsonl
---
"""


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """load_dataset converts what it reads into its cache: keep that inside the test."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def error_lines(err: str) -> list[str]:
    """Our messages, without the progress bars datasets draws while it converts a split."""
    return [line for line in err.splitlines() if line.startswith("aepo data prepare")]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


ALGEBRA_TEST = [
    {"problem": "What is 6*7?", "answer": "42"},
    {"problem": "   ", "answer": "1"},  # empty problem: unreadable
    {"problem": "Solve x+1=3.", "answer": "2"},
    {"problem": "What is 2^10?", "answer": None},  # no answer: unreadable
]


def hub_repo(root: Path, repo: str = "someone/toy-math") -> Path:
    """A dataset repository with two configs, the first with two splits."""
    folder = root / repo
    write_jsonl(folder / "algebra" / "test.jsonl", ALGEBRA_TEST)
    write_jsonl(folder / "algebra" / "train.jsonl", [{"problem": "1+1?", "answer": "2"}])
    write_jsonl(
        folder / "geometry" / "test.jsonl", [{"problem": "Angles of a triangle?", "answer": "180"}]
    )
    (folder / "README.md").write_text(CARD)
    return folder


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("hf:HuggingFaceH4/MATH-500", HubDatasetId("HuggingFaceH4/MATH-500")),
        ("hf:HuggingFaceH4/MATH-500@test", HubDatasetId("HuggingFaceH4/MATH-500", None, "test")),
        ("hf:a/b:algebra@test", HubDatasetId("a/b", "algebra", "test")),
        ("hf:a/b:algebra", HubDatasetId("a/b", "algebra", None)),
    ],
)
def test_hub_ids_parse_and_print_back(text, parsed):
    assert parse_hub_id(text) == parsed
    assert str(parsed) == text


@pytest.mark.parametrize("text", ["hf:", "hf:name-only", "hf:a/b/c", "hf:a/b@", "hf:a/b:@test"])
def test_malformed_hub_ids_are_refused_with_the_syntax(text):
    with pytest.raises(HubDatasetError, match=r"hf:OWNER/NAME\[:CONFIG\]\[@SPLIT\]"):
        parse_hub_id(text)


def test_a_hub_dataset_goes_through_the_file_normalisation(tmp_path, monkeypatch):
    """The same rows, read as a file and as a hub dataset: the same problems and answers, the
    same unreadable rows (named by the id instead of the path)."""
    hub_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    from_hub = load_hub_problems(parse_hub_id("hf:someone/toy-math:algebra@test"))
    from_file = load_problems(tmp_path / "someone/toy-math/algebra/test.jsonl")

    assert [(p.problem, p.answer, p.row) for p in from_hub.problems] == [
        (p.problem, p.answer, p.row) for p in from_file.problems
    ]
    assert [(i.row, i.message) for i in from_hub.issues] == [
        (i.row, i.message) for i in from_file.issues
    ]
    assert [str(i) for i in from_hub.issues] == [
        "hf:someone/toy-math:algebra@test: row 2: field 'problem' is empty",
        f"hf:someone/toy-math:algebra@test: row 4: {from_file.issues[1].message}",
    ]
    assert from_hub.source == "toy-math"


def test_prepare_writes_a_hub_dataset_and_names_its_unreadable_rows(tmp_path, monkeypatch, capsys):
    hub_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "out" / "toy.parquet"
    code = main(["data", "prepare", "hf:someone/toy-math:algebra@test", "--output", str(output)])
    assert code == 0
    captured = capsys.readouterr()
    assert "hf:someone/toy-math:algebra@test: row 2: field 'problem' is empty" in captured.err
    assert "hf:someone/toy-math:algebra@test: row 4:" in captured.err
    prepared = pd.read_parquet(output)
    assert prepared["reward_model"].map(lambda r: r["ground_truth"]).tolist() == ["42", "2"]
    assert set(prepared["data_source"]) == {"toy-math"}
    assert prepared["extra_info"].map(lambda e: e["source_file"]).iloc[0] == (
        "hf:someone/toy-math:algebra@test"
    )
    # --strict: the unreadable rows stop it, and nothing is written
    strict = tmp_path / "strict.parquet"
    args = ["data", "prepare", "hf:someone/toy-math:algebra@test", "--output", str(strict)]
    assert main([*args, "--strict"]) == 1
    assert not strict.exists()


def test_a_single_split_is_taken_and_several_must_be_named(tmp_path, monkeypatch, capsys):
    hub_repo(tmp_path)
    monkeypatch.chdir(tmp_path)
    # geometry has one split: no @SPLIT needed; the default output is named after the dataset
    assert main(["data", "prepare", "hf:someone/toy-math:geometry"]) == 0
    written = pd.read_parquet(tmp_path / "outputs" / "data" / "toy-math.parquet")
    assert written["reward_model"].map(lambda r: r["ground_truth"]).tolist() == ["180"]
    capsys.readouterr()

    output = tmp_path / "algebra.parquet"
    assert main(["data", "prepare", "hf:someone/toy-math:algebra", "--output", str(output)]) == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert "hf:someone/toy-math:algebra has splits train, test: name one" in line
    assert not output.exists()

    # an unknown config: datasets' own words, on one line, with the syntax
    assert main(["data", "prepare", "hf:someone/toy-math:calculus@test", "--output", str(output)])
    (line,) = error_lines(capsys.readouterr().err)
    assert "hf:someone/toy-math:calculus@test:" in line and "algebra" in line
    assert not output.exists()


def test_no_network_and_no_cache_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "out" / "math500.parquet"
    code = main(["data", "prepare", "hf:HuggingFaceH4/MATH-500@test", "--output", str(output)])
    assert code == 1
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("aepo data prepare: hf:HuggingFaceH4/MATH-500@test: cannot reach")
    assert "pass a local JSONL/parquet file instead" in line
    assert not output.exists() and not output.parent.exists()
    assert not list(tmp_path.glob("out*")), "nothing half-written at --output"


def test_a_failing_hub_input_loses_no_earlier_output(tmp_path, monkeypatch, capsys):
    """--output already holds a prepared file: a hub id that cannot be loaded leaves it whole."""
    monkeypatch.chdir(tmp_path)
    source = write_jsonl(tmp_path / "mine.jsonl", [{"problem": "1+2?", "answer": 3}])
    output = tmp_path / "prepared.parquet"
    assert main(["data", "prepare", str(source), "--output", str(output)]) == 0
    before = output.read_bytes()
    args = ["data", "prepare", str(source), "hf:nobody/absent", "--output", str(output)]
    assert main(args) == 1
    assert output.read_bytes() == before
    assert not list(tmp_path.glob("prepared.parquet.*")), "no staging file left behind"


def test_the_readme_eval_sections_hub_command_runs_as_written(tmp_path, capsys):
    """README's `aepo data prepare hf:HuggingFaceH4/MATH-500@test ...`, resolved from a folder
    laid out as that hub repository (its test.jsonl: our math500 copy): the same 500 problems
    and ground truths as the shipped benchmark."""
    (command,) = readme_commands("Data, reward, evaluation", "aepo data prepare")
    hub_id = next(arg for arg in command if arg.startswith("hf:"))
    repo = parse_hub_id(hub_id).repo
    with in_a_user_folder(tmp_path) as folder:
        (folder / repo).mkdir(parents=True)
        shutil.copy(DEFAULT_EVAL_DIR / "math500" / "test.jsonl", folder / repo / "test.jsonl")
        assert main(command[1:]) == 0
        output = folder / command[command.index("--output") + 1]
        assert (
            main(["data", "prepare", "--benchmarks", "math500", "--output", "shipped.parquet"]) == 0
        )
        shipped = pd.read_parquet(folder / "shipped.parquet")
    prepared = pd.read_parquet(output)
    assert len(prepared) == len(shipped) == 500
    truths = prepared["reward_model"].map(lambda r: r["ground_truth"]).tolist()
    assert truths == shipped["reward_model"].map(lambda r: r["ground_truth"]).tolist()
    assert prepared["prompt"].map(lambda p: p[0]["content"]).tolist() == (
        shipped["prompt"].map(lambda p: p[0]["content"]).tolist()
    )
