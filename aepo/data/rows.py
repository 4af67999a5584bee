"""Read the records of a JSONL or parquet file, keeping each record's position.

A broken line is not a reason to lose a whole file, and silently skipping it would bias an
evaluation, so readers yield every row together with either its record or what was wrong.
Row numbers are 1-based: the line number in a JSONL file, the row index + 1 in parquet.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class RowIssue:
    """A row that could not be used, and why."""

    path: Path | str  # a file, or an ``hf:`` dataset id
    row: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}: row {self.row}: {self.message}"


@dataclass(frozen=True)
class RawRow:
    row: int
    record: dict[str, Any] | None
    error: str | None = None


def _jsonl_rows(path: Path) -> Iterator[RawRow]:
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # a blank line (often the last) holds no record
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield RawRow(
                    line_number, None, f"invalid JSON ({error.msg} at column {error.colno})"
                )
                continue
            if not isinstance(record, dict):
                yield RawRow(line_number, None, f"a JSON {type(record).__name__}, not an object")
                continue
            yield RawRow(line_number, record)


def _not_utf8(path: Path, error: UnicodeDecodeError) -> ValueError:
    return ValueError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})")


def _json_array_rows(path: Path) -> Iterator[RawRow]:
    # One document: a syntax error anywhere (a truncated download) leaves no row to trust.
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: not a valid JSON array ({error.msg}: line {error.lineno}, "
            f"column {error.colno}); no row read"
        ) from None
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON array of objects")
    for index, record in enumerate(records, start=1):
        if isinstance(record, dict):
            yield RawRow(index, record)
        else:
            yield RawRow(index, None, f"a JSON {type(record).__name__}, not an object")


def _parquet_rows(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... for bad files
        raise ValueError(f"{path}: cannot read as parquet: {error}") from None
    for index, record in enumerate(table.to_pylist(), start=1):
        yield RawRow(index, record)


def read_rows(path: Path) -> Iterator[RawRow]:
    """Every record of ``path`` (``.jsonl``, a ``.json`` array, or ``.parquet``) in order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_rows(path)
    if suffix == ".json":
        # Many "json" datasets are really JSON lines; the first character tells.
        try:
            with path.open("r", encoding="utf-8") as handle:
                first = handle.read(1024).lstrip()[:1]
        except UnicodeDecodeError as error:
            raise _not_utf8(path, error) from None
        return _json_array_rows(path) if first == "[" else _jsonl_rows(path)
    if suffix == ".parquet":
        return _parquet_rows(path)
    raise ValueError(f"{path}: unsupported file type {suffix!r} (use one of {SUPPORTED_SUFFIXES})")
