"""The training and validation files, checked before Ray starts: a missing file, a column
verl's dataset or reward manager reads, or a set too small for one batch is named here,
not hours later in a Ray worker's traceback."""

from __future__ import annotations

from pathlib import Path

from aepo.core import ConfigError

# verl's rule-based reward managers read these per row (reward_loop/reward_manager/naive.py:42-43).
REWARD_COLUMNS = ("data_source", "reward_model.ground_truth")
READABLE_SUFFIXES = (".parquet", ".json", ".jsonl")  # rl_dataset.py:173-178


def prompts_per_step(config) -> int:
    """Prompts the train loader yields per step (ray_trainer.py:407 reads the same keys)."""
    return int(config.data.get("gen_batch_size") or config.data.train_batch_size)


def check_data_files(config) -> int | None:
    """The training and validation files exist, are formats verl reads, carry the columns
    its dataset and reward manager read, and the training set fills at least one batch.
    Raises ConfigError naming each file. Remote files (``hdfs://``) are verl's to fetch.
    Returns the training rows (None when a file's count is unknown)."""
    problems: list[str] = []
    train_rows = 0
    for key in ("train_files", "val_files"):
        for path in as_list(config.data.get(key)):
            found, rows = _data_file_problems(f"data.{key}", str(path), config)
            problems += found
            if key == "train_files":
                train_rows = None if rows is None or train_rows is None else train_rows + rows
    batch = prompts_per_step(config)
    if not problems and train_rows is not None and train_rows < batch:
        problems.append(
            f"data.train_files hold {train_rows} rows, fewer than data.train_batch_size = "
            f"{batch}: verl's loader drops the incomplete batch, so no step would run"
        )
    if problems:
        raise ConfigError("cannot start AEPO training:\n  " + "\n  ".join(problems))
    return train_rows


def as_list(files) -> list:
    if files is None:
        return []
    return [files] if isinstance(files, str) else list(files)


def _data_file_problems(key: str, path: str, config) -> tuple[list[str], int | None]:
    """Problems with one data file, and its row count (None when unknown)."""
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
    needed = [str(config.data.get("prompt_key") or "prompt")]
    if (config.reward.get("custom_reward_function") or {}).get("path"):
        needed += REWARD_COLUMNS
    missing = [column for column in needed if not _has_column(schema, column)]
    if missing:
        return [
            f"{key}: {file} lacks column(s) {', '.join(missing)} of verl's RL schema "
            "(`aepo data prepare` writes them)"
        ], metadata.num_rows
    return [], metadata.num_rows


def _has_column(schema, dotted: str) -> bool:
    import pyarrow as pa

    name, _, field = dotted.partition(".")
    if name not in schema.names:
        return False
    if not field:
        return True
    kind = schema.field(name).type
    return pa.types.is_struct(kind) and kind.get_field_index(field) >= 0
