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
from aepo.tasks import digit_sum


@dataclass(frozen=True)
class Prompt:
    text: str
    ground_truth: Any


class PromptSource(Protocol):
    def take(self, position: int, count: int) -> list[Prompt]: ...

    def reward(self, response: str, ground_truth: Any) -> float: ...


class DigitSumPrompts:
    """Targets drawn uniformly, seeded by (seed, position): an endless, replayable stream."""

    def __init__(self, seed: int):
        self.seed = seed

    def take(self, position: int, count: int) -> list[Prompt]:
        rng = np.random.default_rng([self.seed, position])
        return [Prompt(digit_sum.prompt_text(t), t) for t in digit_sum.sample_targets(rng, count)]

    def reward(self, response: str, ground_truth: Any) -> float:
        return digit_sum.reward(response, ground_truth)


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
        self.texts = [
            self._render(messages, tokenizer, apply_chat_template) for messages in frame["prompt"]
        ]
        self.answers = [str(rm["ground_truth"]) for rm in frame["reward_model"]]
        self._orders: dict[int, np.ndarray] = {}

    @staticmethod
    def _render(messages, tokenizer, apply_chat_template: bool) -> str:
        messages = [dict(m) for m in messages]
        if apply_chat_template and tokenizer.chat_template:
            return tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
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
