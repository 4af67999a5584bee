"""Built-in task prompts as rows of verl's parquet schema (the columns verl 0.9.1's RL dataset
and naive reward manager read), shared by every built-in task."""

from __future__ import annotations


def verl_rows(data_source: str, ability: str, prompts: list[tuple[str, str]]) -> list[dict]:
    """One row per ``(prompt text, ground truth)``: a one-message chat ``prompt``,
    ``reward_model.ground_truth`` and the row's index in ``extra_info``."""
    return [
        {
            "data_source": data_source,
            "prompt": [{"role": "user", "content": text}],
            "ability": ability,
            "reward_model": {"style": "rule", "ground_truth": truth},
            "extra_info": {"index": i},
        }
        for i, (text, truth) in enumerate(prompts)
    ]
