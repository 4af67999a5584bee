"""``aepo demo --passk``: the exploration payoff in miniature.

From one cached warm start on the built-in ``same_sum`` task, GRPO and AEPO at several
entropy targets train for the same number of steps with one config (AEPO's runs differ only in
``target_entropy``); then n answers per held-out prompt are sampled from the base model and
from every trained model, and the unbiased pass@k estimator gives pass@1 ... pass@n.
Writes ``passk.json``, ``passk.png`` (pass@k, and its difference from the base),
``passk_vs_target.png`` (final pass@1 and pass@n against the target) and prints a table.
With several seeds every figure and the table show the median over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

PASSK_TASK = "same_sum"
PASSK_TARGETS = (0.25, 0.5, 0.75, 1.0)
"""the paper's targets; same_sum's fully accurate policies reach up to 1.2 nats/token"""
PASSK_STEPS = 400
"""GRPO needs this long to narrow on such a task (at 150 steps it was still at or above the
base at every k)"""
EVAL_PROMPTS = 512
EVAL_SAMPLES = 1024
PASSK_WARM_START: dict[str, Any] = {"steps": 1200}
"""the shipped same_sum warm start's settings (aepo/tasks/warm_starts/same_sum/warm_start.json):
the first 100-step checkpoint whose held-out pass@1 was in [0.30, 0.50] (0.350; 0.269 at 1100
steps). The step where the tiny model learns digit sums moves from CPU to CPU (0.067 after 1500
steps on one machine, 0.400 on another), so the weights are shipped, not retrained"""
EVAL_BATCH_ROWS = 4096
"""sequences per sampling call: the tiny model's throughput keeps rising up to about this"""
BASE = "base"


COMPARABLE = ("entrocraft", "dcpo", "entropic", "adaptive_entropy")
"""target-driven baselines ``--compare`` can run beside AEPO at every target"""


def run_name(algorithm: str, target: float | None) -> str:
    if algorithm == BASE:
        return BASE
    return "grpo" if target is None else f"{algorithm}_H*={target:g}"


def _folder(name: str) -> str:
    return name.replace("*", "").replace("=", "_")


