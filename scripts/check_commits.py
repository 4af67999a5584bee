"""Check the subjects of the commits about to land: at most 72 characters, no "WIP".

    python scripts/check_commits.py [BASE]      # commits in BASE..HEAD; BASE defaults to origin/main

Run before a merge or a stop (`make check-commits BASE=...`). History that has landed is not
rewritten, so only the range about to land is checked; each offending commit is one line.
"""

from __future__ import annotations

import re
import subprocess
import sys

MAX_SUBJECT = 72
WIP = re.compile(r"\bWIP\b", re.IGNORECASE)


def problems(subject: str) -> list[str]:
    found = []
    if len(subject) > MAX_SUBJECT:
        found.append(f"subject is {len(subject)} characters (at most {MAX_SUBJECT})")
    if WIP.search(subject):
        found.append('subject says "WIP"')
    return found


def main(argv: list[str]) -> int:
    base = argv[0] if argv else "origin/main"
    try:
        log = subprocess.run(
            ["git", "log", "--format=%h%x09%s", f"{base}..HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except subprocess.CalledProcessError as error:
        print(f"check_commits: git log {base}..HEAD failed: {error.stderr.strip()}")
        return 2
    bad = 0
    for line in log.splitlines():
        sha, subject = line.split("\t", 1)
        for problem in problems(subject):
            print(f"{sha}: {problem}: {subject}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
