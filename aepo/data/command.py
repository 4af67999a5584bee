"""``aepo data``: prepare training/validation parquet files, and check benchmark files.

aepo data prepare data/train/dapo17k.parquet --output outputs/data/dapo17k.parquet
aepo data prepare hf:HuggingFaceH4/MATH-500@test --output outputs/data/math500.parquet
aepo data prepare --benchmarks aime24 math500 --output outputs/data/val.parquet
aepo data check
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aepo.data.answers import ANSWER_FORMATS
from aepo.data.benchmarks import BENCHMARKS, DEFAULT_EVAL_DIR, load_benchmark
from aepo.data.hub import (
    SYNTAX,
    HubDatasetError,
    HubDatasetId,
    is_hub_id,
    load_hub_problems,
    parse_hub_id,
)
from aepo.data.prepare import drop_exact_duplicates, find_duplicates, write_verl_parquet
from aepo.data.problems import LoadedProblems, MathProblem, load_problems
from aepo.data.prompts import FORMAT_INSTRUCTION

MAX_ISSUES_SHOWN = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="{prepare,check}")

    prepare = actions.add_parser(
        "prepare",
        help="write problems as a verl RL parquet (prompt with format instruction, ground truth)",
        description="Turn JSONL/parquet files or Hugging Face datasets with problem/answer "
        "fields, or shipped benchmarks, into verl's RL parquet schema. Unreadable rows are "
        "listed with file (or dataset id) and row.",
    )
    prepare.add_argument(
        "inputs",
        nargs="*",
        help=f"JSONL, JSON or parquet files, or Hugging Face datasets as {SYNTAX} "
        "(loaded with datasets.load_dataset; e.g. hf:HuggingFaceH4/MATH-500@test)",
    )
    prepare.add_argument(
        "--benchmarks",
        nargs="+",
        choices=sorted(BENCHMARKS),
        default=[],
        metavar="NAME",
        help=f"benchmarks to include (from --eval-dir): {', '.join(BENCHMARKS)}",
    )
    prepare.add_argument(
        "--eval-dir",
        type=Path,
        default=DEFAULT_EVAL_DIR,
        help="folder with <benchmark>/test.jsonl files (default: the copies installed with aepo)",
    )
    prepare.add_argument(
        "--output",
        type=Path,
        default=None,
        help="parquet file to write (default: ./outputs/data/<first input name>.parquet)",
    )
    prepare.add_argument(
        "--split",
        default=None,
        help="extra_info.split (default: train for files, test for benchmarks)",
    )
    prepare.add_argument(
        "--data-source",
        default=None,
        help="data_source of every row (default: the file stem / dataset / benchmark name)",
    )
    prepare.add_argument(
        "--problem-key",
        default="problem",
        help="field holding the problem text (dotted for nested; a chat "
        "prompt list is read as its last user message)",
    )
    prepare.add_argument("--answer-key", default="answer", help="field holding the answer")
    prepare.add_argument(
        "--answer-format",
        choices=sorted(ANSWER_FORMATS),
        default="plain",
        help="plain: str/number/list; gsm8k: '#### N'; boxed: last \\boxed{} of a solution",
    )
    prepare.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="keep rows whose problem and answer repeat an earlier row",
    )
    prepare.add_argument(
        "--no-instruction",
        action="store_true",
        help="do not append the <think>/\\boxed{} format instruction",
    )
    prepare.add_argument(
        "--strict", action="store_true", help="write nothing and fail if any row cannot be read"
    )

    check = actions.add_parser("check", help="load benchmark files and report unreadable rows")
    check.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    check.add_argument(
        "--benchmarks",
        nargs="+",
        choices=sorted(BENCHMARKS),
        default=list(BENCHMARKS),
        metavar="NAME",
    )


def _report_issues(loaded: list[LoadedProblems]) -> int:
    issues = [issue for part in loaded for issue in part.issues]
    for part in loaded:
        print(part.summary())
    for issue in issues[:MAX_ISSUES_SHOWN]:
        print(f"  unreadable: {issue}", file=sys.stderr)
    if len(issues) > MAX_ISSUES_SHOWN:
        print(f"  ... and {len(issues) - MAX_ISSUES_SHOWN} more unreadable rows", file=sys.stderr)
    return len(issues)


def _default_output(inputs: list) -> Path:
    if not inputs:
        name = "benchmarks"
    else:
        first = inputs[0]
        name = first.name if isinstance(first, HubDatasetId) else first.stem
    return Path.cwd() / "outputs" / "data" / f"{name}.parquet"


def _parse_inputs(texts: list[str]) -> list:
    """Each input as a Path, or a HubDatasetId for ``hf:...``; HubDatasetError if malformed."""
    return [parse_hub_id(text) if is_hub_id(text) else Path(text) for text in texts]


def _output_problem(output: Path, inputs: list[Path]) -> str | None:
    """Why ``--output`` cannot be written, checked before minutes of reading inputs."""
    if output.is_dir():
        return f"--output {output} is a directory; give the parquet file to write"
    for parent in output.parents:
        if parent.exists() and not parent.is_dir():
            return f"--output {output}: {parent} is a file, not a directory"
    if output.exists() and any(output.resolve() == p.resolve() for p in inputs if p.exists()):
        return f"--output {output} is also an input; writing it would destroy the input"
    return None


def _prepare(args: argparse.Namespace) -> int:
    if not args.inputs and not args.benchmarks:
        print("aepo data prepare: give input files and/or --benchmarks", file=sys.stderr)
        return 2
    try:
        inputs = _parse_inputs(args.inputs)
    except HubDatasetError as error:
        print(f"aepo data prepare: {error}", file=sys.stderr)
        return 2
    files = [item for item in inputs if isinstance(item, Path)]
    output = args.output or _default_output(inputs)
    problem = _output_problem(output, files)
    if problem:
        print(f"aepo data prepare: {problem}", file=sys.stderr)
        return 2
    fields = {
        "source": args.data_source,
        "problem_key": args.problem_key,
        "answer_key": args.answer_key,
        "answer_format": args.answer_format,
    }
    try:
        loaded = [
            load_problems(item, **fields)
            if isinstance(item, Path)
            else load_hub_problems(item, **fields)
            for item in inputs
        ]
        loaded += [load_benchmark(name, args.eval_dir) for name in args.benchmarks]
    except (FileNotFoundError, ValueError) as error:
        print(f"aepo data prepare: {error}", file=sys.stderr)
        return 1
    unreadable = _report_issues(loaded)
    if unreadable and args.strict:
        print(f"--strict: {unreadable} unreadable row(s); nothing written", file=sys.stderr)
        return 1
    problems: list[MathProblem] = [item for part in loaded for item in part.problems]
    for line in find_duplicates(problems).lines():
        print(line)
    if not args.keep_duplicates:
        kept = drop_exact_duplicates(problems)
        print(
            f"dropped {len(problems) - len(kept)} exact duplicate row(s) (--keep-duplicates to keep)"
        )
        problems = kept
    split = args.split or ("train" if args.inputs else "test")
    try:
        write_verl_parquet(
            problems,
            output,
            split=split,
            data_source=args.data_source,
            instruction=None if args.no_instruction else FORMAT_INSTRUCTION,
        )
    except ValueError as error:
        print(f"aepo data prepare: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"aepo data prepare: cannot write --output {output}: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(problems)} rows to {output}")
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        loaded = [load_benchmark(name, args.eval_dir) for name in args.benchmarks]
    except FileNotFoundError as error:
        print(f"aepo data check: {error}", file=sys.stderr)
        return 1
    unreadable = _report_issues(loaded)
    total = sum(len(part.problems) for part in loaded)
    print(f"{total} problems, {unreadable} unreadable row(s)")
    return 1 if unreadable else 0


def run(args: argparse.Namespace) -> int:
    return _prepare(args) if args.action == "prepare" else _check(args)
