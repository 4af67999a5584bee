"""A short, seeded supervised warm start of the tiny model on a built-in task, cached.

RL needs a policy that already finds some correct answers. We fit the tiny Llama to a
*mixture*: with probability ``valid_fraction`` a uniformly chosen correct answer, otherwise
uniformly random digits in the answer's format. The fitted policy has moderate accuracy and high entropy (it
spreads over correct pairs and over noise), which is where GRPO's collapse and AEPO's
control are both visible. The result is saved with ``save_pretrained`` under a directory
keyed by a hash of the task and every setting, so the demo, the tests and ``aepo train`` share one copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aepo.tasks.builtin import DEFAULT_TASK, builtin_task
from aepo.tasks.tiny_model import CHARACTERS, TINY_MODEL_DEFAULTS

CACHE_ENV = "AEPO_CACHE_DIR"
_FORMAT_VERSION = 2  # bump when the task, tokenizer or training loop changes meaning


class WarmStartSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    steps: int = Field(600, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3e-3, gt=0, le=1)
    valid_fraction: float = Field(0.8, ge=0, le=1)
    seed: int = 0

    def key(self, task: str) -> str:
        blob = json.dumps(
            {
                "task": task,
                "settings": self.model_dump(),
                "model": TINY_MODEL_DEFAULTS,
                "vocab": "".join(CHARACTERS),
                "version": _FORMAT_VERSION,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "aepo")


def _training_batch(rng: np.random.Generator, settings: WarmStartSettings, tokenizer, task):
    import torch

    texts = []
    for t in task.sample_targets(rng, settings.batch_size):
        answer = task.warm_start_answer(rng, t, valid=rng.random() < settings.valid_fraction)
        texts.append((task.prompt_text(t), answer))
    prompts = tokenizer([p for p, _ in texts], padding=True, return_tensors="pt")
    answers = torch.tensor([tokenizer(a)["input_ids"] + [tokenizer.eos_token_id] for _, a in texts])
    input_ids = torch.cat([prompts["input_ids"], answers], dim=1)
    attention = torch.cat([prompts["attention_mask"], torch.ones_like(answers)], dim=1)
    labels = input_ids.clone()
    labels[:, : prompts["input_ids"].shape[1]] = -100  # learn the answer, not the prompt
    return input_ids, attention, labels


def train_warm_start(settings: WarmStartSettings, task: str, progress: bool = True):
    """Fit a fresh tiny model to built-in ``task``; returns ``(model, tokenizer)``."""
    import torch
    from tqdm.auto import tqdm

    from aepo.tasks.tiny_model import build_tiny_model, build_tokenizer

    task_module = builtin_task(task)
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=settings.seed)
    rng = np.random.default_rng(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    model.train()
    bar = tqdm(
        range(settings.steps), desc=f"warm start ({task})", disable=not progress, leave=False
    )
    for _ in bar:
        input_ids, attention, labels = _training_batch(rng, settings, tokenizer, task_module)
        positions = (attention.cumsum(-1) - 1).clamp_min(0)
        out = model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, labels=labels
        )
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{out.loss.item():.3f}")
    model.eval()
    return model, tokenizer


def warm_start_model(
    settings: WarmStartSettings | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    task: str = DEFAULT_TASK,
) -> Path:
    """Directory of the model warm-started on built-in ``task`` (trained once, then read from
    the cache)."""
    settings = settings or WarmStartSettings()
    builtin_task(task)  # an unknown name fails before anything is trained
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "warm_start" / settings.key(task)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    model, tokenizer = train_warm_start(settings, task, progress=progress)
    # Write beside the final path and rename, so a killed run never leaves half a model
    # that a later run would load.
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "warm_start.json").write_text(
            json.dumps({"task": task, **settings.model_dump()}, indent=2)
        )
        try:
            staging.rename(target)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
