#!/usr/bin/env python
"""AEPO side by side with TRL 1.16's GRPOTrainer (plain, and with its adaptive entropy
coefficient) on the same model, prompts, reward and batch shape.

    make bench-trl     # .venv-bench: the main venv plus the `bench` extra (TRL 1.16.0)
    .venv-bench/bin/python scripts/bench_vs_trl.py --seeds 0 1 --targets 0.75 1.0 --threads 1

TRL is never a dependency of the package, and must not be importable where verl trains:
verl 0.9.1's FSDP worker then imports a class TRL 1.16 removed (scripts/install_bench_env.sh).

Rows: TRL GRPO, TRL adaptive entropy (Skywork-OR1's rule, ``use_adaptive_entropy`` at the
same target), our AEPO in both ``entropy_source`` modes and our GRPO. The model directory, the
task and the batch shape are the local engine's (``LocalTrainer`` with the tiny presets), so
the bench follows the built-in task when it changes. Runs are interleaved (every method once
per seed, the order rotated per seed), entropy is measured the same way for every method
(token-mean entropy of pi_old at T = 1 over the step's own GRPO group, before its update) and
the table quotes medians over seeds and ratios to TRL adaptive entropy measured in the same
run. Writes TensorBoard scalars (``actor/entropy``, ``reward/mean``, ``aepo/target_entropy``)
per run under ``--output-dir`` and the table's numbers to ``bench_vs_trl.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TRL_VERSION = "1.16.0"
TRL_COEF_DELTA = 0.002
"""TRL adaptive entropy's step per optimizer step: the tightest of 0.005 (TRL's default, whose
coefficient wound up and let entropy run away), 0.002, 0.001 and 0.0005 at H* = 0.25 on the
built-in task (3 seeds; docs/benchmarks.md), so that the reference is TRL at its best here"""
REFERENCE = "trl adaptive"
"""the row every ratio is taken against"""
OURS = ("aepo current_batch", "aepo previous_step", "grpo (ours)")
THEIRS = ("trl grpo", REFERENCE)
METHODS = THEIRS + OURS
TARGET_FREE = ("trl grpo", "grpo (ours)")
"""rows whose training ignores the target (run once per seed, scored against every target)"""


# ---- the pure part: settings mapping and metrics (tests/scripts/test_bench_vs_trl.py) ------------


def trl_config_kwargs(
    trainer: Any,
    aepo: Any,
    *,
    steps: int,
    target: float | None,
    output_dir: str,
    coef_delta: float | None = None,
) -> dict[str, Any]:
    """``GRPOConfig`` keyword arguments equal to the local engine's settings.

    ``trainer`` is a ``TrainerSettings``, ``aepo`` an ``AEPOConfig``; ``target`` None is plain
    GRPO, a float turns on TRL's adaptive entropy coefficient at that target (``coef_delta``:
    its step per optimizer step, TRL's default 0.005 when None). One of our steps
    (``prompts_per_step`` x n responses, ``mini_batches`` optimizer steps over contiguous
    slices) is one TRL generation (``steps_per_generation`` optimizer steps of
    ``per_device_train_batch_size`` rows, no gradient accumulation).
    """
    rows = trainer.prompts_per_step * trainer.samples_per_prompt
    if rows % trainer.mini_batches:
        raise ValueError(
            f"TRL needs equal mini-batches: prompts_per_step x samples_per_prompt = {rows} "
            f"is not a multiple of mini_batches = {trainer.mini_batches}"
        )
    if trainer.loss_agg != "token-mean":
        raise ValueError(f"only token-mean has a TRL twin (bnpo), got loss_agg={trainer.loss_agg}")
    if trainer.ppo_epochs != 1:
        raise ValueError("TRL's num_iterations is compared at 1 epoch only")
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "seed": trainer.seed,
        "use_cpu": True,
        "bf16": False,  # TRL defaults to bf16; our runs are float32
        "fp16": False,
        "learning_rate": trainer.lr,
        "lr_scheduler_type": "constant",  # ours: AdamW at a constant lr
        "warmup_steps": 0,
        "weight_decay": trainer.weight_decay,
        "max_grad_norm": trainer.grad_clip,
        "num_generations": trainer.samples_per_prompt,
        "per_device_train_batch_size": rows // trainer.mini_batches,
        "gradient_accumulation_steps": 1,
        "steps_per_generation": trainer.mini_batches,
        "num_iterations": trainer.ppo_epochs,
        "max_steps": steps * trainer.mini_batches,
        "max_completion_length": trainer.max_new_tokens,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "loss_type": "bnpo",  # = our token-mean over each mini-batch
        "epsilon": aepo.clip_ratio,
        "epsilon_high": aepo.clip_ratio,
        "delta": 3.0,  # = verl's (and our) dual clip c = 3 for negative advantages
        "beta": 0.0,  # no KL term in either
        "scale_rewards": "group",  # GRPO's (r - mean) / std within the group, as ours
        "shuffle_dataset": False,  # the dataset is already in our step order
        "remove_unused_columns": False,  # the reward needs the prompt_index column
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",  # the bench logs its own scalars
        "disable_tqdm": True,  # one progress bar per run, ours
        "dataloader_num_workers": 0,
    }
    if target is not None:
        # trl/trainer/grpo_trainer.py (1.16.0) lines 3206-3238: the bonus -coef * H (token
        # mean of pi_theta's entropy over the micro-batch) is applied only while the entropy
        # measured at the previous optimizer step is <= entropy_target; after every optimizer
        # step coef += entropy_coef_delta if that window's entropy <= target, else
        # coef -= delta, clipped to [entropy_coef_min, entropy_coef_max] (0, 1), from
        # entropy_coef (0) at the start.
        kwargs.update(use_adaptive_entropy=True, entropy_target=target)
        if coef_delta is not None:
            kwargs["entropy_coef_delta"] = coef_delta
    return kwargs


def trl_dataset_rows(prompt_source: Any, steps: int, prompts_per_step: int) -> list[Any]:
    """The prompts our engine sees at steps 1..``steps``, in order: it takes
    ``prompts_per_step`` from position ``(step - 1) * prompts_per_step`` each step."""
    rows = []
    for step in range(steps):
        rows.extend(prompt_source.take(step * prompts_per_step, prompts_per_step))
    return rows


@dataclass(frozen=True)
class RunMetrics:
    method: str
    target: float
    seed: int
    tracking_error: float
    """|mean H - H*| / H* over the tail"""
    rms_deviation: float
    """sqrt(mean (H - H*)^2) / H* over the tail: step-to-step tightness"""
    reward: float
    """mean reward of the GRPO samples over the tail"""
    extra_gen_fraction: float
    """tokens generated beyond the GRPO groups / GRPO tokens, whole run"""
    cpu_s_per_step: float
    wall_s_per_step: float


def run_metrics(
    method: str,
    *,
    target: float,
    seed: int,
    entropies: list[float],
    rewards: list[float],
    grpo_tokens: float,
    extra_tokens: float,
    cpu_seconds: float,
    wall_seconds: float,
    tail: float = 0.5,
) -> RunMetrics:
    """Tracking metrics over the last ``tail`` of the steps (the first part is the approach
    to the target, not holding it)."""
    if not entropies or len(entropies) != len(rewards):
        raise ValueError(
            f"{method}: need one entropy and one reward per step, got "
            f"{len(entropies)} and {len(rewards)}"
        )
    if target <= 0:
        raise ValueError(f"target must be > 0, got {target}")
    start = min(len(entropies) - 1, int(len(entropies) * (1 - tail)))
    h, r = entropies[start:], rewards[start:]
    mean_h = statistics.fmean(h)
    steps = len(entropies)
    return RunMetrics(
        method=method,
        target=target,
        seed=seed,
        tracking_error=abs(mean_h - target) / target,
        rms_deviation=math.sqrt(statistics.fmean((x - target) ** 2 for x in h)) / target,
        reward=statistics.fmean(r),
        extra_gen_fraction=extra_tokens / max(grpo_tokens, 1.0),
        cpu_s_per_step=cpu_seconds / steps,
        wall_s_per_step=wall_seconds / steps,
    )


NUMBERS = (
    "tracking_error",
    "rms_deviation",
    "reward",
    "extra_gen_fraction",
    "cpu_s_per_step",
    "wall_s_per_step",
)


def median_over_seeds(runs: list[RunMetrics]) -> dict[tuple[str, float], dict[str, float]]:
    """(method, target) -> median of each number over seeds (and the seed count)."""
    groups: dict[tuple[str, float], list[RunMetrics]] = {}
    for run in runs:
        groups.setdefault((run.method, run.target), []).append(run)
    return {
        key: {
            **{k: statistics.median(getattr(r, k) for r in group) for k in NUMBERS},
            "seeds": len(group),
        }
        for key, group in groups.items()
    }


def _ratio(value: float, reference: float) -> str:
    if reference == 0:  # extra tokens: TRL generates none, so quote ours as an absolute share
        return "-" if value == 0 else f"+{value:.1%}"
    return f"{value / reference:.2f}"


def format_tables(medians: dict[tuple[str, float], dict[str, float]]) -> str:
    """Per target: absolute medians, then each number as a ratio to TRL adaptive entropy."""
    out = []
    for target in sorted({t for _, t in medians}):
        rows = [(m, medians[(m, target)]) for m in METHODS if (m, target) in medians]
        out.append(f"\nH* = {target:g} (medians over seeds)\n")
        out.append(
            "| method | tracking err | RMS dev / H* | reward | extra gen tokens | CPU s/step "
            "| wall s/step |"
        )
        out.append("|---|---|---|---|---|---|---|")
        for method, m in rows:
            out.append(
                f"| {method} | {m['tracking_error']:.1%} | {m['rms_deviation']:.3f} "
                f"| {m['reward']:.3f} | {m['extra_gen_fraction']:.1%} "
                f"| {m['cpu_s_per_step']:.2f} | {m['wall_s_per_step']:.2f} |"
            )
        ref = medians.get((REFERENCE, target))
        if ref is None:
            continue
        out.append(f"\nratios to {REFERENCE} (< 1: less than TRL; reward > 1: more)\n")
        out.append("| method | tracking err | RMS dev | reward | extra gen tokens | CPU s/step |")
        out.append("|---|---|---|---|---|---|")
        for method, m in rows:
            if method == REFERENCE:
                continue
            cells = " | ".join(
                _ratio(m[k], ref[k])
                for k in (
                    "tracking_error",
                    "rms_deviation",
                    "reward",
                    "extra_gen_fraction",
                    "cpu_s_per_step",
                )
            )
            out.append(f"| {method} | {cells} |")
    return "\n".join(out)


def run_order(methods: tuple[str, ...], seed_index: int) -> list[str]:
    """Every method once per seed, rotated so no method always runs first (or last) while
    the machine's load drifts."""
    k = seed_index % len(methods)
    return list(methods[k:] + methods[:k])


