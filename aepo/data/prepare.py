"""Write math problems as a parquet file in verl's RL dataset schema.

Each row: ``data_source``, ``prompt`` (one user turn: problem + format instruction),
``ability``, ``reward_model = {"style": "rule", "ground_truth": str}`` and ``extra_info =
{index, split, source_file, source_row}``, which is what verl's ``RLHFDataset`` and reward
managers read.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aepo.data.problems import MathProblem
from aepo.data.prompts import FORMAT_INSTRUCTION, chat_prompt


@dataclass
class DuplicateReport:
    """Rows whose problem text was seen before.

    exact: (problem, answer) pairs that appeared more than once, with how often.
    conflicting: problems that appear with more than one answer, with those answers.
    """

    rows_in: int = 0
    exact: dict[tuple[str, str], int] = field(default_factory=dict)
    conflicting: dict[str, list[str]] = field(default_factory=dict)

    @property
    def exact_extra_rows(self) -> int:
        """Rows that repeat an earlier row exactly (what deduplication drops)."""
        return sum(count - 1 for count in self.exact.values())

    def lines(self, examples: int = 3) -> list[str]:
        lines = [
            f"{self.rows_in} rows; {self.exact_extra_rows} repeat an earlier row exactly "
            f"({len(self.exact)} distinct problem/answer pairs occur more than once); "
            f"{len(self.conflicting)} problem(s) appear with different answers"
        ]
        for problem, answers in list(self.conflicting.items())[:examples]:
            short = " ".join(problem.split())[:80]
            lines.append(f"  different answers {answers} for: {short}...")
        return lines


def find_duplicates(problems: list[MathProblem]) -> DuplicateReport:
    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    answers_of: dict[str, list[str]] = defaultdict(list)
    for item in problems:
        pair_counts[(item.problem, item.answer)] += 1
        if item.answer not in answers_of[item.problem]:
            answers_of[item.problem].append(item.answer)
    return DuplicateReport(
        rows_in=len(problems),
        exact={pair: count for pair, count in pair_counts.items() if count > 1},
        conflicting={
            problem: answers for problem, answers in answers_of.items() if len(answers) > 1
        },
    )


def drop_exact_duplicates(problems: list[MathProblem]) -> list[MathProblem]:
    """Keep the first of rows with identical problem and answer (the same problem with a
    different answer is kept: which answer is right is for the user to decide)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for item in problems:
        key = (item.problem, item.answer)
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def verl_row(
    item: MathProblem,
    index: int,
    *,
    split: str,
    data_source: str | None = None,
    instruction: str | None = FORMAT_INSTRUCTION,
    ability: str = "math",
) -> dict[str, Any]:
    return {
        "data_source": data_source or item.source,
        "prompt": chat_prompt(item.problem, instruction),
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": item.answer},
        "extra_info": {
            "index": index,
            "split": split,
            "source_file": str(item.path),
            "source_row": item.row,
        },
    }


def write_verl_parquet(
    problems: list[MathProblem],
    output: Path,
    *,
    split: str,
    data_source: str | None = None,
    instruction: str | None = FORMAT_INSTRUCTION,
) -> Path:
    """Write ``problems`` to ``output`` (parent folders created); returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not problems:
        raise ValueError(f"no problems to write to {output}")
    rows = [
        verl_row(item, index, split=split, data_source=data_source, instruction=instruction)
        for index, item in enumerate(problems)
    ]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed: an interrupted write never leaves a truncated parquet where
    # the previous file (or nothing) was.
    staging = output.with_name(output.name + ".tmp")
    try:
        pq.write_table(pa.Table.from_pylist(rows), staging)
        os.replace(staging, output)
    finally:
        staging.unlink(missing_ok=True)
    return output
