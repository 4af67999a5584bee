"""The evaluation's on-disk state, written as it goes so an interrupted run resumes.

``run.json`` holds what identifies the run (model, backend, sampling settings, prompt); a
resumed run must match it, or its counts would mix two experiments. ``problems.jsonl`` gets
one line per finished problem (its correct count out of n), appended and flushed as soon as
the problem is scored; a line cut short by an interruption is ignored on resume.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
PROBLEMS_FILE = "problems.jsonl"


class RunMismatchError(RuntimeError):
    """The output folder holds a run with other settings."""


def problem_key(benchmark: str, row: int) -> str:
    return f"{benchmark}:{row}"


class ProgressLog:
    def __init__(self, folder: Path, identity: dict[str, Any], *, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.run_path = self.folder / RUN_FILE
        self.problems_path = self.folder / PROBLEMS_FILE
        if overwrite:
            self.run_path.unlink(missing_ok=True)
            self.problems_path.unlink(missing_ok=True)
        self.identity = json.loads(json.dumps(identity))  # tuples -> lists, as stored
        self._check_identity(self.identity)
        self.records: dict[str, dict[str, Any]] = self._read_records()

    def _check_identity(self, normalized: dict[str, Any]) -> None:
        if self.run_path.is_file():
            stored = json.loads(self.run_path.read_text())
            if stored != normalized:
                differences = sorted(
                    key
                    for key in set(stored) | set(normalized)
                    if stored.get(key) != normalized.get(key)
                )
                raise RunMismatchError(
                    f"{self.folder} holds an evaluation with different {', '.join(differences)}; "
                    "use another --output folder, or --overwrite to start again"
                )
        else:
            self.run_path.write_text(json.dumps(normalized, indent=2) + "\n")

    def _read_records(self) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        if not self.problems_path.is_file():
            return records
        with self.problems_path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                try:
                    record = json.loads(line)
                    records[problem_key(record["benchmark"], record["row"])] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    logger.warning(
                        "%s: line %d is incomplete (interrupted write); that problem is redone",
                        self.problems_path,
                        line_number,
                    )
        return records

    def is_done(self, benchmark: str, row: int) -> bool:
        return problem_key(benchmark, row) in self.records

    def append(self, records: list[dict[str, Any]]) -> None:
        with self.problems_path.open("a", encoding="utf-8") as handle:
            if handle.tell() > 0 and not self._ends_with_newline():
                handle.write("\n")  # close a line an interruption left open
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.records[problem_key(record["benchmark"], record["row"])] = record
            handle.flush()
            os.fsync(handle.fileno())

    def _ends_with_newline(self) -> bool:
        with self.problems_path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
