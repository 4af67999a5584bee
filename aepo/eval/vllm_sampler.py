"""Sampling with vLLM (the ``gpu`` extra), tensor parallel across the visible GPUs.

vLLM is imported inside the constructor so that ``aepo eval`` and its imports work on
machines without it. Only vLLM's documented offline API is used: ``LLM(model=...,
tensor_parallel_size=..., enforce_eager=...)``, ``LLM.get_tokenizer()``, ``LLM.generate(prompts,
SamplingParams(...))`` and ``RequestOutput.outputs[i].text``.
"""

from __future__ import annotations

from pathlib import Path

from aepo.eval.sampling import ChatTemplatePrompts, SamplingSettings
from aepo.model_dir import require_model_dir


class VLLMSampler(ChatTemplatePrompts):
    def __init__(
        self,
        model: Path,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        use_chat_template: bool = True,
        enforce_eager: bool = False,
    ) -> None:
        model = require_model_dir(model)
        try:
            from vllm import LLM
        except ImportError as error:
            raise ImportError(
                "the vllm backend needs vLLM: pip install 'aepo[gpu]' (or use --backend hf)"
            ) from error
        self.llm = LLM(
            model=str(model),
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            seed=seed,
            enforce_eager=enforce_eager,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.templated = use_chat_template and bool(getattr(self.tokenizer, "chat_template", None))

    def sample(self, prompts: list[str], settings: SamplingSettings, seed: int) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=settings.n,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            seed=seed,
        )
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[completion.text for completion in output.outputs] for output in outputs]
