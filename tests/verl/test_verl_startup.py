"""Start-up defects that only a real run on verl 0.9.1 showed: each is now caught before
Ray starts (driver) or before any worker starts (task runner), with the remedy."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("verl")

from omegaconf import OmegaConf  # noqa: E402

from aepo.backends.verl.data_files import check_data_files  # noqa: E402
from aepo.core import ConfigError  # noqa: E402
from aepo.tasks.tiny_model import save_tiny_model  # noqa: E402
from tests.conftest import model_dir  # noqa: E402
from tests.verl.test_verl_launch import compose_with, data_overrides, write_rows  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """The built-in tiny Llama (4096 positions) with its character-level tokenizer and chat
    template ``user: ...\\nassistant: ``."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"))


def run_files(tmp_path: Path) -> list[str]:
    """Data for one step of 8 prompts x n = 8 (room for the 60 REINFORCE samples)."""
    train, val = write_rows(tmp_path / "train.parquet", 8), write_rows(tmp_path / "val.parquet", 2)
    return data_overrides(train, val, batch=8)


# ---- prompt + response against the positions the task runner loads ----------------------


class WorkersWouldStart(Exception):
    pass


def run_task_runner_until_workers(config, monkeypatch, flash_attn: bool = False):
    """``AEPOTaskRunner.run`` in this process, stopped where it would register workers."""
    from aepo.backends.verl import cluster
    from aepo.backends.verl.cluster import NodeReport
    from aepo.backends.verl.task_runner import AEPOTaskRunner

    def no_workers(self, config):
        raise WorkersWouldStart

    monkeypatch.setattr(AEPOTaskRunner, "add_actor_rollout_worker", no_workers)
    monkeypatch.setattr(
        cluster,
        "probe_nodes",
        lambda *args, **kwargs: [NodeReport("127.0.0.1", "here", "0.1.0", None, flash_attn)],
    )
    AEPOTaskRunner().run(config)


def test_the_task_runner_checks_a_model_the_driver_could_not_read(
    tiny_model, tmp_path, monkeypatch
):
    """The default MODEL_PATH is a hub id; not yet cached, the driver cannot read its
    positions, and verl would then cap every response silently at max_model_len."""
    from aepo.backends.verl import startup

    monkeypatch.setattr(startup, "_model_config_file", lambda path: None)  # an uncached hub id
    files = run_files(tmp_path)
    paper = compose_with(
        *files, f"actor_rollout_ref.model.path={tiny_model}", "data.max_response_length=8192"
    )
    with pytest.raises(
        ConfigError, match=r"= 10240 exceeds max_position_embeddings = 4096 in the config of"
    ) as refused:
        run_task_runner_until_workers(paper, monkeypatch)
    assert "rope_theta" in str(refused.value) and "2048 + 2048" in str(refused.value)
    # The shipped lengths (2048 + 2048) fit; the run goes on to its workers.
    with pytest.raises(WorkersWouldStart):
        run_task_runner_until_workers(
            compose_with(*files, f"actor_rollout_ref.model.path={tiny_model}"), monkeypatch
        )


def test_an_explicit_max_model_len_is_checked_against_the_lengths(tiny_model):
    from aepo.backends.verl.startup import check_config

    model = f"actor_rollout_ref.model.path={tiny_model}"
    with pytest.raises(
        ConfigError, match=r"exceeds actor_rollout_ref.rollout.max_model_len = 3000"
    ):
        check_config(compose_with(*DATA, model, "actor_rollout_ref.rollout.max_model_len=3000"))
    with pytest.raises(ConfigError, match=r"max_model_len = 8192 exceeds\s+max_position_embed"):
        check_config(compose_with(*DATA, model, "actor_rollout_ref.rollout.max_model_len=8192"))


DATA = ["data.train_files=/data/train.parquet", "data.val_files=/data/val.parquet"]


def test_the_driver_reads_positions_where_verl_does_for_a_multimodal_config(tmp_path):
    from aepo.backends.verl.startup import check_config

    model_dir(tmp_path, {"text_config": {"max_position_embeddings": 4096}})
    model = f"actor_rollout_ref.model.path={tmp_path}"
    with pytest.raises(ConfigError, match=r"= 10240 exceeds max_position_embeddings = 4096"):
        check_config(compose_with(*DATA, model, "data.max_response_length=8192"))


