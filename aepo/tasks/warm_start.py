"""A short, seeded supervised warm start of the tiny model on a built-in task: shipped, else cached.

RL needs a policy that already finds some correct answers. We fit the tiny Llama to a
*mixture*: with probability ``valid_fraction`` a uniformly chosen correct answer, otherwise
uniformly random digits in the answer's format. The fitted policy has moderate accuracy and high entropy (it
spreads over correct pairs and over noise), which is where GRPO's collapse and AEPO's
control are both visible.

The same recipe lands elsewhere on another CPU (same_sum learns its rule in a sharp transition
whose step moves with the arithmetic), so the settings the demos and ``aepo train`` use by default
are shipped in the package (``aepo/tasks/warm_starts/<task>/``, built by
``scripts/build_warm_starts.py``), each with a ``warm_start.json`` recording its settings, its
measured accuracy and the sha256 of its weights, checked on every load. Any other settings are
trained on first use and saved with ``save_pretrained`` under a cache directory keyed by a hash
of the task's name and definition and every setting.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from aepo.tasks.builtin import DEFAULT_TASK, builtin_task
from aepo.tasks.tiny_model import CHARACTERS, TINY_MODEL_DEFAULTS

CACHE_ENV = "AEPO_CACHE_DIR"
_FORMAT_VERSION = 3  # bump when the tokenizer or the training loop changes meaning
SHIPPED_DIR = Path(__file__).parent / "warm_starts"
"""the package's warm starts, one ``<task>/`` model directory each"""
RECORD = "warm_start.json"
WEIGHTS = "model.safetensors"


class WarmStartError(ValueError):
    """A shipped warm start whose weights are not the ones its record names."""


def _canonical(node) -> object:
    """An AST as nested lists, leaving out empty and None fields (Python 3.12 added empty
    ``type_params`` to every function, 3.13's ``ast.dump`` omits empty fields: the same code
    must give the same hash on every Python the package supports)."""
    if isinstance(node, ast.AST):
        fields = [(name, _canonical(getattr(node, name, None))) for name in node._fields]
        return [type(node).__name__, *[(n, v) for n, v in fields if v not in (None, [])]]
    if isinstance(node, list):
        return [_canonical(item) for item in node]
    return repr(node)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """Drop every statement that is a bare string (docstrings, attribute notes): they cannot
    change what the task generates."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            kept = [
                stmt
                for stmt in body
                if not (
                    isinstance(stmt, ast.Expr)
                    and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)
                )
            ]
            node.body = kept or [ast.Pass()]
    return tree


def definition_hash(source: str) -> str:
    """Hash of a task module's code: its syntax tree without docstrings. Any change to what
    the code does (a constant, the split, the sampling, the reward) changes it; comments,
    docstrings and formatting (``ruff format``) do not, so editing the prose never orphans
    the shipped weights."""
    tree = _without_docstrings(ast.parse(source))
    blob = json.dumps(_canonical(tree), separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _task_source(task: str) -> str:
    spec = importlib.util.find_spec(builtin_task(task).__name__)
    return Path(spec.origin).read_text()


def task_definition(task: str) -> str:
    """:func:`definition_hash` of built-in ``task``'s module."""
    return definition_hash(_task_source(task))


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
                "definition": task_definition(task),
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


def train_warm_start(
    settings: WarmStartSettings,
    task: str,
    progress: bool = True,
    on_step: Callable[[int, object], bool] | None = None,
):
    """Fit a fresh tiny model to built-in ``task``; returns ``(model, tokenizer)``.

    ``on_step(step, model)`` runs after every optimizer step (``step`` counts from 1) and may
    return True to stop there: the model after ``s`` steps is the one ``steps=s`` trains, since
    nothing else draws from the batch generator or the optimizer."""
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
    for step in bar:
        input_ids, attention, labels = _training_batch(rng, settings, tokenizer, task_module)
        positions = (attention.cumsum(-1) - 1).clamp_min(0)
        out = model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, labels=labels
        )
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{out.loss.item():.3f}")
        if on_step is not None:
            model.eval()
            stop = on_step(step + 1, model)
            model.train()
            if stop:
                break
    model.eval()
    return model, tokenizer


def accuracy_prompts(task: str) -> list:
    """The prompts a warm start's accuracy is measured on: the task's held-out prompts where
    it has a split (same_sum), else every prompt it has (contains_digit's 10 digits,
    digit_sum's 19 sums: the warm start trains on all of them)."""
    module = builtin_task(task)
    if hasattr(module, "eval_prompts"):
        return module.eval_prompts(module.EVAL_POOL)
    return list(module.TARGETS)


def measure_accuracy(model, tokenizer, task: str, samples: int, seed: int) -> float:
    """Mean reward of ``samples`` answers per :func:`accuracy_prompts` prompt, sampled at
    temperature 1 (pass@1, as the payoff demo measures its base model)."""
    from aepo.backends.local.passk_demo import count_correct

    prompts = accuracy_prompts(task)
    correct = count_correct(
        model, tokenizer, builtin_task(task), prompts, samples, seed=seed, progress=False
    )
    return sum(correct) / (len(prompts) * samples)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def shipped_warm_start(settings: WarmStartSettings, task: str) -> Path | None:
    """The package's model directory for these settings of ``task`` (its weights checked
    against their recorded sha256), or None when none is shipped for them."""
    folder = SHIPPED_DIR / task
    record_path = folder / RECORD
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    if record.get("key") != settings.key(task):
        return None
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise WarmStartError(f"{weights}: missing; reinstall aepo-rl")
    digest = file_sha256(weights)
    if digest != record.get("sha256"):
        raise WarmStartError(
            f"{weights}: sha256 {digest[:16]}... is not the {str(record.get('sha256'))[:16]}... "
            f"its {RECORD} records; reinstall aepo-rl or run scripts/build_warm_starts.py"
        )
    return folder


def warm_start_model(
    settings: WarmStartSettings | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    task: str = DEFAULT_TASK,
) -> Path:
    """Directory of the model warm-started on built-in ``task``: the shipped one when these
    are its settings, else trained once and then read from the cache."""
    settings = settings or WarmStartSettings()
    builtin_task(task)  # an unknown name fails before anything is trained
    shipped = shipped_warm_start(settings, task)
    if shipped is not None:
        return shipped
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
        (staging / RECORD).write_text(json.dumps(warm_start_record(settings, task), indent=2))
        try:
            staging.rename(target)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def warm_start_record(settings: WarmStartSettings, task: str) -> dict:
    """What a warm start's ``warm_start.json`` says about how it was made."""
    return {
        "task": task,
        "settings": settings.model_dump(),
        "task_definition": task_definition(task),
        "key": settings.key(task),
    }
