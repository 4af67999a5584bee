"""Sample n answers per problem, score them, and keep the counts on disk as we go."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aepo.data.problems import MathProblem
from aepo.data.prompts import user_message
from aepo.eval.progress_log import ProgressLog
from aepo.eval.report import summarize, write_results, write_tensorboard
from aepo.eval.sampling import Sampler, SamplingSettings
from aepo.rewards.math_reward import score


@dataclass(frozen=True)
class EvalOutcome:
    results: dict[str, Any]
    json_path: Path
    markdown_path: Path
    sampled_problems: int
    """problems sampled by this invocation (resumed ones excluded)"""


def call_seed(base_seed: int, problem: MathProblem) -> int:
    """A seed tied to the first problem of a call, so resuming reproduces the same draws."""
    return (base_seed * 1_000_003 + zlib.crc32(f"{problem.source}:{problem.row}".encode())) % 2**31


def problem_record(
    problem: MathProblem, responses: list[str], keep_responses: bool
) -> dict[str, Any]:
    results = [score(text, problem.answer) for text in responses]
    record: dict[str, Any] = {
        "benchmark": problem.source,
        "row": problem.row,
        "n": len(results),
        "correct": sum(r.correct for r in results),
        "no_answer": sum(r.answer is None for r in results),
        "unparseable": sum(r.unparseable for r in results),
        "ground_truth": problem.answer,
        # Counts rather than the list: n can be 1024, and counts suffice for majority voting.
        "answer_counts": dict(Counter(r.answer for r in results if r.answer is not None)),
    }
    if keep_responses:
        record["responses"] = responses
    return record


def evaluate(
    problems: dict[str, list[MathProblem]],
    make_sampler: Callable[[], Sampler],
    settings: SamplingSettings,
    log: ProgressLog,
    *,
    problems_per_call: int = 8,
    instruction: str | None,
    keep_responses: bool = False,
    show_progress: bool = True,
) -> EvalOutcome:
    """Evaluate every problem not already in ``log``, then write results beside it.

    ``make_sampler`` is called only when something is left to sample, so a finished
    evaluation reprints its results without loading the model.
    """
    from tqdm import tqdm

    todo = [p for items in problems.values() for p in items if not log.is_done(p.source, p.row)]
    total = sum(len(items) for items in problems.values())
    sampler = make_sampler() if todo else None
    with tqdm(
        total=total,
        initial=total - len(todo),
        desc="problems",
        unit="problem",
        disable=not show_progress,
    ) as bar:
        for start in range(0, len(todo), problems_per_call):
            chunk = todo[start : start + problems_per_call]
            assert sampler is not None
            prompts = [sampler.render(user_message(p.problem, instruction)) for p in chunk]
            completions = sampler.sample(prompts, settings, call_seed(settings.seed, chunk[0]))
            log.append(
                [
                    problem_record(p, texts, keep_responses)
                    for p, texts in zip(chunk, completions, strict=True)
                ]
            )
            bar.update(len(chunk))
    wanted = {(p.source, p.row) for items in problems.values() for p in items}
    records = [r for r in log.records.values() if (r["benchmark"], r["row"]) in wanted]
    results = summarize(
        records,
        list(problems),
        header=log.identity,
        expected_problems={name: len(items) for name, items in problems.items()},
    )
    json_path, markdown_path = write_results(results, log.folder)
    write_tensorboard(results, log.folder)
    return EvalOutcome(results, json_path, markdown_path, len(todo))
