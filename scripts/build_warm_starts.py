"""Rebuild the warm starts shipped in the package (``aepo/tasks/warm_starts/<task>/``).

Each is trained with one torch thread by ``aepo.tasks.warm_start.train_warm_start``, its
accuracy measured (``ACCURACY_SAMPLES[task]`` answers per prompt at temperature 1, seed
``ACCURACY_SEED``), and written as a ``save_pretrained`` directory with a ``warm_start.json``:
the settings, the task definition hash and cache key, the accuracy and how it was measured, the
sha256 of ``model.safetensors`` and the versions it was built with.

contains_digit and digit_sum ship the default settings (``aepo demo``, ``aepo train`` with the
tiny configs, the verl end-to-end runs). same_sum (``aepo demo --passk``) needs a start that has
learned part of its rule, and the step where the tiny model learns it moves from CPU to CPU
(0.067 held-out pass@1 after 1,500 steps on one machine, 0.40 on another), so its step count is
chosen by a rule fixed before any RL was run from it: check the held-out pass@1 every
``CHECK_EVERY`` steps and keep the first checkpoint in ``SAME_SUM_BAND``; if one interval jumps
over the band, keep whichever of its two ends is nearer the band's middle. Rebuilt on another
machine the rule may pick another step count: ``PASSK_WARM_START`` in
``aepo/backends/local/passk_demo.py`` must then name it (a test checks that it does).

    python scripts/build_warm_starts.py                  # all three, about N minutes
    python scripts/build_warm_starts.py --tasks digit_sum
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ACCURACY_SAMPLES = {"contains_digit": 1024, "digit_sum": 1024, "same_sum": 64}
"""answers per prompt: 10,240 for contains_digit's 10 prompts, 19,456 for digit_sum's 19 and
32,768 for same_sum's 512 held-out prompts (a standard error of 0.005 or less on each)"""
ACCURACY_SEED = 0
CHECK_EVERY = 100
MAX_STEPS = 8000
SAME_SUM_BAND = (0.30, 0.50)
"""the payoff demo's base: right on part of the held-out prompts, wrong on others (pass@1 0.40
with 0.03-0.72 per prompt where its table was first measured)"""


def _versions() -> dict:
    import numpy
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "torch_threads": torch.get_num_threads(),
    }


def _write(folder: Path, model, tokenizer, record: dict) -> dict:
    from aepo.tasks.warm_start import RECORD, WEIGHTS, file_sha256

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        record = {**record, "weights": WEIGHTS, "sha256": file_sha256(staging / WEIGHTS)}
        (staging / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        # mkdtemp makes a private folder; the package's files are for every user
        staging.chmod(0o755)
        for path in staging.iterdir():
            path.chmod(0o644)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return record


def _accuracy_record(value: float, task: str) -> dict:
    from aepo.tasks.warm_start import accuracy_prompts

    return {
        "pass@1": round(value, 4),
        "prompts": "held-out" if task == "same_sum" else "all",
        "prompt_count": len(accuracy_prompts(task)),
        "samples_per_prompt": ACCURACY_SAMPLES[task],
        "seed": ACCURACY_SEED,
        "temperature": 1.0,
    }


def build_default(task: str, out: Path) -> dict:
    """``task`` at the default warm-start settings."""
    from aepo.tasks.warm_start import (
        WarmStartSettings,
        measure_accuracy,
        train_warm_start,
        warm_start_record,
    )

    settings = WarmStartSettings()
    model, tokenizer = train_warm_start(settings, task)
    accuracy = measure_accuracy(model, tokenizer, task, ACCURACY_SAMPLES[task], ACCURACY_SEED)
    record = {
        **warm_start_record(settings, task),
        "accuracy": _accuracy_record(accuracy, task),
        "selection": "the default settings",
        "built_with": _versions(),
    }
    return _write(out / task, model, tokenizer, record)


def build_same_sum(out: Path) -> dict:
    """same_sum at the first checked step count whose held-out pass@1 is in the band."""
    import copy

    from aepo.tasks.warm_start import (
        WarmStartSettings,
        measure_accuracy,
        train_warm_start,
        warm_start_record,
    )

    task = "same_sum"
    low, high = SAME_SUM_BAND
    middle = (low + high) / 2
    checks: list[dict] = []
    kept: dict = {}

    def check(step: int, model) -> bool:
        if step % CHECK_EVERY:
            return False
        accuracy = measure_accuracy(
            model, tokenizer_box[0], task, ACCURACY_SAMPLES[task], ACCURACY_SEED
        )
        checks.append({"steps": step, "pass@1": round(accuracy, 4)})
        print(f"  same_sum step {step}: held-out pass@1 {accuracy:.3f}", flush=True)
        if low <= accuracy <= high:
            kept.update(steps=step, accuracy=accuracy, state=copy.deepcopy(model.state_dict()))
            return True
        if accuracy > high:
            before = kept.get("previous")
            if before is not None and abs(before["accuracy"] - middle) < abs(accuracy - middle):
                kept.update(
                    steps=before["steps"], accuracy=before["accuracy"], state=before["state"]
                )
            else:
                kept.update(steps=step, accuracy=accuracy, state=copy.deepcopy(model.state_dict()))
            return True
        kept["previous"] = {
            "steps": step,
            "accuracy": accuracy,
            "state": copy.deepcopy(model.state_dict()),
        }
        return False

    from aepo.tasks.tiny_model import build_tokenizer

    tokenizer_box = [build_tokenizer()]
    model, tokenizer = train_warm_start(WarmStartSettings(steps=MAX_STEPS), task, on_step=check)
    if "state" not in kept:
        raise SystemExit(f"same_sum: no check up to {MAX_STEPS} steps reached {low}")
    model.load_state_dict(kept["state"])
    settings = WarmStartSettings(steps=kept["steps"])
    record = {
        **warm_start_record(settings, task),
        "accuracy": _accuracy_record(kept["accuracy"], task),
        "selection": (
            f"first of the checks every {CHECK_EVERY} steps whose held-out pass@1 is in "
            f"[{low}, {high}] (or, if one interval jumps over it, the end nearer {middle}); "
            "rule fixed before any RL was run from it"
        ),
        "checks": checks,
        "built_with": _versions(),
    }
    return _write(out / task, model, tokenizer, record)


def main(argv: list[str] | None = None) -> None:
    import torch

    from aepo.tasks.builtin import BUILTIN_TASKS
    from aepo.tasks.warm_start import SHIPPED_DIR

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=BUILTIN_TASKS, default=list(BUILTIN_TASKS))
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for task in args.tasks:
        started = time.perf_counter()
        record = build_same_sum(args.out) if task == "same_sum" else build_default(task, args.out)
        print(
            f"{task}: {record['settings']['steps']} steps, pass@1 {record['accuracy']['pass@1']}, "
            f"sha256 {record['sha256'][:16]}..., {time.perf_counter() - started:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
