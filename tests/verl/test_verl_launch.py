"""What a user meets before any GPU is allocated: the data and model checks of the launcher,
and the example scripts themselves, run as the README runs them (dry run: every check,
then exit before Ray starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("verl")

from hydra import compose, initialize_config_module  # noqa: E402

from aepo.backends.verl.data_files import check_data_files  # noqa: E402
from aepo.backends.verl.startup import check_config  # noqa: E402
from aepo.cli import main as aepo_cli  # noqa: E402
from aepo.core import ConfigError  # noqa: E402
from tests.conftest import PROJECT_ROOT, model_dir  # noqa: E402
from tests.readme_commands import in_a_user_folder, readme_commands  # noqa: E402


def compose_with(*overrides: str):
    with initialize_config_module("aepo.backends.verl.config", version_base=None):
        return compose("aepo_trainer", overrides=list(overrides))


def write_rows(path: Path, rows: int, *, ground_truth: bool = True) -> Path:
    reward_model = {"style": "rule", "ground_truth": "1"} if ground_truth else {"style": "rule"}
    table = pa.Table.from_pylist(
        [
            {
                "data_source": "toy",
                "prompt": [{"role": "user", "content": f"{i} + 1 - {i}?"}],
                "reward_model": reward_model,
            }
            for i in range(rows)
        ]
    )
    pq.write_table(table, path)
    return path


def data_overrides(train: Path, val: Path, batch: int = 4) -> list[str]:
    return [
        f"data.train_files={train}",
        f"data.val_files={val}",
        f"data.train_batch_size={batch}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    ]


def test_good_files_pass_and_report_the_training_rows(tmp_path):
    train = write_rows(tmp_path / "train.parquet", 10)
    val = write_rows(tmp_path / "val.parquet", 3)
    assert check_data_files(compose_with(*data_overrides(train, val))) == 10
    # verl also reads JSON lines; their rows are not counted without reading the file.
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("{}\n")
    assert check_data_files(compose_with(*data_overrides(jsonl, val))) is None


@pytest.mark.parametrize(
    ("make_file", "message"),
    [
        (lambda d: d / "absent.parquet", r"data.train_files: .*absent.parquet not found"),
        (
            lambda d: write_rows(d / "no_answer.parquet", 10, ground_truth=False),
            r"no_answer.parquet lacks column\(s\) reward_model.ground_truth",
        ),
        (
            lambda d: write_rows(d / "small.parquet", 3),
            r"hold 3 rows verl keeps .*, fewer than .* = 4",
        ),
        (
            lambda d: (d / "broken.parquet").write_bytes(b"not parquet") and d / "broken.parquet",
            r"broken.parquet: unreadable parquet",
        ),
        (
            lambda d: (d / "train.csv").write_text("a,b\n") and d / "train.csv",
            r"train.csv: verl reads only .parquet, .json, .jsonl",
        ),
    ],
    ids=["missing", "no-ground-truth", "fewer-rows-than-a-batch", "not-parquet", "csv"],
)
def test_bad_training_file_is_refused_naming_key_and_file(tmp_path, make_file, message):
    train = make_file(tmp_path)
    val = write_rows(tmp_path / "val.parquet", 3)
    with pytest.raises(ConfigError, match=message):
        check_data_files(compose_with(*data_overrides(train, val)))


def test_a_prompt_key_the_files_lack_is_named(tmp_path):
    train = write_rows(tmp_path / "train.parquet", 10)
    val = write_rows(tmp_path / "val.parquet", 3)
    config = compose_with(*data_overrides(train, val), "data.prompt_key=question")
    with pytest.raises(ConfigError, match=r"data.val_files: .*lacks column\(s\) question"):
        check_data_files(config)


def test_launch_checks_then_hands_our_task_runner_to_run_ppo(tmp_path, monkeypatch, capsys):
    import verl.trainer.main_ppo as verl_main_ppo

    from aepo.backends.verl.main import DRY_RUN_VARIABLE, launch
    from aepo.backends.verl.task_runner import AEPOTaskRunner

    handed = {}
    monkeypatch.setattr(
        verl_main_ppo,
        "run_ppo",
        lambda config, task_runner_class: handed.update(runner=task_runner_class),
    )
    files = data_overrides(
        write_rows(tmp_path / "train.parquet", 20), write_rows(tmp_path / "val.parquet", 3), batch=8
    )
    with pytest.raises(ConfigError):
        launch(compose_with(*files, "actor_rollout_ref.rollout.temperature=0.7"))
    with pytest.raises(ConfigError):
        launch(compose_with(*files[1:], f"data.train_files={tmp_path / 'absent.parquet'}"))
    monkeypatch.setenv(DRY_RUN_VARIABLE, "1")
    with pytest.raises(ConfigError, match=r"aepo\.alpha"):  # the dry run checks it too
        launch(compose_with(*files, "aepo.alpha=nan"))
    launch(compose_with(*files))
    assert not handed, "a bad config and a dry run must stop before Ray starts"
    assert "20 rows, 2 steps per epoch" in capsys.readouterr().out
    monkeypatch.delenv(DRY_RUN_VARIABLE)
    launch(compose_with(*files))
    assert handed["runner"].__ray_actor_class__ is AEPOTaskRunner


def test_relative_local_paths_reach_ray_absolute(tmp_path, monkeypatch, capsys):
    """A cluster's Ray workers do not run in the launching shell's directory."""
    from aepo.backends.verl.main import DRY_RUN_VARIABLE, launch

    model_dir(tmp_path / "model", {"max_position_embeddings": 32768})
    write_rows(tmp_path / "train.parquet", 16)
    write_rows(tmp_path / "val.parquet", 3)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DRY_RUN_VARIABLE, "1")
    config = compose_with(
        *data_overrides(Path("train.parquet"), Path("val.parquet"), batch=8),
        "data.val_files=[val.parquet,hdfs://cluster/val.parquet]",
        "actor_rollout_ref.model.path=model",
    )
    launch(config)
    assert config.actor_rollout_ref.model.path == str(tmp_path / "model")
    assert config.data.train_files == str(tmp_path / "train.parquet")
    assert list(config.data.val_files) == [
        str(tmp_path / "val.parquet"),
        "hdfs://cluster/val.parquet",
    ]
    assert f"model        {tmp_path / 'model'}" in capsys.readouterr().out


DATA = ["data.train_files=/data/train.parquet", "data.val_files=/data/val.parquet"]


def test_a_missing_local_model_directory_is_refused_before_ray(tmp_path):
    with pytest.raises(
        ConfigError, match=r"actor_rollout_ref.model.path: model directory not found"
    ):
        check_config(compose_with(*DATA, f"actor_rollout_ref.model.path={tmp_path / 'typo'}"))


def fake_hub_cache(cache: Path, repo_id: str, model_config: dict) -> None:
    """The layout ``huggingface-cli download`` leaves behind (refs/main -> snapshot)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(model_config))


