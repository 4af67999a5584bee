"""The instruction appended to every problem: reason inside ``<think>``, answer in ``\\boxed{}``.

The authors trained with EasyR1's math prompt (``examples/format_prompt/math.jinja``), which
asks for exactly this; the reward reads the last ``\\boxed{}``, so the same wording is used
for training data and evaluation prompts.
"""

from __future__ import annotations

FORMAT_INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue and then provide "
    "the final answer. The reasoning process MUST BE enclosed within <think> </think> tags. "
    "The final answer MUST BE put in \\boxed{}."
)


def user_message(problem: str, instruction: str | None = FORMAT_INSTRUCTION) -> str:
    """The text of the single user turn: the problem, then the instruction."""
    problem = problem.strip()
    return f"{problem} {instruction}" if instruction else problem


def chat_prompt(problem: str, instruction: str | None = FORMAT_INSTRUCTION) -> list[dict[str, str]]:
    """verl's ``prompt`` field: a one-turn chat."""
    return [{"role": "user", "content": user_message(problem, instruction)}]
