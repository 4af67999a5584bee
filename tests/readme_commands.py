"""The commands the README shows a user, read from README.md itself so that a test of them
breaks when the README changes them."""

from __future__ import annotations

import contextlib
import os
import shlex
from pathlib import Path

from tests.conftest import PROJECT_ROOT


def readme_commands(section: str, program: str) -> list[list[str]]:
    """The lines of the ``bash`` blocks under the README heading ``section`` that start with
    ``program`` (e.g. ``aepo data prepare``), split as the shell would, comments dropped."""
    lines = (PROJECT_ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## ") and section in line)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    commands, in_block = [], False
    for line in lines[start:end]:
        if line.startswith("```"):
            in_block = line.strip() == "```bash"
        elif in_block and line.startswith(program):
            commands.append(shlex.split(line, comments=True))
    return commands


@contextlib.contextmanager
def in_a_user_folder(folder: Path):
    """Run in ``folder`` as if it were a clone: its ``data`` is the repository's."""
    (folder / "data").symlink_to(PROJECT_ROOT / "data")
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(previous)
