"""``aepo demo``: on the built-in task, GRPO's entropy collapses and AEPO holds each target.

Warm start (cached), then GRPO and AEPO at each target (the paper's 0.25, 0.5, 0.75 and 1.0
by default, one config with only ``target_entropy`` changed); writes each run's
TensorBoard log and metrics.jsonl, ``entropy.png`` and ``summary.json``, and prints the
summary table with the demo's checks (GRPO's entropy collapses; AEPO tracks each target
within 5 %, with at most 5 % extra generated tokens and its reward within 0.02 of GRPO's).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from aepo.core.step import TRACKING_TOLERANCE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from aepo.backends.local import passk_demo
    from aepo.backends.local.presets import DEMO_TARGETS, TINY_TRAINER

    parser.add_argument(
        "--passk",
        action="store_true",
        help="the exploration payoff: pass@k to k = 1024 of the base, GRPO and AEPO at each "
        f"target on held-out prompts of the built-in {passk_demo.PASSK_TASK} task",
    )
    parser.add_argument(
        "--output-dir", type=Path, help="default runs/demo (runs/demo_passk with --passk)"
    )
    parser.add_argument(
        "--targets",
        type=float,
        nargs="+",
        help=f"entropy targets H* (default {list(DEMO_TARGETS)}; "
        f"{list(passk_demo.PASSK_TARGETS)} with --passk)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        help=f"RL steps per run (default {TINY_TRAINER['steps']}; "
        f"{passk_demo.PASSK_STEPS} with --passk)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, help="warm-start cache (default ~/.cache/aepo)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the tiny model gains nothing from more on a "
        "shared 2-core machine, and the README's table was measured with 1)",
    )
    parser.add_argument("--no-progress", action="store_true")
    passk = parser.add_argument_group("--passk")
    passk.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="RL and sampling seeds, medians reported (default: --seed)",
    )
    passk.add_argument("--eval-prompts", type=int, default=passk_demo.EVAL_PROMPTS)
    passk.add_argument(
        "--samples", type=int, default=passk_demo.EVAL_SAMPLES, help="n per held-out prompt"
    )
    passk.add_argument(
        "--jobs", type=int, default=2, help="runs trained and sampled at once (processes)"
    )
    passk.add_argument(
        "--compare",
        nargs="+",
        default=[],
        choices=passk_demo.COMPARABLE,
        help="target-driven baselines to run at every target beside AEPO (e.g. entrocraft)",
    )
    passk.add_argument(
        "--pool",
        nargs="+",
        type=Path,
        metavar="PASSK_JSON",
        help="train nothing: pool the runs of earlier passk.json files (other machines, other "
        "seeds) into one table of medians (default output runs/demo_passk_pooled)",
    )


def run_demo(
    output_dir: Path,
    targets: list[float],
    steps: int,
    seed: int = 0,
    cache_dir: Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    progress: bool = True,
    trainer_overrides: dict | None = None,
) -> list:
    from aepo.backends.local.presets import tiny_run_config
    from aepo.backends.local.settings import run_config_from_dict
    from aepo.backends.local.summary import summarize
    from aepo.backends.local.trainer import LocalTrainer
    from aepo.plot.curves import plot_run_dirs

    common = {
        "steps": steps,
        "seed": seed,
        "device": device,
        "torch_threads": threads,
        "progress": progress,
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "save_every": 0,
        **(trainer_overrides or {}),
    }
    runs = [("grpo", tiny_run_config("grpo", **common), None)]
    for t in targets:
        runs.append((f"aepo_H*={t:g}", tiny_run_config("aepo", t, **common), t))
    summaries, dirs = [], []
    for name, raw, target in runs:
        run_dir = output_dir / name.replace("*", "").replace("=", "_")
        raw["trainer"]["output_dir"] = str(run_dir)
        trainer = LocalTrainer(run_config_from_dict(raw, source=f"demo:{name}"))
        history = trainer.fit(desc=name)
        summaries.append(summarize(name, history, target))
        dirs.append(run_dir)
    plot_run_dirs(dirs, output_dir / "entropy.png", labels=[s.name for s in summaries])
    (output_dir / "summary.json").write_text(json.dumps([s.as_dict() for s in summaries], indent=2))
    return summaries


MAX_TRACKING_ERROR = TRACKING_TOLERANCE
MAX_EXTRA_TOKENS = 0.05
REWARD_TOLERANCE = 0.02
"""AEPO's last-quarter reward may fall this far below GRPO's: both are means of a few
thousand 0/1 rewards, whose seed-to-seed spread is about this size"""


def target_checks(summaries) -> list[tuple[bool, str]]:
    """The demo's checks (the constants above), evaluated on its runs."""
    grpo = summaries[0]
    checks = [
        (
            grpo.last_quarter_entropy < 0.5 * grpo.first_entropy,
            f"GRPO entropy collapses: last quarter {grpo.last_quarter_entropy:.3f} "
            f"< 50% of first step {grpo.first_entropy:.3f}",
        )
    ]
    for s in summaries[1:]:
        checks += [
            (
                s.tracking_error < MAX_TRACKING_ERROR,
                f"{s.name}: tracking error {100 * s.tracking_error:.1f}% "
                f"< {100 * MAX_TRACKING_ERROR:.0f}%",
            ),
            (
                s.final_reward >= grpo.final_reward - REWARD_TOLERANCE,
                f"{s.name}: reward {s.final_reward:.3f} >= GRPO's {grpo.final_reward:.3f} "
                f"- {REWARD_TOLERANCE}",
            ),
            (
                s.extra_token_fraction <= MAX_EXTRA_TOKENS,
                f"{s.name}: extra generated tokens {100 * s.extra_token_fraction:.1f}% "
                f"<= {100 * MAX_EXTRA_TOKENS:.0f}%",
            ),
        ]
    return checks


def run(args: argparse.Namespace) -> int:
    from aepo.backends.local.summary import format_table
    from aepo.tasks.builtin import DEFAULT_TASK, builtin_task

    if args.passk or args.pool:  # --pool: pooled pass@k results
        from aepo.backends.local.passk_demo import run as run_passk

        return run_passk(args)
    from aepo.backends.local.presets import DEMO_TARGETS, TINY_TRAINER

    args.output_dir = args.output_dir or Path("runs/demo")
    args.targets = args.targets or list(DEMO_TARGETS)
    args.steps = args.steps or TINY_TRAINER["steps"]
    started = time.perf_counter()
    ceiling = builtin_task(DEFAULT_TASK).entropy_ceiling()
    for t in args.targets:
        if t >= 0.8 * ceiling:
            print(
                f"warning: target {t:g} is near or above {ceiling:.3f}, the most entropy a fully "
                "accurate policy can have on this task; expect reward to be traded for entropy"
            )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    summaries = run_demo(
        args.output_dir,
        args.targets,
        args.steps,
        seed=args.seed,
        cache_dir=args.cache_dir,
        device=args.device,
        threads=args.threads,
        progress=not args.no_progress,
    )
    print()
    print(format_table(summaries))
    print(
        f"\nentropy ceiling of a fully accurate policy on {DEFAULT_TASK}: {ceiling:.3f} "
        "nats/token; tracking error, RMS dev / H* and step std are over the last half of steps"
    )
    for ok, text in target_checks(summaries):
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    print(f"\nfigure: {args.output_dir / 'entropy.png'}")
    print(f"TensorBoard: tensorboard --logdir {args.output_dir}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0
