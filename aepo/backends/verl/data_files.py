"""The training and validation files, checked before Ray starts: a missing file, a column
verl's dataset or reward manager reads, or a set too small for one batch is named here,
not hours later in a Ray worker's traceback."""

from __future__ import annotations

import logging
from pathlib import Path

from aepo.core import ConfigError

logger = logging.getLogger(__name__)

# verl's rule-based reward managers read these per row (reward_loop/reward_manager/naive.py).
REWARD_COLUMNS = ("data_source", "reward_model.ground_truth")
READABLE_SUFFIXES = (".parquet", ".json", ".jsonl")  # rl_dataset.py


def prompts_per_step(config) -> int:
    """Prompts the train loader yields per step (ray_trainer.py reads the same keys)."""
    return int(config.data.get("gen_batch_size") or config.data.train_batch_size)


def check_data_files(config, *, count_kept_rows: bool = True) -> int | None:
    """The training and validation files exist, are formats verl reads, carry the columns
    its dataset and reward manager read, have no null prompt, and the training set fills at
    least one batch once verl has dropped the overlong prompts (``count_kept_rows``: with the
    model's tokenizer when it is on this machine). Raises ConfigError naming each file.
    Remote files (``hdfs://``) are verl's to fetch. Returns the training rows verl keeps
    (None when a file's count is unknown)."""
    problems: list[str] = []
    train_prompts: list | None = []
    for key in ("train_files", "val_files"):
        for path in as_list(config.data.get(key)):
            found, prompts = _data_file_problems(f"data.{key}", str(path), config)
            problems += found
            if key == "train_files":
                # verl concatenates the training files before it samples and filters.
                known = prompts is not None and train_prompts is not None
                train_prompts = train_prompts + prompts if known else None
    train_rows = None
    if not problems and train_prompts is not None:
        tokenizer = _local_tokenizer(config) if count_kept_rows else None
        train_rows = _rows_verl_keeps(train_prompts, config, tokenizer, quiet=not count_kept_rows)
        problems += loader_rows_problems(config, train_rows)
    if problems:
        raise ConfigError("cannot start AEPO training:\n  " + "\n  ".join(problems))
    return train_rows


def loader_rows_problems(config, rows: int) -> list[str]:
    """The training set must fill one batch once verl has dropped the overlong prompts."""
    batch = prompts_per_step(config)
    if rows >= batch:
        return []
    return [
        f"data.train_files hold {rows} rows verl keeps (prompts of at most "
        f"data.max_prompt_length = {config.data.max_prompt_length} tokens with the chat "
        f"template), fewer than data.train_batch_size = {batch}: verl's loader drops the "
        "incomplete batch, so no step would run"
    ]


def as_list(files) -> list:
    if files is None:
        return []
    return [files] if isinstance(files, str) else list(files)


def _data_file_problems(key: str, path: str, config) -> tuple[list[str], list | None]:
    """Problems with one data file, and its prompts (None when unknown or unreadable)."""
    if "://" in path:
        return [], None
    file = Path(path).expanduser()
    if not file.is_file():
        return [f"{key}: {file} not found (write it with `aepo data prepare`, see README)"], None
    if not file.name.endswith(READABLE_SUFFIXES):
        return [f"{key}: {file}: verl reads only {', '.join(READABLE_SUFFIXES)} files"], None
    if file.suffix != ".parquet":
        return [], None
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_metadata(file)
        schema = metadata.schema.to_arrow_schema()
    except Exception as err:  # pyarrow raises several types for a damaged file
        return [f"{key}: {file}: unreadable parquet ({err})"], None
    prompt_key = str(config.data.get("prompt_key") or "prompt")
    needed = [prompt_key]
    if (config.reward.get("custom_reward_function") or {}).get("path"):
        needed += REWARD_COLUMNS
    missing = [column for column in needed if not _has_column(schema, column)]
    if missing:
        return [
            f"{key}: {file} lacks column(s) {', '.join(missing)} of verl's RL schema "
            "(`aepo data prepare` writes them)"
        ], None
    prompts = pq.read_table(file, columns=[prompt_key]).column(prompt_key).to_pylist()
    nulls = [row for row, prompt in enumerate(prompts) if prompt is None]
    if nulls:
        more = f" (and {len(nulls) - 1} more)" if len(nulls) > 1 else ""
        return [
            f"{key}: {file} row {nulls[0]}{more}: {prompt_key} is null (verl would drop the "
            "row with a traceback); fix or drop it"
        ], None
    return [], prompts