# ---- flash-attn ------------------------------------------------------------------------


def test_without_flash_attn_the_default_attention_becomes_sdpa_without_remove_padding(caplog):
    from aepo.backends.verl.cluster import choose_attention

    config = compose_with(*DATA)
    OmegaConf.resolve(config)  # as in the task runner: the actor's copy is resolved by now
    assert config.actor_rollout_ref.model.use_remove_padding is True
    assert choose_attention(config, flash_attn_everywhere=True) is None
    assert config.actor_rollout_ref.model.use_remove_padding is True

    message = choose_attention(config, flash_attn_everywhere=False)
    model = config.actor_rollout_ref.model
    assert model.override_config.attn_implementation == "sdpa"
    assert model.use_remove_padding is False
    assert config.actor_rollout_ref.actor.use_remove_padding is False
    assert "flash-attn is not installed on every Ray node" in message
    assert message in caplog.text


def test_the_task_runner_loads_the_model_with_sdpa_when_flash_attn_is_missing(
    tiny_model, tmp_path, monkeypatch
):
    """What verl's workers will load: ``HFModelConfig`` reads the attention from
    ``override_config`` (verl 0.9.1 workers/config/model.py:185)."""
    from verl.utils.config import omega_conf_to_dataclass

    files = run_files(tmp_path)
    config = compose_with(*files, f"actor_rollout_ref.model.path={tiny_model}")
    with pytest.raises(WorkersWouldStart):
        run_task_runner_until_workers(config, monkeypatch, flash_attn=False)
    hf_config = omega_conf_to_dataclass(config.actor_rollout_ref.model).hf_config
    assert hf_config._attn_implementation == "sdpa"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2",
            r"attn_implementation=flash_attention_2 but flash-attn is not installed",
        ),
        (
            "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2",
            r"ulysses_sequence_parallel_size=2 needs flash-attn",
        ),
    ],
    ids=["asked-for-flash-attn", "sequence-parallel"],
)
def test_what_needs_flash_attn_stops_with_the_remedy(override, message):
    from aepo.backends.verl.cluster import choose_attention

    config = compose_with(*DATA, override)
    with pytest.raises(ConfigError, match=message) as refused:
        choose_attention(config, flash_attn_everywhere=False)
    assert 'pip install --no-build-isolation -e ".[flash-attn]"' in str(refused.value)


def test_an_explicit_sdpa_is_left_alone():
    from aepo.backends.verl.cluster import choose_attention

    config = compose_with(
        *DATA, "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"
    )
    assert choose_attention(config, flash_attn_everywhere=False) is None
    assert config.actor_rollout_ref.model.use_remove_padding is True


# ---- the rows verl's dataset keeps ---------------------------------------------------------


def write_prompts(path: Path, prompts: list) -> Path:
    table = pa.Table.from_pylist(
        [
            {
                "data_source": "toy",
                "prompt": None if text is None else [{"role": "user", "content": text}],
                "reward_model": {"style": "rule", "ground_truth": "1"},
            }
            for text in prompts
        ]
    )
    pq.write_table(table, path)
    return path


def test_the_data_check_drops_the_prompts_verl_drops_after_the_chat_template(tiny_model, tmp_path):
    """With max_prompt_length=16, each 11-character prompt fits, but not once the template
    adds ``user: `` and ``assistant: ``: verl's loader has no row left."""
    train = write_rows(tmp_path / "train.parquet", 8)
    val = write_rows(tmp_path / "val.parquet", 2)
    config = compose_with(
        *data_overrides(train, val),
        f"actor_rollout_ref.model.path={tiny_model}",
        "data.max_prompt_length=16",
    )
    with pytest.raises(ConfigError, match=r"hold 0 rows verl keeps .* fewer than"):
        check_data_files(config)


