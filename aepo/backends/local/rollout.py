"""Sampling with a KV cache (``model.generate``) and the temperature-1 scoring pass.

Every row of a batch has the same shape ``[prompt_len + max_new_tokens]`` (prompts
left-padded, responses right-padded), so GRPO rows and REINFORCE rows can replace each other
by row index (the merge plan) without re-collating.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from aepo.core import token_logprobs_and_entropy


@dataclass
class Rollout:
    prompt_ids: torch.Tensor
    """[B, P] left-padded"""
    prompt_mask: torch.Tensor
    responses: torch.Tensor
    """[B, R] right-padded with pad ids after <eos>"""
    response_mask: torch.Tensor
    """[B, R] 1 for generated tokens up to and including the first <eos>"""

    def __len__(self) -> int:
        return self.responses.shape[0]

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum())

    def select(self, rows: torch.Tensor) -> Rollout:
        return Rollout(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def encode_prompts(
    tokenizer, texts: list[str], max_length: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids; prompts longer than ``max_length`` keep their last tokens
    (the question's end and the generation cue matter most)."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][-max_length:] for t in texts]
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        if x:
            input_ids[row, width - len(x) :] = torch.tensor(x)
            mask[row, width - len(x) :] = 1
    return input_ids.to(device), mask.to(device)


def response_mask_from(responses: torch.Tensor, eos_id: int) -> torch.Tensor:
    is_eos = (responses == eos_id).long()
    eos_before = (is_eos.cumsum(-1) - is_eos) > 0
    return (~eos_before).long()


@torch.no_grad()
def sample(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    temperature: float,
    max_new_tokens: int,
    pad_id: int,
    eos_id: int,
) -> Rollout:
    """One batched sampling call at ``temperature`` over the full vocabulary."""
    if prompt_ids.shape[0] == 0:
        empty = torch.zeros((0, max_new_tokens), dtype=torch.long, device=prompt_ids.device)
        return Rollout(prompt_ids, prompt_mask, empty, empty.clone())
    out = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        do_sample=True,
        temperature=float(temperature),
        # generate's defaults truncate the distribution (top_k 50); the policy's entropy is
        # defined over the whole vocabulary, so sampling must be too.
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
    )
    responses = out[:, prompt_ids.shape[1] :]
    if responses.shape[1] < max_new_tokens:  # every row stopped early
        fill = torch.full(
            (responses.shape[0], max_new_tokens - responses.shape[1]),
            pad_id,
            dtype=responses.dtype,
            device=responses.device,
        )
        responses = torch.cat([responses, fill], dim=1)
    return Rollout(prompt_ids, prompt_mask, responses, response_mask_from(responses, eos_id))


def response_logits(model, batch: Rollout) -> torch.Tensor:
    """Logits that predict each response token, ``[B, R, vocab]``."""
    input_ids = torch.cat([batch.prompt_ids, batch.responses], dim=1)
    attention = torch.cat([batch.prompt_mask, batch.response_mask], dim=1)
    # Same positions as generate() uses for left-padded prompts.
    positions = (attention.cumsum(-1) - 1).clamp_min(0)
    logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions).logits
    start = batch.prompt_ids.shape[1] - 1
    return logits[:, start : start + batch.responses.shape[1]]


def score(
    model,
    batch: Rollout,
    *,
    chunk_rows: int,
    with_entropy: bool = True,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token log-probs (and entropies) of the responses under ``model`` at ``temperature``
    (logits divided by it, as verl's actor does)."""
    logp, ent = [], []
    for start in range(0, len(batch), chunk_rows):
        part = batch.select(torch.arange(start, min(start + chunk_rows, len(batch))))
        lp, en = token_logprobs_and_entropy(
            response_logits(model, part),
            part.responses,
            temperature=temperature,
            chunk_rows=chunk_rows,
            with_entropy=with_entropy,
        )
        logp.append(lp)
        ent.append(en)
    return torch.cat(logp), (torch.cat(ent) if with_entropy else None)


def decode_responses(tokenizer, batch: Rollout) -> list[str]:
    texts = []
    for ids, mask in zip(batch.responses.tolist(), batch.response_mask.tolist(), strict=True):
        kept = [t for t, m in zip(ids, mask, strict=True) if m]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    return texts