def _rows_verl_keeps(prompts: list, config, tokenizer, *, quiet: bool = False) -> int:
    """How many rows verl's RLHFDataset keeps: ``train_max_samples`` first, then the prompts
    whose chat-templated length fits ``max_prompt_length`` (verl 0.9.1
    ``utils/dataset/rl_dataset.py``, same tokenizer and
    ``apply_chat_template_kwargs``). A row the template fails on counts as dropped, as there."""
    import numpy as np

    data = config.data
    most = int(data.get("train_max_samples", -1) or -1)
    if 0 < most < len(prompts):
        if data.get("shuffle", False):
            seed = data.get("seed")
            rng = np.random.default_rng(*((seed,) if seed is not None else ()))
            prompts = [prompts[i] for i in rng.choice(len(prompts), size=most, replace=False)]
        else:
            prompts = prompts[:most]
    if not data.get("filter_overlong_prompts", True):
        return len(prompts)
    if tokenizer is None:
        if quiet:
            return len(prompts)
        logger.warning(
            "data.train_files: %d rows counted before verl's overlong-prompt filter (no "
            "tokenizer for actor_rollout_ref.model.path on this machine)",
            len(prompts),
        )
        return len(prompts)
    kwargs = dict(data.get("apply_chat_template_kwargs") or {})
    for verl_sets in ("tokenize", "return_dict", "return_tensors"):
        kwargs.pop(verl_sets, None)
    limit = int(data.max_prompt_length)
    # verl tokenizes each row with apply_chat_template(tokenize=True), which renders the
    # template and then encodes the text without special tokens. Rendering row by row and
    # encoding all rows in one call gives the same lengths in under half the time: 17k DAPO
    # prompts are most of a dry run's minute.
    rendered = []
    for prompt in prompts:
        try:
            text = tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=False, **kwargs
            )
        except Exception:  # verl counts a failing row as too long and drops it
            continue
        rendered.append(text)
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"] if rendered else []
    kept = sum(len(row) <= limit for row in ids)
    if kept < len(prompts):
        logger.warning(
            "data.train_files: verl drops %d of %d prompts longer than "
            "data.max_prompt_length = %d tokens with the chat template",
            len(prompts) - kept,
            len(prompts),
            limit,
        )
    return kept


def _local_tokenizer(config):
    """The tokenizer verl's task runner will load (``HFModelConfig``: ``tokenizer_path`` or
    the model path, ``custom_chat_template``), if it is on this machine; None otherwise
    (nothing is downloaded for a check)."""
    if not config.data.get("filter_overlong_prompts", True):
        return None
    model = config.actor_rollout_ref.model
    path = str(model.get("tokenizer_path") or model.path)
    if "://" in path:
        return None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(Path(path).expanduser()) if Path(path).expanduser().exists() else path,
            trust_remote_code=bool(model.get("trust_remote_code", False)),
            local_files_only=True,
        )
    except Exception as err:  # no tokenizer files here, or a hub id not in the cache
        logger.info("no tokenizer for %s on this machine (%s)", path, err)
        return None
    if model.get("custom_chat_template"):
        tokenizer.chat_template = model.custom_chat_template
    return tokenizer


def _has_column(schema, dotted: str) -> bool:
    import pyarrow as pa

    name, _, field = dotted.partition(".")
    if name not in schema.names:
        return False
    if not field:
        return True
    kind = schema.field(name).type
    return pa.types.is_struct(kind) and kind.get_field_index(field) >= 0
