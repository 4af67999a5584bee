"""The package's shape, kept by tests: the verl trainer stays small enough to read, and
verl's source is cited by file and line in one module only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aepo"
TRAINER = PACKAGE / "backends" / "verl" / "trainer.py"
MAX_TRAINER_LINES = 450
MAX_METHOD_LINES = 40
VERL_CITATION = re.compile(r"\b[\w/]+\.py:\d+")
"""``ray_trainer.py:1052``: a line number that goes stale with the next verl release"""


def test_the_verl_trainer_stays_short_with_short_methods():
    """Each of verl's hooks AEPO overrides reads on one screen; what the hooks share lives
    in the step state, the passes in their own module."""
    source = TRAINER.read_text()
    assert len(source.splitlines()) < MAX_TRAINER_LINES
    long = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_METHOD_LINES
    }
    assert not long, long


def test_verl_is_cited_by_line_only_in_its_internals_module():
    cited = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "_verl_internals.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if VERL_CITATION.search(line)
    ]
    assert not cited, "\n".join(cited)


def test_the_citation_pattern_finds_a_file_and_line():
    assert VERL_CITATION.search("(ray_trainer.py:1052-1083: resume_mode)")
    assert VERL_CITATION.search("``workers/config/model.py:185``")
    assert not VERL_CITATION.search("see aepo/backends/verl/trainer.py and docs/e2e.md")