# ---- running ----------------------------------------------------------------------------


@dataclass
class StepLog:
    entropies: list[float]
    rewards: list[float]
    grpo_tokens: float = 0.0
    extra_tokens: float = 0.0
    measure_cpu: float = 0.0
    """CPU seconds our entropy measurement of a TRL run took (subtracted: TRL does not pay
    for it)"""


def local_config(method: str, target: float, seed: int, args, output_dir: Path):
    from aepo.backends.local.presets import tiny_run_config
    from aepo.backends.local.settings import run_config_from_dict

    algorithm = "grpo" if method in ("grpo (ours)", "trl grpo") else "aepo"
    raw = tiny_run_config(
        algorithm,
        target,
        output_dir=str(output_dir),
        steps=args.steps,
        seed=seed,
        save_every=0,
        device="cpu",
        torch_threads=args.threads,
        progress=True,
        cache_dir=None if args.cache_dir is None else str(args.cache_dir),
    )
    if method == "aepo previous_step":
        raw["aepo"]["entropy_source"] = "previous_step"
    elif method == "aepo current_batch":
        raw["aepo"]["entropy_source"] = "current_batch"
    return run_config_from_dict(raw, source=method)


def run_ours(config, desc: str) -> tuple[StepLog, float, float]:
    from aepo.backends.local.trainer import LocalTrainer

    trainer = LocalTrainer(config)
    cpu, wall = time.process_time(), time.perf_counter()
    history = trainer.fit(desc=desc)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    log = StepLog([h["actor/entropy"] for h in history], [h["reward/mean"] for h in history])
    for h in history:
        extra = h.get("aepo/extra_gen_tokens", 0.0)
        log.extra_tokens += extra
        log.grpo_tokens += h["perf/gen_tokens"] - extra
    return log, cpu, wall


