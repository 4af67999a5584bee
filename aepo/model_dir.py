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
