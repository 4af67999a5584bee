"""The ``aepo`` command. Each sub-command lives in its own module, imported only when used,
so ``aepo data ...`` never pays for torch models and ``aepo --help`` is instant.

A command module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "aepo.backends.local.demo",
        "GRPO vs AEPO at several entropy targets on the built-in task (CPU, no download)",
    ),
    "train": ("aepo.backends.local.train_command", "train with the single-process engine"),
    "eval": ("aepo.eval.command", "sample n answers per problem and report pass@k"),
    "data": ("aepo.data.command", "prepare datasets in verl's RL parquet schema"),
    "plot": ("aepo.plot.command", "entropy/reward curves from runs, or pass@k curves"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
    return f"usage: aepo <command> [options]\n\ncommands:\n{rows}\n\n'aepo <command> -h' for a command's options."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from aepo import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"aepo: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"aepo {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
