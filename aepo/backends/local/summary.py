"""The demo's and benchmark's summary of a run, from its per-step metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RunSummary:
    name: str
    steps: int
    target: float | None
    first_entropy: float
    final_reward: float
    """mean reward/mean over the last quarter of steps (one step of 256 samples, or even ten,
    is too noisy to compare runs within 0.05)"""
    entropy_mean: float
    """actor/entropy over the last half of training"""
    entropy_std: float
    tracking_error: float | None
    """|mean (H - H*)| / mean H* over the last half, H* each step's (``aepo/target_entropy``,
    so a schedule is followed step by step); None without a target"""
    rms_deviation: float | None
    """sqrt(mean (H - H*)^2) / mean H* over the last half (bias and wobble together); None
    without a target"""
    step_std: float
    """std of the step-to-step change of H over the last half"""
    last_quarter_entropy: float
    extra_token_fraction: float
    """extra generated tokens / GRPO-group tokens, summed over the run"""
    step_time_s: float
    """median wall time per step"""
    tokens_per_s: float
    """generated tokens / step wall time, median over steps"""
    guard_steps: int = 0
    """steps on which the reward guard held AEPO's downward push (``aepo/guard`` 1)"""
    min_reward: float = float("nan")
    """the lowest step reward/mean: a run whose policy died shows it here, whatever its end"""

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(name: str, history: list[dict], target: float | None = None) -> RunSummary:
    if not history:
        raise ValueError(f"run {name!r} has no logged steps")
    entropy = np.array([h["actor/entropy"] for h in history])
    reward = np.array([h["reward/mean"] for h in history])
    extra = np.array([h.get("aepo/extra_gen_tokens", 0.0) for h in history])
    generated = np.array([h.get("perf/gen_tokens", np.nan) for h in history])
    steps = len(history)
    last_half = entropy[steps // 2 :]
    quarter = max(1, steps // 4)
    mean_h = float(last_half.mean())
    group_tokens = np.nansum(generated - extra)
    tracking = rms = None
    if target is not None:
        # each step's own target: a target_schedule moves it; a constant one gives H* itself
        targets = np.array([h.get("aepo/target_entropy", target) for h in history])[steps // 2 :]
        scale = float(targets.mean())
        tracking = abs(float((last_half - targets).mean())) / scale
        rms = float(np.sqrt(np.mean((last_half - targets) ** 2))) / scale
    return RunSummary(
        name=name,
        steps=steps,
        target=target,
        first_entropy=float(entropy[0]),
        final_reward=float(reward[-quarter:].mean()),
        entropy_mean=mean_h,
        entropy_std=float(last_half.std()),
        tracking_error=tracking,
        rms_deviation=rms,
        step_std=float(np.diff(last_half).std()) if len(last_half) > 1 else 0.0,
        last_quarter_entropy=float(entropy[-quarter:].mean()),
        extra_token_fraction=float(extra.sum() / group_tokens) if group_tokens > 0 else 0.0,
        step_time_s=float(np.median([h.get("perf/step_time_s", np.nan) for h in history])),
        tokens_per_s=float(np.median([h.get("perf/tokens_per_s", np.nan) for h in history])),
        guard_steps=int(sum(h.get("aepo/guard", 0.0) > 0 for h in history)),
        min_reward=float(reward.min()),
    )


def format_table(summaries: list[RunSummary], timing: bool = False) -> str:
    """A markdown table (readable in a terminal, pastes into the README)."""
    head = [
        "run",
        "target H*",
        "final reward",
        "H last half (mean ± std)",
        "tracking error",
        "RMS dev / H*",
        "step std",
        "H last quarter / first",
        "extra gen tokens",
    ]
    if timing:
        head += ["s / step", "tokens / s"]
    rows = []
    for s in summaries:
        row = [
            s.name,
            "-" if s.target is None else f"{s.target:.3g}",
            f"{s.final_reward:.3f}",
            f"{s.entropy_mean:.3f} ± {s.entropy_std:.3f}",
            "-" if s.tracking_error is None else f"{100 * s.tracking_error:.1f}%",
            "-" if s.rms_deviation is None else f"{s.rms_deviation:.3f}",
            f"{s.step_std:.3f}",
            f"{100 * s.last_quarter_entropy / max(s.first_entropy, 1e-12):.0f}%",
            f"{100 * s.extra_token_fraction:.1f}%",
        ]
        if timing:
            row += [f"{s.step_time_s:.3f}", f"{s.tokens_per_s:.0f}"]
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *map(line, rows)])
