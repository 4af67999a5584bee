"""What a resumed run may change: the comparison both engines make between the config a
checkpoint was trained with and the config that resumes it.

A checkpoint's controller, positive-rate tracker and optimiser state belong to the algorithm
that wrote them, so another ``aepo.algorithm`` is refused; any other change is allowed and
named, so that a resumed run never differs from its checkpoint silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIXED_KEYS = frozenset({"aepo.algorithm"})
"""Keys a run cannot change half-way."""

UNSET = "<unset>"


class ResumeRefused(ValueError):
    """The resuming config changes a key in :data:`FIXED_KEYS`; the caller names the file."""

    def __init__(self, key: str, saved: Any, current: Any):
        super().__init__(f"{key}={saved!r} in the checkpoint, {current!r} in the config")
        self.key, self.saved, self.current = key, saved, current


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"aepo": {"alpha": 1}}`` -> ``{"aepo.alpha": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def resume_changes(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    not_changes: frozenset[str] = frozenset(),
    kept_from_checkpoint: Mapping[str, str] | None = None,
) -> list[str]:
    """The changes from ``saved`` to ``current`` (nested dicts), one ``"key old -> new"``
    line each, sorted by key. Raises :class:`ResumeRefused` for a key the run cannot change.

    ``not_changes``: keys that say how a run is continued (more steps, another device), not
    what it trains. ``kept_from_checkpoint``: key (or section) -> why the config's value has
    no effect, added to the line."""
    old, new = flatten(saved), flatten(current)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, UNSET) != new.get(k, UNSET))
    for key in changed:
        if key in FIXED_KEYS:
            raise ResumeRefused(key, old.get(key, UNSET), new.get(key, UNSET))
    lines = []
    for key in changed:
        if key in not_changes:
            continue
        reason = next(
            (
                why
                for k, why in (kept_from_checkpoint or {}).items()
                if key == k or key.startswith(k + ".")
            ),
            None,
        )
        line = f"{key} {old.get(key, UNSET)!r} -> {new.get(key, UNSET)!r}"
        lines.append(f"{line} ({reason})" if reason else line)
    return lines