def test_the_data_check_counts_exactly_the_rows_of_verls_dataset(tiny_model, tmp_path):
    from verl.trainer.ppo.utils import create_rl_dataset
    from verl.utils import hf_tokenizer

    # Templated lengths 18 + len(text): 20 .. 38 tokens against a limit of 30.
    train = write_prompts(tmp_path / "train.parquet", ["x" * k for k in range(2, 21)])
    val = write_rows(tmp_path / "val.parquet", 2)
    config = compose_with(
        *data_overrides(train, val),
        f"actor_rollout_ref.model.path={tiny_model}",
        "data.max_prompt_length=30",
        f"+data.cache_dir={tmp_path / 'cache'}",
    )
    rows = check_data_files(config)
    verl_rows = len(create_rl_dataset(str(train), config.data, hf_tokenizer(str(tiny_model)), None))
    assert rows == verl_rows == 11


def test_a_null_prompt_is_one_line_naming_file_and_row(tmp_path):
    train = write_prompts(tmp_path / "train.parquet", ["a", "b", "c", None, "d", None])
    val = write_rows(tmp_path / "val.parquet", 2)
    with pytest.raises(ConfigError) as refused:
        check_data_files(compose_with(*data_overrides(train, val)))
    problems = str(refused.value).splitlines()[1:]
    assert problems == [
        f"  data.train_files: {train} row 3 (and 1 more): prompt is null (verl would drop the "
        "row with a traceback); fix or drop it"
    ]


# ---- resume ---------------------------------------------------------------------------------


def checkpoint_dir(root: Path, step: int, state: str | None) -> Path:
    """verl's layout: ``latest_checkpointed_iteration.txt`` names ``global_step_N``."""
    folder = root / f"global_step_{step}"
    (folder / "actor").mkdir(parents=True)
    (root / "latest_checkpointed_iteration.txt").write_text(str(step))
    if state is not None:
        (folder / "aepo_state.json").write_text(state)
    return folder


def launch_until_ray(config, monkeypatch):
    import verl.trainer.main_ppo as verl_main_ppo

    from aepo.backends.verl.main import launch

    started = []
    monkeypatch.setattr(
        verl_main_ppo, "run_ppo", lambda config, task_runner_class: started.append(1)
    )
    launch(config)
    return bool(started)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (None, r"global_step_3/aepo_state.json is missing: resuming algorithm 'aepo'"),
        ("{not json", r"global_step_3/aepo_state.json: cannot read AEPO state"),
        (json.dumps({"format": 1}), r"aepo_state.json: corrupt AEPO state \(no controller, "),
    ],
    ids=["missing", "unreadable", "incomplete"],
)
def test_a_resume_without_usable_aepo_state_stops_before_ray(tmp_path, monkeypatch, state, message):
    files = run_files(tmp_path)
    checkpoints = tmp_path / "checkpoints"
    checkpoint_dir(checkpoints, 3, state)
    config = compose_with(*files, f"trainer.default_local_dir={checkpoints}")
    with pytest.raises(ConfigError, match=message) as refused:
        launch_until_ray(config, monkeypatch)
    assert len(str(refused.value).splitlines()) == 2  # the header and one line naming the file
    # Starting afresh, or an algorithm without a controller, needs no state.
    for fine in ("trainer.resume_mode=disable", "aepo.algorithm=grpo"):
        config = compose_with(*files, f"trainer.default_local_dir={checkpoints}", fine)
        assert launch_until_ray(config, monkeypatch)


def test_an_explicit_resume_path_is_the_folder_checked(tmp_path, monkeypatch):
    files = run_files(tmp_path)
    folder = checkpoint_dir(tmp_path / "other", 7, None)
    config = compose_with(
        *files,
        f"trainer.default_local_dir={tmp_path / 'none_yet'}",
        "trainer.resume_mode=resume_path",
        f"trainer.resume_from_path={folder}",
    )
    with pytest.raises(ConfigError, match=r"other/global_step_7/aepo_state.json is missing"):
        launch_until_ray(config, monkeypatch)


def test_a_config_error_from_the_task_runner_prints_its_message_not_the_ray_traceback():
    from ray.exceptions import RayTaskError

    from aepo.backends.verl.main import user_message

    cause = ConfigError("cannot start AEPO training:\n  Ray node 10.0.0.2 (gpu-2): ...")
    remote = RayTaskError("AEPOTaskRunner.run", "Traceback (most recent call last): ...", cause)
    arrived = remote.as_instanceof_cause()
    assert isinstance(arrived, ConfigError)  # so main's `except ConfigError` catches it
    assert user_message(arrived) == str(cause)
    assert user_message(cause) == str(cause)