def run_trl(
    config, target: float | None, desc: str, coef_delta: float | None = None
) -> tuple[StepLog, float, float]:
    """TRL's GRPOTrainer on our engine's model directory, prompt stream and reward."""
    import torch
    from datasets import Dataset
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from aepo.backends.local.metrics_log import MetricsLogger
    from aepo.backends.local.rollout import Rollout, score
    from aepo.backends.local.trainer import LocalTrainer
    from aepo.core import masked_mean

    s = config.trainer
    # The engine's own choice of model directory and prompt source, so that this follows
    # the built-in task (and a `trainer.model` / `trainer.data` setting) automatically.
    engine = LocalTrainer(config)
    model_dir, prompt_source = engine._model_source(), engine.prompts
    del engine
    rows = trl_dataset_rows(prompt_source, s.steps, s.prompts_per_step)
    dataset = Dataset.from_dict(
        {"prompt": [p.text for p in rows], "prompt_index": list(range(len(rows)))}
    )
    log = StepLog([], [])

    def reward(prompts, completions, prompt_index, **_):  # TRL's reward-function protocol
        values = [
            float(prompt_source.reward(text, rows[i].ground_truth))
            for text, i in zip(completions, prompt_index, strict=True)
        ]
        log.rewards.append(statistics.fmean(values))
        return values

    output_dir = Path(s.output_dir)
    logger = MetricsLogger(output_dir)
    bar = tqdm(total=s.steps, desc=desc, dynamic_ncols=True, disable=not s.progress)

    class MeasuredGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            started = time.process_time()
            mask = out["completion_mask"].long()
            rollout = Rollout(out["prompt_ids"], out["prompt_mask"], out["completion_ids"], mask)
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad():
                _, entropy = score(self.model, rollout, chunk_rows=s.entropy_chunk_rows)
            self.model.train(was_training)
            log.entropies.append(float(masked_mean(entropy, mask)))
            log.grpo_tokens += float(mask.sum())
            log.measure_cpu += time.process_time() - started
            step = len(log.entropies)
            metrics = {"actor/entropy": log.entropies[-1], "reward/mean": log.rewards[-1]}
            if target is not None:
                metrics["aepo/target_entropy"] = target
                metrics["trl/entropy_coef"] = float(self.entropy_coef)
            logger.log(step, metrics)
            bar.update(1)
            bar.set_postfix(H=f"{log.entropies[-1]:.3f}", R=f"{log.rewards[-1]:.2f}")
            return out

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trl_args = GRPOConfig(
        **trl_config_kwargs(
            s,
            config.aepo,
            steps=s.steps,
            target=target,
            output_dir=str(output_dir / "trl"),
            coef_delta=coef_delta,
        )
    )
    trainer = MeasuredGRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=trl_args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)  # its end-of-train dict; our bar shows progress
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        trainer.train()
    finally:
        bar.close()
        logger.close()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if len(log.entropies) != s.steps:
        raise RuntimeError(f"{desc}: TRL generated {len(log.entropies)} times, expected {s.steps}")
    return log, cpu - log.measure_cpu, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, help="default: the tiny presets' steps")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.25])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (every method)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/bench_vs_trl"))
    parser.add_argument("--cache-dir", type=Path, help="warm-start cache (default ~/.cache/aepo)")
    parser.add_argument("--only", nargs="+", choices=METHODS, help="run only these rows")
    parser.add_argument(
        "--trl-coef-delta",
        type=float,
        default=TRL_COEF_DELTA,
        help=f"TRL adaptive entropy: entropy_coef_delta (default {TRL_COEF_DELTA}; TRL's own "
        "default, 0.005, lets entropy run away on the built-in task)",
    )
    args = parser.parse_args(argv)
    if args.steps is None:
        from aepo.backends.local.presets import TINY_TRAINER

        args.steps = TINY_TRAINER["steps"]

    try:
        import trl
    except ImportError:
        parser.exit(2, "TRL is not installed: make bench-trl (scripts/install_bench_env.sh)\n")
    if trl.__version__ != TRL_VERSION:
        print(f"warning: TRL {trl.__version__}, measured with {TRL_VERSION}", file=sys.stderr)
    import torch

    torch.set_num_threads(args.threads)
    methods = tuple(m for m in METHODS if not args.only or m in args.only)
    runs: list[RunMetrics] = []
    started = time.perf_counter()
    for index, seed in enumerate(args.seeds):
        for method in run_order(methods, index):
            targets = args.targets[:1] if method in TARGET_FREE else args.targets
            for target in targets:
                name = method.replace(" ", "_").replace("(", "").replace(")", "")
                out = args.output_dir / f"{name}_h{target:g}" / f"seed{seed}"
                config = local_config(method, target, seed, args, out)
                desc = f"{method} H*={target:g} seed {seed}"
                if method in THEIRS:
                    adaptive = target if method == REFERENCE else None
                    log, cpu, wall = run_trl(config, adaptive, desc, args.trl_coef_delta)
                else:
                    log, cpu, wall = run_ours(config, desc)
                scored = args.targets if method in TARGET_FREE else [target]
                for t in scored:
                    runs.append(
                        run_metrics(
                            method,
                            target=t,
                            seed=seed,
                            entropies=log.entropies,
                            rewards=log.rewards,
                            grpo_tokens=log.grpo_tokens,
                            extra_tokens=log.extra_tokens,
                            cpu_seconds=cpu,
                            wall_seconds=wall,
                        )
                    )
    medians = median_over_seeds(runs)
    print(
        f"\nTRL {trl.__version__} vs aepo on the built-in task: {len(args.seeds)} seed(s) "
        f"{args.seeds}, {args.steps} steps, torch threads {args.threads}, "
        f"{time.perf_counter() - started:.0f} s in all; metrics over the last half of the steps; "
        f"TRL adaptive entropy_coef_delta {args.trl_coef_delta}"
    )
    print(format_tables(medians))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "bench_vs_trl.json").write_text(
        json.dumps(
            {
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "runs": [asdict(r) for r in runs],
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
