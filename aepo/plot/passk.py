"""pass@k curves of several ``aepo eval`` runs side by side (``aepo plot --passk``).

One panel per benchmark plus the average, k on a log-2 axis, one curve per run.
"""

from __future__ import annotations

import math
from pathlib import Path

from aepo.eval.report import DISPLAY_NAMES, load_results

AVERAGE = "average"


def _label(path: Path, results: dict) -> str:
    folder = path if path.is_dir() else path.parent
    return f"{folder.name} (T={results['sampling']['temperature']})"


def _curve(results: dict, panel: str) -> tuple[list[int], list[float]]:
    values = (
        results["average"]["pass@k"] if panel == AVERAGE else results["benchmarks"][panel]["pass@k"]
    )
    ks = sorted(int(k) for k in values)
    return ks, [100 * values[str(k)] for k in ks]


def plot_passk(result_paths: list[Path], out_png: Path, labels: list[str] | None = None) -> Path:
    """Draw pass@k curves of the runs in ``result_paths`` (``results.json`` files or their
    folders) into ``out_png``; ``labels`` name the runs (default: folder name and temperature)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works on machines without a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    paths = [Path(p) for p in result_paths]
    if not paths:
        raise ValueError("no results to plot")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} labels for {len(paths)} result files")
    runs = [load_results(p) for p in paths]
    names = labels or [_label(p, r) for p, r in zip(paths, runs, strict=True)]

    benchmarks = list(dict.fromkeys(name for run in runs for name in run["benchmarks"]))
    panels = benchmarks + ([AVERAGE] if len(benchmarks) > 1 else [])
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for axis, panel in zip(axes.flat, panels, strict=False):  # spare grid cells stay empty
        for run, name in zip(runs, names, strict=True):
            if panel != AVERAGE and panel not in run["benchmarks"]:
                continue
            ks, values = _curve(run, panel)
            axis.plot(ks, values, marker="o", markersize=3, label=name)
        axis.set_xscale("log", base=2)
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_ylim(bottom=max(0.0, axis.get_ylim()[0]))
        axis.set_title("Average" if panel == AVERAGE else DISPLAY_NAMES.get(panel, panel))
        axis.set_xlabel("k")
        axis.set_ylabel("pass@k (%)")
        axis.grid(True, alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    legend: dict[str, object] = {}
    for axis in axes.flat:  # a run missing from the first panel still gets its entry
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    figure.legend(
        list(legend.values()),
        list(legend),
        loc="lower center",
        ncol=min(4, len(runs)),
        frameon=False,
    )
    figure.tight_layout(rect=(0, 0.06 + 0.02 * math.ceil(len(runs) / 4), 1, 1))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=120)
    plt.close(figure)
    return out_png


def _log2_axis(axis) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_xscale("log", base=2)
    axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_xlabel("k")
    axis.grid(True, alpha=0.3)


def plot_passk_curves(
    curves: dict[str, dict[str, float]], out_png: Path, title: str = "", reference: str = ""
) -> Path:
    """pass@k of each named run (``{"1": value, "2": ...}``) and, when ``reference`` names one
    of them, every run's difference from it (the crossover is a few points at large k, too
    small to see on the first panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("no pass@k curves to plot")
    panels = 2 if reference in curves else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2), squeeze=False)
    for name, curve in curves.items():
        ks = sorted(int(k) for k in curve)
        style = {"color": "black", "linestyle": "--"} if name == reference else {}
        axes[0, 0].plot(
            ks, [100 * curve[str(k)] for k in ks], marker="o", markersize=3, label=name, **style
        )
        if panels == 2:
            base = curves[reference]
            axes[0, 1].plot(
                ks,
                [100 * (curve[str(k)] - base[str(k)]) for k in ks],
                marker="o",
                markersize=3,
                label=name,
                **style,
            )
    axes[0, 0].set_ylabel("pass@k (%)")
    axes[0, 0].set_title(title or "pass@k")
    if panels == 2:
        axes[0, 1].set_ylabel(f"pass@k - {reference} (points)")
        axes[0, 1].set_title(f"difference from {reference}")
    for axis in axes.flat:
        _log2_axis(axis)
    axes[0, 0].legend(fontsize=8)
    figure.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=120)
    plt.close(figure)
    return out_png


def plot_passk_vs_target(rows: list[dict], out_png: Path, title: str = "") -> Path:
    """Final pass@1 and pass@n (the largest k) of the target-driven runs against their target
    entropy; runs without a target (the base, GRPO) are horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targeted = sorted((r for r in rows if r.get("target") is not None), key=lambda r: r["target"])
    if not targeted:
        raise ValueError("no run with a target entropy to plot")
    top = str(max(int(k) for k in targeted[0]["pass@k"]))
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
    for axis, k in zip(axes.flat, ("1", top), strict=True):
        for algorithm in dict.fromkeys(r.get("algorithm", "aepo") for r in targeted):
            own = [r for r in targeted if r.get("algorithm", "aepo") == algorithm]
            axis.plot(
                [r["target"] for r in own],
                [100 * r["pass@k"][k] for r in own],
                marker="o",
                label="AEPO" if algorithm == "aepo" else algorithm,
            )
        for r, style in zip(
            (r for r in rows if r.get("target") is None), ("--", ":", "-."), strict=False
        ):
            axis.axhline(100 * r["pass@k"][k], color="gray", linestyle=style, label=r["name"])
        axis.set_xlabel("target entropy H* (nats/token)")
        axis.set_ylabel(f"pass@{k} (%)")
        axis.set_title(f"pass@{k}")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=120)
    plt.close(figure)
    return out_png
