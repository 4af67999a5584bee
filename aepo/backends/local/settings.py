"""The local engine's own settings and the YAML run file that holds them.

A run file has two sections: ``aepo:`` (validated by :func:`aepo.core.load_aepo_config`,
shared with the verl engine) and ``trainer:`` (this engine: model, data, batch, optimiser,
logging). Both reject unknown keys and name the file and key in their errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aepo.core import AEPOConfig, ConfigError, load_aepo_config
from aepo.core.config import validation_problems
from aepo.tasks.warm_start import WarmStartSettings

BUILTIN = "builtin"


class TrainerSettings(BaseModel):
    # .inf and .nan are valid YAML floats; no setting of this engine means anything with them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str = Field(
        BUILTIN, description="'builtin' (warm-started tiny Llama) or a local HF causal-LM dir"
    )
    data: str = Field(
        BUILTIN, description="'builtin' (digit-sum task) or a verl-schema parquet file"
    )
    output_dir: str = "runs/local"
    steps: int = Field(150, ge=1)
    prompts_per_step: int = Field(32, ge=1)
    samples_per_prompt: int = Field(8, ge=2, description="n: GRPO group size")
    max_new_tokens: int = Field(4, ge=1)
    max_prompt_length: int = Field(1024, ge=1, description="longer prompts keep their end")
    lr: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    mini_batches: int = Field(4, ge=1, description="optimizer steps per epoch over a batch")
    ppo_epochs: int = Field(1, ge=1)
    loss_agg: Literal["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum"] = (
        "token-mean"
    )
    seed: int = 0
    save_every: int = Field(50, ge=0, description="checkpoint every N steps (0: only at the end)")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    torch_threads: int | None = Field(None, ge=1)
    entropy_chunk_rows: int = Field(64, ge=1)
    apply_chat_template: bool = Field(
        True, description="parquet data: format with the chat template"
    )
    warm_start: WarmStartSettings = Field(default_factory=WarmStartSettings)
    cache_dir: str | None = Field(None, description="warm-start cache (default ~/.cache/aepo)")
    progress: bool = True


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aepo: AEPOConfig
    trainer: TrainerSettings


def load_trainer_settings(raw: dict[str, Any] | None, source: str = "trainer") -> TrainerSettings:
    try:
        return TrainerSettings.model_validate(dict(raw or {}))
    except ValidationError as err:
        raise ConfigError(
            "invalid trainer settings:\n  " + validation_problems(err, source)
        ) from None


def run_config_from_dict(raw: Any, source: str) -> RunConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with 'aepo:' and 'trainer:' sections")
    unknown = sorted(set(raw) - {"aepo", "trainer"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {unknown}; expected 'aepo:' and 'trainer:'"
        )
    for section in ("aepo", "trainer"):
        if raw.get(section) is not None and not isinstance(raw[section], dict):
            raise ConfigError(f"{source}:{section}: expected a mapping, got {raw[section]!r}")
    aepo = load_aepo_config(raw.get("aepo"), source=f"{source}:aepo")
    trainer = load_trainer_settings(raw.get("trainer"), source=f"{source}:trainer")
    return RunConfig(aepo=aepo, trainer=trainer)


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run file; every error names the file (and key)."""
    from aepo.backends.local.run_file import RunFileError, read_run_file

    try:
        raw = read_run_file(path)
    except RunFileError as err:
        raise ConfigError(str(err)) from None
    return run_config_from_dict(raw, source=str(path))
