"""Math problems (text + ground truth) read from any JSONL/parquet file.

Fields are named by key; a dotted key reaches into nested records
(``reward_model.ground_truth``), and a problem field holding chat messages (verl's
``prompt``) yields the content of the last user message. Rows that cannot be read are
returned as :class:`~aepo.data.rows.RowIssue` with their file and row, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aepo.data.answers import ANSWER_FORMATS, AnswerError
from aepo.data.rows import RawRow, RowIssue, read_rows


@dataclass(frozen=True)
class MathProblem:
    """One problem. ``row`` is its 1-based position in ``path`` (a file, or an ``hf:`` id)."""

    source: str
    problem: str
    answer: str
    path: Path | str
    row: int
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedProblems:
    """The problems of one file and the rows that could not be read."""

    source: str
    path: Path | str
    problems: list[MathProblem]
    issues: list[RowIssue]

    @property
    def rows_read(self) -> int:
        return len(self.problems) + len(self.issues)

    def summary(self) -> str:
        text = f"{self.source}: {len(self.problems)} problems from {self.path}"
        if self.issues:
            text += f"; {len(self.issues)} unreadable row(s)"
        return text


class FieldError(KeyError):
    def __str__(self) -> str:  # KeyError's default repr-quotes the message
        return str(self.args[0])


def field_value(record: dict[str, Any], key: str) -> Any:
    """``record[key]``, where ``a.b`` means ``record["a"]["b"]``; FieldError names what is missing."""
    value: Any = record
    walked = []
    for part in key.split("."):
        walked.append(part)
        if not isinstance(value, dict) or part not in value:
            present = ", ".join(sorted(value)) if isinstance(value, dict) else type(value).__name__
            raise FieldError(f"missing field {'.'.join(walked)!r} (present: {present})")
        value = value[part]
    return value


def problem_text(value: Any, key: str) -> str:
    """A problem string, or the last user message of a chat prompt."""
    if hasattr(value, "tolist"):  # parquet lists can arrive as numpy arrays
        value = value.tolist()
    if isinstance(value, list):
        user_turns = [m for m in value if isinstance(m, dict) and m.get("role") == "user"]
        if not user_turns:
            raise FieldError(f"field {key!r} holds no user message")
        value = user_turns[-1].get("content")
    if not isinstance(value, str):
        raise FieldError(f"field {key!r} should be text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise FieldError(f"field {key!r} is empty")
    return text


def load_problems(
    path: Path,
    *,
    source: str | None = None,
    problem_key: str = "problem",
    answer_key: str = "answer",
    answer_format: str = "plain",
    context_key: str | None = None,
    keep_fields: tuple[str, ...] = (),
) -> LoadedProblems:
    """Read every row of ``path`` into a :class:`MathProblem` or a :class:`RowIssue`.

    ``answer_format`` is a key of :data:`aepo.data.answers.ANSWER_FORMATS`. ``context_key``
    names an optional field whose text is put before the problem (OlympiadBench's shared
    context). ``keep_fields`` are copied into ``extras`` when present.
    """
    path = Path(path)
    check_answer_format(answer_format)
    return problems_from_rows(
        read_rows(path),
        path,
        source=source or path.stem,
        problem_key=problem_key,
        answer_key=answer_key,
        answer_format=answer_format,
        context_key=context_key,
        keep_fields=keep_fields,
    )


def check_answer_format(answer_format: str) -> None:
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(
            f"unknown answer format {answer_format!r}; one of {sorted(ANSWER_FORMATS)}"
        )


def problems_from_rows(
    rows: Iterable[RawRow],
    origin: Path | str,
    *,
    source: str,
    problem_key: str = "problem",
    answer_key: str = "answer",
    answer_format: str = "plain",
    context_key: str | None = None,
    keep_fields: tuple[str, ...] = (),
) -> LoadedProblems:
    """The normalisation every input goes through, files and Hugging Face datasets alike:
    ``origin`` (a path, or an ``hf:`` id) names where the rows came from in every issue."""
    check_answer_format(answer_format)
    read_answer = ANSWER_FORMATS[answer_format]
    problems: list[MathProblem] = []
    issues: list[RowIssue] = []
    for raw in rows:
        if raw.record is None:
            issues.append(RowIssue(origin, raw.row, raw.error or "unreadable"))
            continue
        try:
            text = problem_text(field_value(raw.record, problem_key), problem_key)
            if context_key and raw.record.get(context_key):
                text = f"{str(raw.record[context_key]).strip()}\n\n{text}"
            answer_field = field_value(raw.record, answer_key)
            answer = read_answer(answer_field)
        except FieldError as error:
            issues.append(RowIssue(origin, raw.row, str(error)))
            continue
        except AnswerError as error:
            issues.append(RowIssue(origin, raw.row, f"field {answer_key!r}: {error}"))
            continue
        extras = {name: raw.record[name] for name in keep_fields if name in raw.record}
        problems.append(MathProblem(source, text, answer, origin, raw.row, extras))
    return LoadedProblems(source, origin, problems, issues)
