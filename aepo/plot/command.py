"""``aepo plot``: entropy/reward curves from run directories, or pass@k curves."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="*", type=Path, help="run directories (TensorBoard logs)")
    parser.add_argument(
        "--passk", nargs="+", type=Path, metavar="RESULTS.json", help="plot pass@k curves instead"
    )
    parser.add_argument("--labels", nargs="+", help="legend labels, one per input")
    parser.add_argument(
        "-o", "--out", type=Path, help="output PNG (default entropy.png / passk.png)"
    )


def run(args: argparse.Namespace) -> int:
    if args.passk and args.run_dirs:
        print("aepo plot: give run directories or --passk files, not both", file=sys.stderr)
        return 2
    if not args.passk and not args.run_dirs:
        print(
            "aepo plot: give at least one run directory (or --passk RESULTS.json ...)",
            file=sys.stderr,
        )
        return 2
    try:
        if args.passk:
            from aepo.plot.passk import plot_passk  # the evaluation's figure; imported on demand

            out = plot_passk(list(args.passk), args.out or Path("passk.png"), labels=args.labels)
        else:
            from aepo.plot.curves import plot_run_dirs

            out = plot_run_dirs(args.run_dirs, args.out or Path("entropy.png"), labels=args.labels)
    except (FileNotFoundError, ValueError) as err:
        print(f"aepo plot: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0
