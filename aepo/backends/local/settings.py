"""The local engine's own settings and the YAML run file that holds them.

A run file has two sections: ``aepo:`` (validated by :func:`aepo.core.load_aepo_config`,
shared with the verl engine) and ``trainer:`` (this engine: model, data, batch, optimiser,
logging). Both reject unknown keys and name the file and key in their errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aepo.core import AEPOConfig, ConfigError, load_aepo_config
from aepo.core.config import validation_problems
from aepo.tasks.builtin import BUILTIN_TASKS, DEFAULT_TASK
from aepo.tasks.warm_start import WarmStartSettings

BUILTIN = "builtin"
BUILTIN_PREFIX = BUILTIN + ":"


def builtin_task_name(data: str) -> str | None:
    """The built-in task a ``trainer.data`` value names (``builtin`` is the default task),
    or None for a parquet path."""
    if data == BUILTIN:
        return DEFAULT_TASK
    if data.startswith(BUILTIN_PREFIX):
        return data[len(BUILTIN_PREFIX) :]
    return None


class TrainerSettings(BaseModel):
    # .inf and .nan are valid YAML floats; no setting of this engine means anything with them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str = Field(
        BUILTIN, description="'builtin' (warm-started tiny Llama) or a local HF causal-LM dir"
    )
    data: str = Field(
        BUILTIN,
        description=f"'builtin' (= 'builtin:{DEFAULT_TASK}'), 'builtin:<task>' (one of "
        f"{', '.join(BUILTIN_TASKS)}) or a verl-schema parquet file",
    )
    output_dir: str = "runs/local"
    steps: int = Field(150, ge=1)
    prompts_per_step: int = Field(32, ge=1)
    samples_per_prompt: int = Field(8, ge=2, description="n: GRPO group size")
    max_new_tokens: int = Field(5, ge=1, description="a built-in task's answer must fit")
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

    @field_validator("data")
    @classmethod
    def _known_builtin_task(cls, data: str) -> str:
        task = builtin_task_name(data)
        if task is not None and task not in BUILTIN_TASKS:
            raise ValueError(
                f"unknown built-in task {task!r}; choose one of "
                f"{[BUILTIN, *(BUILTIN_PREFIX + t for t in BUILTIN_TASKS)]} or a parquet path"
            )
        return data

    @model_validator(mode="after")
    def _answer_fits(self) -> TrainerSettings:
        from aepo.tasks.builtin import builtin_task

        task = self.builtin_task
        if task is not None:
            needed = builtin_task(task).ANSWER_TOKENS
            if self.max_new_tokens < needed:
                raise ValueError(
                    f"max_new_tokens={self.max_new_tokens} cannot hold an answer of the "
                    f"built-in task {task!r} ({needed} tokens with <eos>)"
                )
        return self

    @property
    def builtin_task(self) -> str | None:
        """The built-in task of ``data``; None for a parquet."""
        return builtin_task_name(self.data)

    @property
    def warm_start_task(self) -> str:
        """The task ``model: builtin`` is warm-started on: the data's, else the default."""
        return self.builtin_task or DEFAULT_TASK


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
