"""Where prompts and their verifiers come from: the built-in task or a verl-schema parquet.

Both sources are indexed by a *data position* (prompts consumed so far), so a resumed run
asks for the same prompts it would have seen without the interruption, epoch boundaries
included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aepo.rewards import math_reward
from aepo.tasks.builtin import builtin_task


@dataclass(frozen=True)
class Prompt:
    text: str
    ground_truth: Any


class PromptSource(Protocol):
    def take(self, position: int, count: int) -> list[Prompt]: ...

    def reward(self, response: str, ground_truth: Any) -> float: ...


class BuiltinTaskPrompts:
    """A built-in task's prompts drawn uniformly, seeded by (seed, position): an endless,
    replayable stream."""

    def __init__(self, task: str, seed: int):
        self.task = builtin_task(task)
        self.seed = seed

    def take(self, position: int, count: int) -> list[Prompt]:
        rng = np.random.default_rng([self.seed, position])
        return [Prompt(self.task.prompt_text(t), t) for t in self.task.sample_targets(rng, count)]

    def reward(self, response: str, ground_truth: Any) -> float:
        return self.task.reward(response, ground_truth)


class DigitSumPrompts(BuiltinTaskPrompts):
    def __init__(self, seed: int):
        super().__init__("digit_sum", seed)


class RowError(ValueError):
    """What is wrong with one row of a dataset (the caller adds the file and row)."""


def _chat_messages(value: Any) -> list[dict[str, Any]]:
    """verl's ``prompt``: a list of ``{role, content}`` messages (numpy arrays in parquet)."""
    if value is None:
        raise RowError("prompt is null")
    if isinstance(value, str):
        raise RowError(
            "prompt is a plain string; verl's schema wants a list of chat messages "
            "[{role, content}] ('aepo data prepare' writes that)"
        )
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise RowError(f"prompt should be a non-empty list of chat messages, got {value!r:.60}")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise RowError(
                f"prompt[{i}] should be a {{role, content}} mapping, got {message!r:.60}"
            )
        if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            raise RowError(f"prompt[{i}] needs text 'role' and 'content', got {message!r:.80}")
        messages.append(dict(message))
    return messages


def _ground_truth(reward_model: Any) -> str:
    if not isinstance(reward_model, dict):
        what = "null" if reward_model is None else f"a {type(reward_model).__name__}"
        raise RowError(f"reward_model is {what}, not a mapping with 'ground_truth'")
    truth = reward_model.get("ground_truth")
    if truth is None:
        why = "null" if "ground_truth" in reward_model else "missing"
        raise RowError(f"reward_model.ground_truth is {why}")
    text = str(truth)
    if not text.strip():
        raise RowError("reward_model.ground_truth is empty: no answer can match it")
    return text


class ParquetPrompts:
    """Rows of a verl RL parquet (``prompt`` = chat messages, ``reward_model.ground_truth``),
    reshuffled every epoch with a seed, scored by the math reward."""

    def __init__(self, path: str | Path, tokenizer, seed: int, apply_chat_template: bool):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"dataset not found: {path}")
        import pandas as pd

        try:
            frame = pd.read_parquet(path, columns=["prompt", "reward_model"])
        except Exception as err:  # pyarrow raises several types for bad files and columns
            raise ValueError(
                f"cannot read {path} as a verl RL parquet (needs 'prompt' and "
                f"'reward_model' columns): {err}"
            ) from err
        if len(frame) == 0:
            raise ValueError(f"dataset {path} has no rows")
        self.path = path
        self.seed = seed
        self.texts: list[str] = []
        self.answers: list[str] = []
        problems: list[str] = []
        # Row numbers are 1-based, as in ``aepo data`` (aepo/data/rows.py).
        for row, (messages, reward_model) in enumerate(
            zip(frame["prompt"], frame["reward_model"], strict=True), start=1
        ):
            try:
                self.texts.append(self._render(messages, tokenizer, apply_chat_template))
                self.answers.append(_ground_truth(reward_model))
            except RowError as err:
                problems.append(f"row {row}: {err}")
        if problems:
            more = f" (and {len(problems) - 1} more bad rows)" if len(problems) > 1 else ""
            raise ValueError(f"{path}: {problems[0]}{more}")
        self._orders: dict[int, np.ndarray] = {}

    @staticmethod
    def _render(messages, tokenizer, apply_chat_template: bool) -> str:
        messages = _chat_messages(messages)
        if apply_chat_template and tokenizer.chat_template:
            try:
                return tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
            except Exception as err:  # jinja templates raise their own error types
                raise RowError(f"the chat template fails on this prompt: {err}") from err
        return "\n".join(m["content"] for m in messages)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {
                epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.texts))
            }
        return self._orders[epoch]

    def take(self, position: int, count: int) -> list[Prompt]:
        size = len(self.texts)
        out = []
        for pos in range(position, position + count):
            epoch, offset = divmod(pos, size)
            i = int(self._order(epoch)[offset])
            out.append(Prompt(self.texts[i], self.answers[i]))
        return out

    def reward(self, response: str, ground_truth: Any) -> float:
        # math_reward imports math-verify (slow, unused by the built-in task) only on first use.
        return math_reward.score(response, ground_truth).score
