"""What every sampling backend of ``aepo eval`` provides, and the settings it samples with."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

PAPER_MAX_TOKENS = 8192
PAPER_TOP_P = 0.95


@dataclass(frozen=True)
class SamplingSettings:
    """n samples per problem at this temperature/top_p, each at most ``max_tokens`` long."""

    n: int
    temperature: float
    top_p: float = PAPER_TOP_P
    max_tokens: int = PAPER_MAX_TOKENS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")

    def as_dict(self) -> dict:
        return asdict(self)


class Sampler(Protocol):
    """A loaded model that turns prompts into sampled completions."""

    def render(self, user_text: str) -> str:
        """The model input for one user turn (its chat template applied, if it has one)."""
        ...

    def sample(self, prompts: list[str], settings: SamplingSettings, seed: int) -> list[list[str]]:
        """``settings.n`` completions for each prompt, in prompt order."""
        ...


class ChatTemplatePrompts:
    """``render`` for samplers that hold a ``tokenizer`` and a ``templated`` flag."""

    tokenizer: Any
    templated: bool

    def render(self, user_text: str) -> str:
        if not self.templated:
            return user_text
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
        )
