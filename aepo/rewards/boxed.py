"""Find the final answer a response puts in ``\\boxed{...}``.

verl ships ``last_boxed_only_string``, but importing it pulls in all of verl (seconds) and it
prefers any ``\\boxed `` (with a space) anywhere in the text over a later ``\\boxed{...}``, and
counts escaped braces ``\\{ \\}`` as grouping. This scanner takes the last box of either form
and treats ``\\{`` and ``\\}`` as literal characters, as LaTeX does.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def _last_box_command(text: str) -> tuple[int, int] | None:
    """(start, end) of the last ``\\boxed``/``\\fbox`` that is a whole command name."""
    best: tuple[int, int] | None = None
    for command in _BOX_COMMANDS:
        end_limit = len(text)
        while True:
            start = text.rfind(command, 0, end_limit)
            if start < 0:
                break
            end = start + len(command)
            # "\boxedfoo" is another macro, not a box.
            if end < len(text) and text[end].isalpha():
                end_limit = start
                continue
            if best is None or start > best[0]:
                best = (start, end)
            break
    return best


_GROUPING = re.compile(r"[\\{}]")


def _braced_group(text: str, open_index: int) -> str | None:
    """Content of the brace group opening at ``open_index``, or None if it never closes."""
    depth = 0
    i = open_index
    while True:
        found = _GROUPING.search(text, i)  # jumps over plain text (responses can be megabytes)
        if found is None:
            return None
        i = found.start()
        char = text[i]
        if char == "\\":
            i += 2  # an escaped character (\{, \}, \\) never opens or closes a group
            continue
        if char == "{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : i]
        i += 1


def last_boxed_content(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed 5``) in ``text``.

    Returns None when there is no box, or when the last box never closes (a truncated
    response): an earlier box is not the final answer, so it is not used instead.
    """
    found = _last_box_command(text)
    if found is None:
        return None
    _, after = found
    i = after
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        content = _braced_group(text, i)
        return None if content is None else content.strip()
    if i == after:
        return None  # "\boxed" followed by neither a brace nor a space
    # "\boxed 5": LaTeX boxes the single token after the space.
    end = i
    while end < len(text) and not text[end].isspace() and text[end] != "$":
        end += 1
    content = text[i:end].rstrip(".,;")
    return content or None


def without_redundant_braces(latex: str) -> str:
    """``latex`` without the braces that group nothing: a group whose only content is another
    group (``{{x}}`` is ``{x}``) and a group around the whole text (``{x}`` is ``x``). Braces
    only group in LaTeX, so neither changes what an answer means; math-verify's parser,
    though, spends time exponential in how deeply braces nest (18 levels took 138 CPU-s).
    Escaped ``\\{`` and ``\\}`` are literal characters and stay."""
    while True:
        closing: dict[int, int] = {}
        opened: list[int] = []
        i = 0
        while i < len(latex):
            char = latex[i]
            if char == "\\":
                i += 2
                continue
            if char == "{":
                opened.append(i)
            elif char == "}" and opened:
                closing[opened.pop()] = i
            i += 1
        dropped = {
            index
            for start, end in closing.items()
            if closing.get(start + 1) == end - 1
            for index in (start, end)
        }
        text = "".join(char for i, char in enumerate(latex) if i not in dropped).strip()
        if text.startswith("{") and _braced_group(text, 0) == text[1:-1]:
            text = text[1:-1].strip()
        if text == latex:
            return text
        latex = text