def test_a_hub_id_in_the_local_cache_gets_the_context_length_check(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    fake_hub_cache(tmp_path, "Qwen/Qwen2.5-Math-7B", {"max_position_embeddings": 4096})
    with pytest.raises(ConfigError, match=r"= 10240 exceeds\s+max_position_embeddings = 4096"):
        # The default model path is the hub id.
        check_config(compose_with(*DATA, "data.max_response_length=8192"))
    # Not cached: only vLLM can tell, so the launch goes on (with a warning).
    check_config(compose_with(*DATA, "actor_rollout_ref.model.path=someone/uncached-model"))


@pytest.fixture(scope="module")
def readme_data(tmp_path_factory) -> Path:
    """The GPU section's `aepo data prepare` commands as the README writes them, run in a
    folder whose data/ is the repository's: the training set and the validation set the
    example scripts read from outputs/data."""
    commands = readme_commands("Training on GPUs", "aepo data prepare")
    assert [c[3] for c in commands] == ["data/train/dapo17k.parquet", "--benchmarks"]
    with in_a_user_folder(tmp_path_factory.mktemp("user")) as folder:
        for command in commands:
            assert aepo_cli(command[1:]) == 0, command
    out = folder / "outputs" / "data"
    assert sorted(p.name for p in out.iterdir()) == ["dapo17k.parquet", "val.parquet"]
    return out


def run_example(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["bash", str(PROJECT_ROOT / "examples" / script), *args],
        env={**os.environ, "PATH": path, "AEPO_DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_shipped_command_starts_on_the_stock_model_and_the_papers_length_is_caught(
    readme_data, tmp_path
):
    """`MODEL_PATH=... bash examples/qwen-math-7b-AEPO.sh 0.75` as in the README, with a copy
    of Qwen2.5-Math-7B's config.json (4096 positions): as shipped (2048 + 2048 tokens, the
    authors' released setting) it goes through every check; the paper's 2048 + 8192 is
    refused with the remedy."""
    model = model_dir(tmp_path / "Qwen2.5-Math-7B", {"max_position_embeddings": 4096})
    env = {
        "MODEL_PATH": str(model),
        "DATA_DIR": str(readme_data),
        "OUTPUT_DIR": str(tmp_path / "run"),
        "TENSORBOARD_DIR": str(tmp_path / "tb"),
    }
    planned = run_example("qwen-math-7b-AEPO.sh", "0.75", env=env)
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
    out = planned.stdout
    assert "every start-up check passed; Ray was not started" in out
    assert "aepo (target entropy 0.75, T_high 1.2 / T_low 0.8, 60/30 samples)" in out
    assert "prompt 2048 + response 2048 tokens" in out
    # 17,267 prepared prompts, less the 22 that verl's overlong-prompt filter drops with this
    # model's tokenizer (the tiny model's: one token per character, so a prompt over 2048
    # characters is too long), / 512 per step; the absolute TensorBoard directory reached
    # the Ray runtime environment through the script's `+ray_kwargs...` override.
    assert "17245 rows, 33 steps per epoch x 10 epochs" in out
    assert f"TensorBoard  {tmp_path / 'tb'}" in out
    assert f"checkpoints  {tmp_path / 'run' / 'checkpoints'}" in out

    refused = run_example("qwen-math-7b-AEPO.sh", "0.75", "data.max_response_length=8192", env=env)
    assert refused.returncode == 2
    assert "aepo: cannot start AEPO training:" in refused.stdout
    assert "= 10240 exceeds max_position_embeddings = 4096" in refused.stdout
    assert "rope_theta" in refused.stdout
    assert "Traceback" not in refused.stdout  # a user's mistake, not a crash
    # Both runs are kept in the log: re-running the command resumes.
    log = (tmp_path / "run" / "train.log").read_text()
    assert "max_position_embeddings = 4096" in log and "Ray was not started" in log


def test_model_path_is_a_hub_id_or_a_complete_local_directory(readme_data, tmp_path):
    """MODEL_PATH in the examples: the dry run says which kind it is, and a local directory
    must hold config, tokenizer and weights (the tiny model saved with save_pretrained; then
    the same directory with its tokenizer and weights removed). The local run is also the
    GRPO script's plan of the baseline."""
    model = model_dir(tmp_path / "model", {"max_position_embeddings": 32768})
    env = {
        "DATA_DIR": str(readme_data),
        "OUTPUT_DIR": str(tmp_path / "run"),
        "TENSORBOARD_DIR": str(tmp_path / "tb"),
    }
    local = run_example("qwen-math-7b-GRPO.sh", env={**env, "MODEL_PATH": str(model)})
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    assert f"{model} (local directory: config, tokenizer and weights found)" in local.stdout
    # the GRPO script plans the baseline at the AEPO script's lengths
    assert "algorithm    grpo\n" in local.stdout
    assert "prompt 2048 + response 2048 tokens" in local.stdout

    # A hub id that is not cached here: the plan says so, the launch would go on.
    hub = run_example("qwen-math-7b-GRPO.sh", env={**env, "MODEL_PATH": "someone/uncached-7b"})
    assert hub.returncode == 0, hub.stdout[-3000:] + hub.stderr[-3000:]
    assert "someone/uncached-7b (Hugging Face hub id: downloaded on each node" in hub.stdout

    for weights in model.glob("*.safetensors"):
        weights.unlink()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink(missing_ok=True)
    broken = run_example("qwen-math-7b-GRPO.sh", env={**env, "MODEL_PATH": str(model)})
    assert broken.returncode == 2
    (line,) = [line for line in broken.stdout.splitlines() if "model.path" in line]
    assert f"local model directory {model} has no a tokenizer" in line
    assert "and no weights (*.safetensors or pytorch_model*.bin)" in line
    assert "Traceback" not in broken.stdout


def test_a_target_without_a_config_lists_the_shipped_ones():
    result = run_example("qwen-math-7b-AEPO.sh", "0.50", env={})
    assert result.returncode == 2
    assert "no config" in result.stderr and "aepo_h0.50.yaml" in result.stderr
    assert " aepo_h0.5 " in result.stderr and " entropy_reg " in result.stderr