# ---- every node ---------------------------------------------------------------------------


def test_nodes_without_aepo_or_at_another_version_are_named():
    from aepo.backends.verl.cluster import NodeReport, node_problems

    reports = [
        NodeReport("10.0.0.1", "head", "0.1.0", None, True),
        NodeReport("10.0.0.2", "gpu-2", None, "ModuleNotFoundError: No module named 'aepo'", True),
        NodeReport("10.0.0.3", "gpu-3", "0.0.9", None, True),
    ]
    problems = node_problems(reports, "0.1.0")
    assert problems[0].startswith(
        "Ray node 10.0.0.2 (gpu-2): cannot import aepo (ModuleNotFoundError: No module named "
        "'aepo'): install this repository there"
    )
    assert problems[1].startswith("Ray node 10.0.0.3 (gpu-3) has aepo 0.0.9, the driver 0.1.0")
    assert len(problems) == 2


def test_every_node_of_a_real_ray_cluster_is_probed(local_ray, monkeypatch):
    import importlib.util

    import aepo
    from aepo.backends.verl.cluster import check_nodes, probe_nodes

    (report,) = check_nodes()
    assert report.aepo_version == aepo.__version__ and report.import_error is None
    assert report.flash_attn == (importlib.util.find_spec("flash_attn") is not None)
    # A package the node lacks: the probe itself must still run there and say so.
    (missing,) = probe_nodes(module="aepo_absent_on_this_node")
    assert missing.import_error == "ModuleNotFoundError: No module named 'aepo_absent_on_this_node'"
    monkeypatch.setattr(aepo, "__version__", "9.9.9")
    with pytest.raises(ConfigError, match=r"has aepo 0.1.0, the driver 9.9.9: install"):
        check_nodes()


