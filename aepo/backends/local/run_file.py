"""Reading a YAML run file, with nothing heavier than PyYAML imported: ``aepo train`` reports
a missing, unreadable, empty or malformed file before it pays for importing torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RunFileError(ValueError):
    """A run file that cannot be read as YAML; the message names the file."""


def read_run_file(path: str | Path) -> dict[str, Any]:
    """The parsed mapping of a run file. An empty file is refused: it would train every
    default (the paper's 7B settings on the built-in task) without saying so."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise RunFileError(f"config file {path} is a directory")
    if not path.is_file():
        raise RunFileError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise RunFileError(f"cannot read config file {path}: {err}") from None
    except yaml.YAMLError as err:
        raise RunFileError(f"{path}: not valid YAML: {_one_line(err)}") from None
    if raw is None:
        raise RunFileError(
            f"{path} is empty; a run file needs at least 'aepo: {{algorithm: ...}}' "
            "(examples in configs/)"
        )
    if not isinstance(raw, dict):
        raise RunFileError(f"{path}: expected a mapping with 'aepo:' and 'trainer:' sections")
    return raw


def _one_line(err) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(err).split())
