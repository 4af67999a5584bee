"""Sampling with transformers' ``generate`` on the CPU or one GPU, for any local causal LM."""

from __future__ import annotations

from pathlib import Path

from aepo.eval.sampling import ChatTemplatePrompts, SamplingSettings
from aepo.model_dir import load_causal_lm, require_model_dir, resolve_device


class TransformersSampler(ChatTemplatePrompts):
    """Batched ``model.generate`` with sampling; ``batch_size`` counts sequences, not prompts.

    ``use_chat_template``: wrap each problem as a user turn with the tokenizer's chat template
    (models without one get the raw text).
    """

    def __init__(
        self,
        model: Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        use_chat_template: bool = True,
    ) -> None:
        model = require_model_dir(model)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.model, self.tokenizer = load_causal_lm(model, dtype=dtype, device=self.device)
        self.model.eval()
        self.templated = use_chat_template and bool(getattr(self.tokenizer, "chat_template", None))

    def _generate(self, prompts: list[str], settings: SamplingSettings) -> list[str]:
        import torch

        # A chat template writes its own special tokens (BOS included).
        encoded = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=not self.templated
        ).to(self.device)
        # generate() defaults to top_k=50; vLLM and the paper sample without a top-k cut.
        sampling = (
            {
                "do_sample": True,
                "temperature": settings.temperature,
                "top_p": settings.top_p,
                "top_k": 0,
            }
            if settings.temperature > 0
            else {"do_sample": False}
        )
        with torch.no_grad():
            output = self.model.generate(
                **encoded,
                max_new_tokens=settings.max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def sample(self, prompts: list[str], settings: SamplingSettings, seed: int) -> list[list[str]]:
        import torch

        torch.manual_seed(seed)
        flat = [prompt for prompt in prompts for _ in range(settings.n)]
        texts: list[str] = []
        for start in range(0, len(flat), self.batch_size):
            texts.extend(self._generate(flat[start : start + self.batch_size], settings))
        return [texts[i * settings.n : (i + 1) * settings.n] for i in range(len(prompts))]