def test_the_node_probe_runs_where_aepo_cannot_be_imported(tmp_path):
    """Pickled by value: a node without aepo unpickles and runs it (here: a Python started
    without site-packages, so without the editable install, but with cloudpickle)."""
    import os
    import subprocess
    import sys

    import cloudpickle

    from aepo.backends.verl.cluster import _probe

    (tmp_path / "probe.pkl").write_bytes(cloudpickle.dumps(_probe("aepo")))
    code = (
        "import pickle, sys; sys.path.append(sys.argv[2]); "
        "print(pickle.loads(open(sys.argv[1], 'rb').read())()['error'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cloudpickle_dir = str(Path(cloudpickle.__file__).parents[1])
    result = subprocess.run(
        [sys.executable, "-S", "-c", code, str(tmp_path / "probe.pkl"), cloudpickle_dir],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ModuleNotFoundError: No module named 'aepo'"


def state_written_by(overrides: list[str]) -> str:
    """The aepo_state.json our trainer writes for a run composed with ``overrides``."""
    from types import SimpleNamespace

    from aepo.backends.verl.trainer import AEPORayTrainer, aepo_config_from
    from aepo.core import AEPOStep, recipe_for

    cfg = aepo_config_from(compose_with(*overrides))
    trainer = SimpleNamespace(
        aepo_cfg=cfg, recipe=recipe_for(cfg), aepo=AEPOStep(cfg), global_steps=3
    )
    return json.dumps({"format": 1, **AEPORayTrainer.aepo_state_dict(trainer)})


@pytest.mark.parametrize("written_by", ["grpo", "entropy_reg"])
def test_a_resume_with_another_algorithm_stops_before_ray(tmp_path, monkeypatch, written_by):
    files = run_files(tmp_path)
    checkpoints = tmp_path / "checkpoints"
    state = state_written_by([*files, f"aepo.algorithm={written_by}"])
    folder = checkpoint_dir(checkpoints, 3, state)
    config = compose_with(*files, f"trainer.default_local_dir={checkpoints}")
    with pytest.raises(ConfigError) as refused:
        launch_until_ray(config, monkeypatch)
    header, problem = str(refused.value).splitlines()
    assert problem.strip().startswith(
        f"{folder / 'aepo_state.json'} was written by aepo.algorithm={written_by!r}, the config "
        "says 'aepo': a run cannot change aepo.algorithm"
    )
    # The same algorithm resumes (Entropy-Reg with verl's entropy_coeff); so does starting
    # afresh.
    same = [f"aepo.algorithm={written_by}"]
    if written_by == "entropy_reg":
        same.append("actor_rollout_ref.actor.entropy_coeff=0.015")
    for fine in (same, ["trainer.resume_mode=disable"]):
        config = compose_with(*files, f"trainer.default_local_dir={checkpoints}", *fine)
        assert launch_until_ray(config, monkeypatch)


def test_a_state_file_that_records_only_its_algorithm_is_still_compared(tmp_path, monkeypatch):
    """aepo_state.json written before the config was recorded in it names its algorithm."""
    files = run_files(tmp_path)
    checkpoints = tmp_path / "checkpoints"
    old = json.loads(state_written_by([*files, "aepo.algorithm=aepo"]))
    del old["run_config"]
    checkpoint_dir(checkpoints, 3, json.dumps(old))
    config = compose_with(*files, f"trainer.default_local_dir={checkpoints}")
    assert launch_until_ray(config, monkeypatch)
    config = compose_with(
        *files, f"trainer.default_local_dir={checkpoints}", "aepo.algorithm=aepo_advantage"
    )
    with pytest.raises(ConfigError, match=r"was written by aepo.algorithm='aepo', the config says"):
        launch_until_ray(config, monkeypatch)


def test_a_resume_with_other_aepo_settings_warns_naming_each(tmp_path, monkeypatch, caplog):
    files = run_files(tmp_path)
    checkpoints = tmp_path / "checkpoints"
    checkpoint_dir(checkpoints, 3, state_written_by(files))
    config = compose_with(
        *files,
        f"trainer.default_local_dir={checkpoints}",
        "aepo.target_entropy=0.25",
        "aepo.alpha=2",
    )
    with caplog.at_level("WARNING", logger="aepo.backends.verl.startup"):
        assert launch_until_ray(config, monkeypatch)
    (warning,) = [r.getMessage() for r in caplog.records if "resuming" in r.getMessage()]
    assert f"resuming {checkpoints / 'global_step_3'} with changes: " in warning
    assert "aepo.alpha 1.0 -> 2.0" in warning and "aepo.target_entropy 0.5 -> 0.25" in warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="aepo.backends.verl.startup"):
        assert launch_until_ray(
            compose_with(*files, f"trainer.default_local_dir={checkpoints}"), monkeypatch
        )
    assert not [r for r in caplog.records if "resuming" in r.getMessage()]


@pytest.mark.parametrize("has_value_head", [False, True])
def test_a_trl_that_verls_workers_cannot_use_is_named_per_node(
    tmp_path, monkeypatch, has_value_head
):
    """A stand-in ``trl`` package on the path: installing the real TRL 1.16 here would break
    this venv's verl workers, which is the case under test."""
    import sys

    from aepo.backends.verl.cluster import NodeReport, _probe, node_problems

    package = tmp_path / "trl"
    package.mkdir()
    body = '__version__ = "1.16.0"\n'
    if has_value_head:
        body += "class AutoModelForCausalLMWithValueHead: ...\n"
    (package / "__init__.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "trl" or m.startswith("trl.")]:
        monkeypatch.delitem(sys.modules, name)
    try:
        found = _probe("aepo")()
    finally:
        for name in [m for m in sys.modules if m == "trl" or m.startswith("trl.")]:
            del sys.modules[name]
    if has_value_head:
        assert found["trl_problem"] is None
        return
    assert "TRL 1.16.0 is installed" in found["trl_problem"]
    report = NodeReport("10.0.0.1", "head", "0.1.0", None, True, found["trl_problem"])
    (problem,) = node_problems([report], "0.1.0")
    assert problem.startswith("Ray node 10.0.0.1 (head): TRL 1.16.0 is installed")
    assert "pip uninstall trl" in problem and "make bench-trl" in problem
