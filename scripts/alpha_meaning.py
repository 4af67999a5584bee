#!/usr/bin/env python
"""What ``alpha_meaning`` changes, measured on the built-in task (the table in docs/alpha.md).

1. One config per meaning at 16, 32 and 64 prompts per step (target 0.25): does it hold
   the target whatever the batch size? ``paper`` runs the tiny preset (alpha 3);
   ``batch_share`` runs alpha 32, which the tiny preset used under that meaning.
2. The paper's constants (T 1.2 / 0.8, alpha 1, 60 / 30 samples, fixed gain, previous-step
   entropy, the auto budget's defaults) with the paper meaning, at target 0.2.

    python scripts/alpha_meaning.py            # all rows, 150 steps, seed 0
    python scripts/alpha_meaning.py --only paper/16 paper/64

Prints a markdown table and writes runs/alpha_meaning/summary.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PAPER_CONSTANTS = {
    "t_high": 1.2,
    "t_low": 0.8,
    "alpha": 1.0,
    "samples_up": 60,
    "samples_down": 30,
    "entropy_source": "previous_step",
    "controller": {"gain": "fixed"},
    "extra_rollout": {"budget": "auto", "oversample": 1.3, "max_fraction": 0.5},
}


def rows() -> list[tuple[str, float, dict, dict]]:
    out = []
    for meaning, alpha in (("paper", None), ("batch_share", 32.0)):
        for prompts in (16, 32, 64):
            aepo = {"alpha_meaning": meaning}
            if alpha is not None:
                aepo["alpha"] = alpha
            out.append((f"{meaning}/{prompts}", 0.25, aepo, {"prompts_per_step": prompts}))
    out.append(("paper constants", 0.2, {"alpha_meaning": "paper", **PAPER_CONSTANTS}, {}))
    return out


def main(argv: list[str] | None = None) -> int:
    from aepo.backends.local.presets import TINY_TRAINER, tiny_run_config
    from aepo.backends.local.settings import run_config_from_dict
    from aepo.backends.local.summary import summarize
    from aepo.backends.local.trainer import LocalTrainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=TINY_TRAINER["steps"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/alpha_meaning"))
    parser.add_argument("--only", nargs="+", help="run only these rows (names as in the table)")
    args = parser.parse_args(argv)

    results = []
    print("| run | H* | tracking error | H last half (mean ± std) | final reward | extra gen |")
    print("|---|---|---|---|---|---|")
    for name, target, aepo, trainer in rows():
        if args.only and name not in args.only:
            continue
        raw = tiny_run_config(
            "aepo",
            target,
            output_dir=str(args.output_dir / name.replace("/", "_").replace(" ", "_")),
            steps=args.steps,
            seed=args.seed,
            save_every=0,
            progress=False,
            torch_threads=args.threads,
            **trainer,
        )
        raw["aepo"].update(aepo, seed=args.seed)
        history = LocalTrainer(run_config_from_dict(raw, source=name)).fit()
        s = summarize(name, history, target)
        results.append({"name": name, "aepo": raw["aepo"], **s.as_dict()})
        print(
            f"| {name} | {target:g} | {100 * s.tracking_error:.1f}% | "
            f"{s.entropy_mean:.3f} ± {s.entropy_std:.3f} | "
            f"{s.final_reward:.3f} | {100 * s.extra_token_fraction:.1f}% |",
            flush=True,
        )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "summary.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
