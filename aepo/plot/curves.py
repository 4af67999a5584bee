"""Entropy and reward per step for several runs, read from their TensorBoard logs.

Both engines log the same scalar names, so one figure compares a local
demo run with a verl run. Entropy is ``actor/entropy`` (pi_old at T = 1); a run that logged
``aepo/target_entropy`` gets its target as a dashed line in the run's colour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ENTROPY = "actor/entropy"
TARGET = "aepo/target_entropy"
REWARD = "reward/mean"


def _event_dirs(run_dir: Path) -> list[Path]:
    return sorted({p.parent for p in run_dir.rglob("events.out.tfevents.*")})


def load_scalars(run_dir: str | Path, tags=(ENTROPY, TARGET, REWARD)) -> dict[str, tuple]:
    """``{tag: (steps, values)}`` from every TensorBoard event file under ``run_dir``.

    A step logged twice (a run resumed from an earlier checkpoint) keeps its last value.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    dirs = _event_dirs(run_dir)
    if not dirs:
        raise FileNotFoundError(f"no TensorBoard event files under {run_dir}")
    merged: dict[str, dict[int, float]] = {}
    for d in dirs:
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
        acc.Reload()
        available = set(acc.Tags().get("scalars", []))
        for tag in tags:
            if tag in available:
                # Events come in wall-time order, so later writes win for a repeated step.
                for event in acc.Scalars(tag):
                    merged.setdefault(tag, {})[event.step] = event.value
    return {
        tag: (np.array(sorted(v)), np.array([v[s] for s in sorted(v)])) for tag, v in merged.items()
    }


def plot_runs(
    runs: dict[str, dict[str, tuple]], out_png: str | Path, title: str | None = None
) -> Path:
    """Entropy (top, dashed targets) and reward (bottom) per step; one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_h, ax_r) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, height_ratios=[2, 1])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # Past the colour cycle (10 colours), a new line style keeps every run distinguishable.
    styles = ["-", "-.", ":"]
    for i, (label, scalars) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        style = styles[(i // len(colours)) % len(styles)]
        if ENTROPY in scalars:
            steps, values = scalars[ENTROPY]
            ax_h.plot(steps, values, color=colour, ls=style, label=label, lw=1.3)
        if TARGET in scalars:
            # A line over the steps, not a constant: aepo.target_schedule moves the target.
            steps, targets = scalars[TARGET]
            ax_h.plot(steps, targets, color=colour, ls="--", lw=1, alpha=0.8)
        if REWARD in scalars:
            steps, values = scalars[REWARD]
            ax_r.plot(steps, values, color=colour, ls=style, lw=1.1)
    ax_h.set_ylabel("entropy of pi_old at T=1 (nats/token)")
    ax_h.set_ylim(bottom=0)
    ax_h.legend(fontsize=8)
    ax_h.set_title(title or "policy entropy (dashed: targets)")
    ax_r.set_ylabel("mean reward")
    ax_r.set_xlabel("step")
    ax_r.set_ylim(-0.02, 1.02)
    for ax in (ax_h, ax_r):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Each run's folder name, with as many parent folders as it takes to tell runs apart
    (the benchmark writes ``<method>/seed0``: the labels become ``clip_cov/seed0``, ...)."""
    parts = [d.resolve().parts for d in run_dirs]
    depth = [1] * len(run_dirs)
    while True:
        labels = ["/".join(p[-k:]) for p, k in zip(parts, depth, strict=True)]
        clashes = {x for x in labels if labels.count(x) > 1}
        grow = [i for i, x in enumerate(labels) if x in clashes and depth[i] < len(parts[i])]
        if not grow:
            return labels
        for i in grow:
            depth[i] += 1


def plot_run_dirs(
    run_dirs: list[str | Path], out_png: str | Path, labels: list[str] | None = None
) -> Path:
    run_dirs = [Path(d) for d in run_dirs]
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} run directories")
    names = labels or run_labels(run_dirs)
    if len(set(names)) != len(names):
        raise ValueError(f"two runs share a label: {names}")
    return plot_runs(
        {name: load_scalars(d) for name, d in zip(names, run_dirs, strict=True)}, out_png
    )
