"""The evaluation benchmarks of the paper and where each keeps its problem and answer.

The files ship inside the package (``aepo/data/eval``, which a checkout also shows as
``data/eval``), so an installed wheel evaluates with no checkout; any other directory laid out
the same way can be passed instead: ``<eval_dir>/<name>/test.jsonl`` or ``test.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aepo.data.problems import LoadedProblems, load_problems


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    filename: str
    problem_key: str
    answer_key: str
    answer_format: str = "plain"
    context_key: str | None = None


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("aime24", "test.jsonl", "problem", "answer"),
        # Skywork-OR1's copy is already in verl's schema.
        BenchmarkSpec("aime25", "test.parquet", "prompt", "reward_model.ground_truth"),
        BenchmarkSpec("amc23", "test.jsonl", "problem", "answer"),
        BenchmarkSpec("gsm8k", "test.jsonl", "question", "answer", "gsm8k"),
        BenchmarkSpec("math500", "test.jsonl", "problem", "answer"),
        BenchmarkSpec("minerva_math", "test.jsonl", "problem", "solution", "boxed"),
        BenchmarkSpec(
            "olympiadbench", "test.jsonl", "question", "final_answer", context_key="context"
        ),
        BenchmarkSpec("college_math", "test.jsonl", "question", "answer"),
    )
}
"""Every benchmark we know, by name (the paper's seven plus AIME25)."""

PAPER_BENCHMARKS = (
    "aime24",
    "amc23",
    "college_math",
    "gsm8k",
    "math500",
    "minerva_math",
    "olympiadbench",
)
"""The seven benchmarks of the paper's main table."""

DEFAULT_EVAL_DIR = Path(__file__).resolve().parent / "eval"
"""The benchmark files installed with the package (data/README.md says where each came from)."""


def benchmark_path(name: str, eval_dir: Path) -> Path:
    return Path(eval_dir) / name / BENCHMARKS[name].filename


def load_benchmark(name: str, eval_dir: Path = DEFAULT_EVAL_DIR) -> LoadedProblems:
    """Problems of one benchmark, with ground truths normalised to strings."""
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    path = benchmark_path(name, eval_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"benchmark {name!r} not found: expected {path} (pass the directory holding "
            f"{'/'.join(BENCHMARKS)} folders)"
        )
    return load_problems(
        path,
        source=name,
        problem_key=spec.problem_key,
        answer_key=spec.answer_key,
        answer_format=spec.answer_format,
        context_key=spec.context_key,
    )
