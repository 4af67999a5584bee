"""Models are local Hugging Face directories: nothing is ever downloaded at run time."""

from __future__ import annotations

from pathlib import Path


class ModelPathError(FileNotFoundError):
    """The model directory is missing or is not a Hugging Face model; the message names it."""


def require_model_dir(model: str | Path) -> Path:
    model = Path(model).expanduser()
    if not model.is_dir():
        raise ModelPathError(
            f"model directory not found: {model} (a local Hugging Face model directory is "
            "needed; nothing is downloaded)"
        )
    if not (model / "config.json").is_file():
        raise ModelPathError(f"{model} has no config.json: not a Hugging Face model directory")
    return model


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")


def missing_model_parts(model: Path, tokenizer: Path | None = None) -> list[str]:
    """What a Hugging Face model directory lacks of config, tokenizer and weights (the three
    ``from_pretrained`` reads), as words for one error line; ``tokenizer``: where the tokenizer
    lives when not in ``model``. Only file names are checked: nothing is loaded."""
    tokenizer = tokenizer or model
    missing = []
    if not (model / "config.json").is_file():
        missing.append("config.json")
    if not any((tokenizer / name).is_file() for name in TOKENIZER_FILES):
        where = "" if tokenizer == model else f" in {tokenizer}"
        missing.append(f"a tokenizer{where} ({', '.join(TOKENIZER_FILES)})")
    if not any(next(model.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    return missing


def resolve_device(name: str):
    """The ``torch.device`` a ``device`` setting names; ``auto`` is the GPU when there is one."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_causal_lm(model: Path, *, dtype: str = "auto", device=None):
    """``(model, tokenizer)`` from a directory checked by :func:`require_model_dir`, with the
    tokenizer set up for batched generation: left padding (generation continues from the
    right end) and the eos token as pad token when it has none. ``dtype``: ``auto`` or a
    torch dtype name; ``device``: where to move the model (None: leave it on the CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    lm = AutoModelForCausalLM.from_pretrained(model, local_files_only=True, dtype=torch_dtype)
    return (lm if device is None else lm.to(device)), tokenizer


def silence_transformers_progress() -> None:
    """For ``--no-progress``: transformers draws its own bars when it loads and saves."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