def count_correct(
    model,
    tokenizer,
    task,
    prompts: list,
    n: int,
    *,
    seed: int,
    batch_rows: int = EVAL_BATCH_ROWS,
    progress: bool = True,
    desc: str = "sampling",
) -> list[int]:
    """Correct answers among ``n`` samples per prompt, drawn at temperature 1 from the
    policy's full distribution (the distribution RL trains and the entropy is measured on)."""
    import torch
    from tqdm.auto import tqdm

    from aepo.backends.local.rollout import decode_responses, encode_prompts, sample

    device = next(model.parameters()).device
    per_call = max(1, batch_rows // n)
    correct: list[int] = []
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with tqdm(
            total=len(prompts) * n, desc=desc, unit="sample", unit_scale=True, disable=not progress
        ) as bar:
            for start in range(0, len(prompts), per_call):
                chunk = prompts[start : start + per_call]
                ids, mask = encode_prompts(
                    tokenizer, [task.prompt_text(p) for p in chunk], 64, device
                )
                rollout = sample(
                    model,
                    ids.repeat_interleave(n, 0),
                    mask.repeat_interleave(n, 0),
                    temperature=1.0,
                    max_new_tokens=task.ANSWER_TOKENS,
                    pad_id=tokenizer.pad_token_id,
                    eos_id=tokenizer.eos_token_id,
                )
                texts = decode_responses(tokenizer, rollout)
                for i, prompt in enumerate(chunk):
                    correct.append(
                        int(sum(task.reward(t, prompt) for t in texts[i * n : (i + 1) * n]))
                    )
                bar.update(len(chunk) * n)
    return correct


def passk_curve(correct: list[int], n: int) -> dict[str, float]:
    from aepo.eval.passk import pass_at_ks, report_ks

    values = pass_at_ks([(n, c) for c in correct], report_ks(n))
    return {str(k): v for k, v in values.items()}


def _write_passk_scalars(run_dir: Path, curve: dict[str, float]) -> None:
    """pass@k as TensorBoard scalars of the run (step = k), beside its training curves."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tensorboard"))
    for k, value in curve.items():
        writer.add_scalar("eval/pass@k", value, int(k))
    writer.close()


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one run (or load the base model) and sample its held-out answers; runs in a
    worker process when ``--jobs`` > 1."""
    import torch

    from aepo.tasks.builtin import builtin_task

    if job.get("slot") is not None:
        # tqdm reads TQDM_* defaults: each worker's bars get their own terminal line.
        os.environ["TQDM_POSITION"] = str(job["slot"])
    torch.set_num_threads(job["threads"])
    started = time.perf_counter()
    task = builtin_task(job["task"])
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = None
    if job["algorithm"] == BASE:
        from aepo.model_dir import load_causal_lm, resolve_device

        model, tokenizer = load_causal_lm(job["base_model"], dtype="float32")
        model = model.to(resolve_device(job["device"]))
    else:
        from aepo.backends.local.settings import run_config_from_dict
        from aepo.backends.local.summary import summarize
        from aepo.backends.local.trainer import LocalTrainer

        trainer = LocalTrainer(run_config_from_dict(job["config"], source=f"demo:{job['name']}"))
        history = trainer.fit(desc=f"seed {job['seed']} {job['name']}")
        summary = summarize(job["name"], history, job["target"]).as_dict()
        model, tokenizer = trainer.model, trainer.tokenizer
    prompts = task.eval_prompts(job["eval_prompts"])
    correct = count_correct(
        model,
        tokenizer,
        task,
        prompts,
        job["samples"],
        seed=job["eval_seed"],
        progress=job["progress"],
        desc=f"seed {job['seed']} {job['name']}: sampling",
    )
    curve = passk_curve(correct, job["samples"])
    _write_passk_scalars(run_dir, curve)
    return {
        "name": job["name"],
        "algorithm": job["algorithm"],
        "target": job["target"],
        "seed": job["seed"],
        "run_dir": str(run_dir),
        "pass@k": curve,
        "correct": correct,
        "train": summary,
        "wall_s": time.perf_counter() - started,
    }


def _jobs(
    output_dir: Path,
    base_model: Path,
    targets: list[float],
    steps: int,
    seeds: list[int],
    eval_prompts: int,
    samples: int,
    threads: int,
    progress: bool,
    common: dict[str, Any],
    compare: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    from aepo.backends.local.presets import tiny_run_config

    jobs = []
    for seed in seeds:
        runs: list[tuple[str, float | None]] = [(BASE, None), ("grpo", None)]
        runs += [(algorithm, t) for algorithm in ("aepo", *compare) for t in targets]
        for algorithm, target in runs:
            name = run_name(algorithm, target)
            run_dir = output_dir / f"seed{seed}" / _folder(name)
            config = None
            if algorithm != BASE:
                config = tiny_run_config(
                    algorithm, target, output_dir=str(run_dir), steps=steps, seed=seed, **common
                )
            jobs.append(
                {
                    "task": PASSK_TASK,
                    "name": name,
                    "algorithm": algorithm,
                    "target": target,
                    "seed": seed,
                    "run_dir": str(run_dir),
                    "config": config,
                    "base_model": str(base_model),
                    "eval_prompts": eval_prompts,
                    "samples": samples,
                    # The same draws for every model of a seed: differences between runs are
                    # the models', not the sampler's.
                    "eval_seed": 1_000 + seed,
                    "threads": threads,
                    "device": common["device"],
                    "progress": progress,
                }
            )
    return jobs


def _median_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run name: the median over seeds of every pass@k and training figure."""
    out = []
    for name in dict.fromkeys(r["name"] for r in runs):
        group = [r for r in runs if r["name"] == name]
        row: dict[str, Any] = {
            "name": name,
            "algorithm": group[0]["algorithm"],
            "target": group[0]["target"],
            "seeds": [r["seed"] for r in group],
            "pass@k": {
                k: float(np.median([r["pass@k"][k] for r in group])) for k in group[0]["pass@k"]
            },
        }
        if group[0]["train"] is not None:
            for key in ("final_reward", "last_quarter_entropy", "first_entropy"):
                row[key] = float(np.median([r["train"][key] for r in group]))
        out.append(row)
    return out


def run_passk_demo(
    output_dir: Path,
    targets: list[float] | tuple[float, ...] = PASSK_TARGETS,
    steps: int = PASSK_STEPS,
    seeds: list[int] | tuple[int, ...] = (0,),
    eval_prompts: int = EVAL_PROMPTS,
    samples: int = EVAL_SAMPLES,
    jobs: int = 1,
    cache_dir: Path | None = None,
    device: str = "cpu",
    threads: int = 1,
    progress: bool = True,
    trainer_overrides: dict[str, Any] | None = None,
    compare: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Train, sample and write ``passk.json`` and the figures; returns the JSON's content.
    ``compare``: algorithms of :data:`COMPARABLE` run at every target beside AEPO, each at
    its tiny preset (same steps, seeds and held-out draws)."""
    unknown = [a for a in compare if a not in COMPARABLE]
    if unknown:
        raise ValueError(f"--compare {' '.join(unknown)}: choose from {', '.join(COMPARABLE)}")
    from aepo.tasks.builtin import builtin_task
    from aepo.tasks.warm_start import WarmStartSettings, warm_start_model

    task = builtin_task(PASSK_TASK)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    overrides = dict(trainer_overrides or {})
    warm = WarmStartSettings.model_validate({**PASSK_WARM_START, **overrides.pop("warm_start", {})})
    common = {
        "data": f"builtin:{PASSK_TASK}",
        "device": device,
        "torch_threads": threads,
        "progress": progress,
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "save_every": 0,
        "warm_start": warm.model_dump(),
        **overrides,
    }
    # Train the warm start once, here, before the workers that all read it start.
    base_model = warm_start_model(warm, cache_dir, progress=progress, task=PASSK_TASK)
    job_list = _jobs(
        output_dir,
        base_model,
        list(targets),
        steps,
        list(seeds),
        eval_prompts,
        samples,
        threads,
        progress,
        common,
        tuple(compare),
    )
    started = time.perf_counter()
    if jobs <= 1:
        runs = [_run_job(job) for job in job_list]
    else:
        import multiprocessing

        for i, job in enumerate(job_list):
            job["slot"] = i % jobs
        # spawn: a forked torch with its thread pools already started can hang.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            runs = list(pool.map(_run_job, job_list))
    prompts = task.eval_prompts(eval_prompts)
    result = {
        "task": PASSK_TASK,
        "eval_prompts": eval_prompts,
        "n": samples,
        "ks": [int(k) for k in runs[0]["pass@k"]],
        "steps": steps,
        "seeds": list(seeds),
        "targets": list(targets),
        "compare": list(compare),
        "warm_start": {"task": PASSK_TASK, **warm.model_dump(), "path": str(base_model)},
        "random_digits_pass@1": task.random_guess_rate(prompts),
        "entropy_ceiling": task.entropy_ceiling(),
        "sampling": {"temperature": 1.0, "top_p": 1.0, "top_k": 0},
        "wall_s": time.perf_counter() - started,
        "runs": runs,
        "median": _median_runs(runs),
    }
    _write_result(result, output_dir)
    return result


def _write_result(result: dict[str, Any], output_dir: Path) -> None:
    """``passk.json`` and the two figures, from the medians."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "passk.json").write_text(json.dumps(result, indent=1))
    from aepo.plot.passk import plot_passk_curves, plot_passk_vs_target

    title = f"{result['task']}, {result['eval_prompts']} held-out prompts, n={result['n']}"
    runs_per_name = len(result["median"][0]["seeds"])
    if runs_per_name > 1:
        title += f", median of {runs_per_name} runs"
    curves = {row["name"]: row["pass@k"] for row in result["median"]}
    plot_passk_curves(curves, output_dir / "passk.png", title=title, reference=BASE)
    plot_passk_vs_target(result["median"], output_dir / "passk_vs_target.png", title=title)


POOLED_KEYS = ("task", "eval_prompts", "n", "ks", "steps", "targets", "warm_start", "sampling")
"""what every pooled result must share: the same experiment, run elsewhere or at other seeds
(the warm start's cache path excepted)"""


def pool_results(paths: list[Path], output_dir: Path) -> dict[str, Any]:
    """``--pool``: the runs of several ``passk.json`` (other machines' arithmetic, other seed
    sets) as one result, its medians over all of them; nothing is trained. A run name that is
    not in every file (a ``--compare`` baseline run in one) is left out and listed in
    ``left_out``, so that every median is over the same runs."""
    loaded = []
    for path in paths:
        try:
            loaded.append((path, json.loads(Path(path).read_text())))
        except (OSError, ValueError) as error:
            raise ValueError(f"--pool {path}: not a readable passk.json ({error})") from None
    first_path, first = loaded[0]
    for path, other in loaded:
        for key in (*POOLED_KEYS, "runs"):
            if key not in other:
                raise ValueError(f"--pool {path}: no '{key}': not a passk.json of aepo demo")
        for key in POOLED_KEYS:
            mine, theirs = other[key], first[key]
            if key == "warm_start":
                mine, theirs = _without_path(mine), _without_path(theirs)
            if mine != theirs:
                raise ValueError(
                    f"--pool {path}: '{key}' is {mine}, {first_path} has {theirs}: "
                    "pooled results must come from the same experiment"
                )
    names = [set(r["name"] for r in other["runs"]) for _, other in loaded]
    kept = set.intersection(*names)
    runs = [
        {**run, "pooled_from": str(path)}
        for path, other in loaded
        for run in other["runs"]
        if run["name"] in kept
    ]
    result = {
        **{key: first[key] for key in POOLED_KEYS},
        "seeds": [seed for _, other in loaded for seed in other["seeds"]],
        "compare": [a for a in first["compare"] if any(n.startswith(f"{a}_") for n in kept)],
        "random_digits_pass@1": first["random_digits_pass@1"],
        "entropy_ceiling": first["entropy_ceiling"],
        "pooled_from": [str(path) for path, _ in loaded],
        "left_out": sorted(set.union(*names) - kept),
        "runs": runs,
        "median": _median_runs(runs),
    }
    _write_result(result, Path(output_dir))
    return result


def _without_path(warm_start: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in warm_start.items() if k != "path"}


PASS1_TOLERANCE = 0.02
"""AEPO's pass@1 within this (two percentage points) of GRPO's counts as matching it"""


def findings(result: dict[str, Any]) -> list[tuple[bool, str]]:
    """The paper's findings, checked on the medians over seeds."""
    rows = {row["name"]: row for row in result["median"]}
    top = str(result["ks"][-1])
    base, grpo = rows[BASE]["pass@k"], rows["grpo"]["pass@k"]
    checks = [
        (grpo["1"] > base["1"], f"GRPO pass@1 {grpo['1']:.3f} > base {base['1']:.3f}"),
        (
            grpo[top] < base[top],
            f"GRPO pass@{top} {grpo[top]:.4f} < base {base[top]:.4f}",
        ),
    ]
    aepo = [row for row in result["median"] if row["algorithm"] == "aepo"]
    for row in aepo:
        curve = row["pass@k"]
        checks.append(
            (
                curve[top] >= base[top] and curve["1"] >= grpo["1"] - PASS1_TOLERANCE,
                f"{row['name']}: pass@{top} {curve[top]:.4f} >= base {base[top]:.4f} and "
                f"pass@1 {curve['1']:.3f} >= GRPO {grpo['1']:.3f} - {PASS1_TOLERANCE}",
            )
        )
    if len(aepo) >= 3:
        pass1 = [row["pass@k"]["1"] for row in aepo]
        peak = int(np.argmax(pass1))
        # Rising up to an inner target and falling after it at every step: a peak with a dip
        # on either side of it is noise at this seed count, not the paper's shape.
        rising = all(a < b for a, b in zip(pass1[:peak], pass1[1 : peak + 1], strict=True))
        falling = all(a > b for a, b in zip(pass1[peak:-1], pass1[peak + 1 :], strict=True))
        checks.append(
            (
                0 < peak < len(aepo) - 1 and rising and falling,
                "pass@1 against the target rises, then falls: "
                + ", ".join(
                    f"{row['target']:g}: {p:.3f}" for row, p in zip(aepo, pass1, strict=True)
                ),
            )
        )
    return checks


TABLE_KS = ("1", "4", "16", "64", "256", "1024")


def format_passk_table(result: dict[str, Any]) -> str:
    ks = [k for k in TABLE_KS if k in result["median"][0]["pass@k"]]
    top = str(result["ks"][-1])
    if top not in ks:
        ks.append(top)
    head = ["run", "target H*", "H last quarter", "train reward", *[f"pass@{k}" for k in ks]]
    rows = []
    for row in result["median"]:
        trained = "last_quarter_entropy" in row
        rows.append(
            [
                row["name"],
                "-" if row["target"] is None else f"{row['target']:g}",
                f"{row['last_quarter_entropy']:.3f}" if trained else "-",
                f"{row['final_reward']:.3f}" if trained else "-",
                *[f"{row['pass@k'][k]:.4f}" for k in ks],
            ]
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *map(line, rows)])


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.pool:
        output_dir = args.output_dir or Path("runs/demo_passk_pooled")
        try:
            result = pool_results(args.pool, output_dir)
        except ValueError as error:
            print(f"aepo demo: {error}", file=sys.stderr)
            return 2
        return _report(result, output_dir, started)
    output_dir = args.output_dir or Path("runs/demo_passk")
    result = run_passk_demo(
        output_dir,
        targets=args.targets or list(PASSK_TARGETS),
        steps=args.steps or PASSK_STEPS,
        seeds=args.seeds or [args.seed],
        eval_prompts=args.eval_prompts,
        samples=args.samples,
        jobs=args.jobs,
        cache_dir=args.cache_dir,
        device=args.device,
        threads=args.threads,
        progress=not args.no_progress,
        compare=args.compare,
    )
    return _report(result, output_dir, started)


def _report(result: dict[str, Any], output_dir: Path, started: float) -> int:
    seeds = result["seeds"]
    if "pooled_from" in result:
        over = f", median over {len(seeds)} runs from {', '.join(result['pooled_from'])}"
    elif len(seeds) > 1:
        over = f", median over seeds {seeds}"
    else:
        over = f", seed {seeds[0]}"
    print()
    print(format_passk_table(result))
    print(
        f"\n{result['task']}: {result['eval_prompts']} held-out prompts, n = {result['n']} "
        f"samples each (T = 1), {result['steps']} RL steps{over}"
        + f"; uniformly random digits: pass@1 {result['random_digits_pass@1']:.3f}"
    )
    if result.get("left_out"):
        print(f"left out (not in every pooled file): {', '.join(result['left_out'])}")
    for ok, text in findings(result):
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    print(f"\nresults: {output_dir / 'passk.json'}")
    print(f"figures: {output_dir / 'passk.png'}, {output_dir / 'passk_vs_target.png'}")
    if "pooled_from" not in result:  # the runs' logs stay where they were written
        print(f"TensorBoard: tensorboard --logdir {output_dir}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0
