"""The shipped verl configs compose with verl 0.9.1's ppo_trainer and pass our start-up checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("verl")

from hydra import compose, initialize_config_dir, initialize_config_module  # noqa: E402
from verl.trainer.ppo.utils import need_critic, need_reference_policy  # noqa: E402
from verl.utils.config import omega_conf_to_dataclass, validate_config  # noqa: E402

from aepo.backends.verl.startup import check_config  # noqa: E402
from aepo.core import AEPOConfig, ConfigError  # noqa: E402
from tests.conftest import model_dir  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PACKAGE_CONFIG = (
    Path(__file__).resolve().parents[2] / "aepo" / "backends" / "verl" / "config" / "aepo_base.yaml"
)
SHIPPED = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
DATA = ["data.train_files=/data/train.parquet", "data.val_files=/data/val.parquet"]


def compose_shipped(name: str, *overrides: str):
    with initialize_config_dir(str(CONFIGS), version_base=None):
        return compose(name, overrides=DATA + list(overrides))


def compose_default(*overrides: str):
    with initialize_config_module("aepo.backends.verl.config", version_base=None):
        return compose("aepo_trainer", overrides=DATA + list(overrides))


def test_every_file_the_issue_asks_for_is_shipped():
    expected = {f"aepo_h{h}" for h in ("0.25", "0.5", "0.75", "1.0")} | {
        "grpo",
        "entropy_reg",
        "entropy_adv",
        "aepo_no_temperature",
        "aepo_advantage",
        "clip_cov",
        "kl_cov",
        "adaptive_entropy",
        "top_entropy",
    }
    assert expected <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_composes_validates_and_passes_verl_checks(name):
    config = compose_shipped(name)
    cfg = check_config(config)
    # What the file says under aepo: is what the run gets.
    written = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["aepo"]
    assert_written_values_are_used(written, cfg.model_dump(), name)
    validate_config(
        config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
    )
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    # verl's own keys: Entropy-Reg's lambda, the clip ratio (verl's defaults for the others)
    assert actor.entropy_coeff == (0.015 if cfg.algorithm == "entropy_reg" else 0)
    assert actor.clip_ratio == actor.clip_ratio_low == actor.clip_ratio_high == 0.2
    assert "tensorboard" in config.trainer.logger
    assert config.trainer.use_v1 is False


def assert_written_values_are_used(written: dict, got: dict, where: str) -> None:
    """Every key a file sets has that value in the validated config (sections recursively;
    a section may set only some of its keys)."""
    for key, value in written.items():
        if isinstance(value, dict):
            assert_written_values_are_used(value, got[key], f"{where}.{key}")
        else:
            assert got[key] == value, (f"{where}.{key}", got[key], value)


def test_default_config_is_the_papers_aepo_setting():
    config = compose_default()
    cfg = check_config(config)
    assert (cfg.algorithm, cfg.target_entropy, cfg.t_high, cfg.t_low) == ("aepo", 0.5, 1.2, 0.8)
    assert (cfg.samples_up, cfg.samples_down) == (60, 30)
    assert config.data.train_batch_size == 512 and config.actor_rollout_ref.rollout.n == 8
    assert config.actor_rollout_ref.actor.ppo_mini_batch_size == 128
    # The authors' released length, not the paper's 8192: Qwen2.5-Math-7B has 4096 positions.
    assert (config.data.max_prompt_length, config.data.max_response_length) == (2048, 2048)
    assert config.reward.custom_reward_function.path == "pkg://aepo.rewards.math_reward"


def test_package_yaml_lists_every_aepo_field_verl_lacks():
    from aepo.core.config import verl_owned_keys

    listed = yaml.safe_load(PACKAGE_CONFIG.read_text())["aepo"]
    verl = verl_owned_keys()
    assert set(listed) == set(AEPOConfig.model_fields) - set(verl)
    assert set(listed["baselines"]) == {
        "entropy_adv",
        "adaptive_entropy",
        "top_entropy",
        "dcpo",
        "entropic",
        "entrocraft",
    }
    assert AEPOConfig(**listed) == AEPOConfig()


def test_unknown_aepo_key_fails_naming_it():
    with pytest.raises(ConfigError, match=r"aepo\.target_entrpy: unknown key"):
        check_config(compose_default("+aepo.target_entrpy=0.3"))


def test_inconsistent_aepo_value_fails_naming_it():
    with pytest.raises(ConfigError, match="t_high must be > t_low"):
        check_config(compose_default("aepo.t_low=1.5"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "actor_rollout_ref.rollout.temperature=0.9",
            r"actor_rollout_ref\.rollout\.temperature must be 1\.0",
        ),
        ("algorithm.rollout_correction.bypass_mode=true", r"bypass_mode must be false"),
        ("actor_rollout_ref.rollout.agent.num_workers=3", r"agent\.num_workers = 3"),
        (
            "actor_rollout_ref.actor.ppo_mini_batch_size=96",
            r"multiple of\s+actor_rollout_ref\.actor\.ppo_mini_batch_size = 96",
        ),
        ("reward.custom_reward_function.path=null", r"no reward function"),
        (
            "reward.custom_reward_function.path=/nonexistent/reward.py",
            r"reward\.custom_reward_function",
        ),
        ("algorithm.adv_estimator=gae", r"critic-free estimator"),
        ("actor_rollout_ref.actor.entropy_coeff=0.01", None),
    ],
)
def test_startup_checks_reject_unrunnable_settings(override, message):
    if message is None:  # entropy bonus on top of AEPO: allowed (with a warning)
        check_config(compose_default(override))
        return
    with pytest.raises(ConfigError, match=message):
        check_config(compose_default(override))


def test_entropy_reg_runs_with_verls_entropy_coeff():
    config = compose_shipped("entropy_reg", "actor_rollout_ref.actor.entropy_coeff=0.5")
    check_config(config)
    assert config.actor_rollout_ref.actor.entropy_coeff == 0.5  # read, not overwritten
    with pytest.raises(
        ConfigError, match=r"entropy_reg needs actor_rollout_ref\.actor\.entropy_coeff > 0"
    ):
        check_config(compose_shipped("entropy_reg", "actor_rollout_ref.actor.entropy_coeff=0"))


@pytest.mark.parametrize(
    ("override", "verl_key"),
    [
        ("+aepo.clip_ratio=0.3", "actor_rollout_ref.actor.clip_ratio"),
        ("+aepo.baselines.entropy_reg.coef=0.1", "actor_rollout_ref.actor.entropy_coeff"),
        ("+aepo.baselines.kl_cov.ratio=0.002", "actor_rollout_ref.actor.policy_loss.kl_cov_ratio"),
    ],
)
def test_an_aepo_key_that_verl_has_is_refused_naming_verls_key(override, verl_key):
    """The plug-in holds only what verl lacks: no second place for verl's knobs."""
    key = override.removeprefix("+").split("=")[0]
    with pytest.raises(ConfigError, match=f"{key}: verl has this key, set {verl_key}"):
        check_config(compose_default(override))


def test_replacement_budget_larger_than_the_batch_is_rejected():
    small = [
        "data.train_batch_size=4",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    ]
    with pytest.raises(ConfigError, match="use aepo.merge=append"):
        check_config(compose_default(*small))
    check_config(compose_default(*small, "aepo.merge=append"))


def test_command_line_composes_a_shipped_config():
    """The users' command: --config-path configs --config-name <file> (Hydra's --cfg job
    prints the composed config instead of running)."""
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "aepo.backends.verl.main",
            "--config-path",
            str(CONFIGS),
            "--config-name",
            "aepo_h0.75",
            "--cfg",
            "job",
            "data.train_files=/data/train.parquet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    composed = yaml.safe_load(result.stdout)
    assert composed["aepo"]["target_entropy"] == 0.75
    assert composed["trainer"]["logger"] == ["console", "tensorboard"]
    assert composed["actor_rollout_ref"]["rollout"]["n"] == 8


def test_context_longer_than_the_local_models_positions_is_rejected(tmp_path):
    # Qwen2.5-Math-7B's config.json: 4096 positions, less than the paper's 2048 + 8192.
    model_dir(tmp_path, {"max_position_embeddings": 4096})
    model = f"actor_rollout_ref.model.path={tmp_path}"
    with pytest.raises(ConfigError, match=r"= 10240 exceeds\s+max_position_embeddings = 4096"):
        check_config(compose_default(model, "data.max_response_length=8192"))
    check_config(compose_default(model))  # the shipped 2048 + 2048


@pytest.mark.parametrize("name", SHIPPED)
def test_a_config_comment_promises_aepo_scalars_only_where_they_are_logged(name):
    """verl logs ``aepo/*`` only for the recipes with an entropy controller (README)."""
    from aepo.core import recipe_for

    comment = "".join(
        line for line in (CONFIGS / f"{name}.yaml").read_text().splitlines() if line.startswith("#")
    )
    if not recipe_for(check_config(compose_shipped(name))).extra_rollout:
        assert "aepo/entropy is still logged" not in comment
        assert "aepo/" not in comment or "No aepo/* scalars are logged" in comment


def test_cov_baselines_run_from_verls_policy_loss_settings():
    clip = omega_conf_to_dataclass(compose_checked("clip_cov").actor_rollout_ref.actor)
    assert clip.policy_loss.loss_mode == "clip_cov"
    assert (clip.policy_loss.clip_cov_ratio, clip.policy_loss.clip_cov_lb) == (2e-4, 1.0)
    assert clip.policy_loss.clip_cov_ub == 5.0
    kl_ratio = "actor_rollout_ref.actor.policy_loss.kl_cov_ratio=0.002"
    kl = omega_conf_to_dataclass(compose_checked("kl_cov", kl_ratio).actor_rollout_ref.actor)
    # verl's own default ppo_kl_coef is 0.1; the KL-Cov authors' is 1.
    assert (kl.policy_loss.loss_mode, kl.policy_loss.kl_cov_ratio) == ("kl_cov", 0.002)
    assert kl.policy_loss.ppo_kl_coef == 1.0
    grpo = compose_checked("grpo").actor_rollout_ref.actor.policy_loss
    assert grpo.loss_mode == "vanilla"


def compose_checked(name, *overrides):
    config = compose_shipped(name, *overrides)
    check_config(config)
    return config


@pytest.mark.parametrize(
    ("name", "override", "message"),
    [
        (
            "clip_cov",
            "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
            r"clip_cov policy loss: set actor_rollout_ref\.actor\.policy_loss\.loss_mode=clip_cov "
            r"\(got gspo",
        ),
        (
            "adaptive_entropy",
            "aepo.baselines.adaptive_entropy.update=optimizer_step",
            r"aepo\.baselines\.adaptive_entropy\.update=optimizer_step: the verl",
        ),
        (
            "adaptive_entropy",
            "actor_rollout_ref.actor.entropy_coeff=0.01",
            r"entropy_coeff=0\.01 conflicts with aepo\.algorithm=adaptive_entropy",
        ),
        (
            "top_entropy",
            "algorithm.rollout_correction.bypass_mode=true",
            r"bypass_mode must be false: it skips the old-log-prob pass",
        ),
    ],
)
def test_entropy_method_conflicts_are_rejected_naming_the_keys(name, override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(compose_shipped(name, override))


def test_adaptive_entropy_makes_the_worker_compute_pi_thetas_entropy():
    config = compose_checked("adaptive_entropy")
    assert config.actor_rollout_ref.actor.calculate_entropy is True
    assert config.actor_rollout_ref.actor.entropy_coeff == 0
    # Clip-Cov's constants are verl's keys, set there like any verl setting.
    compose_checked("clip_cov", "actor_rollout_ref.actor.policy_loss.clip_cov_ub=4.0")


def test_target_schedule_is_one_override_on_any_config():
    cfg = check_config(
        compose_default(
            "aepo.target_entropy=0.25", "aepo.target_schedule={kind:cosine,start:1.0,steps:50}"
        )
    )
    assert cfg.target_schedule.model_dump() == {"kind": "cosine", "start": 1.0, "steps": 50}
    anneal = check_config(compose_shipped("aepo_linear_anneal"))
    assert (anneal.target_schedule.kind, anneal.target_schedule.start) == ("linear", 1.0)
    assert anneal.target_entropy == 0.5


def test_bad_target_schedule_fails_naming_the_key():
    with pytest.raises(
        ConfigError, match=r"aepo\.target_schedule\.steps: .*greater than or equal to 1"
    ):
        check_config(compose_default("aepo.target_schedule={kind:linear,start:1.0,steps:0}"))


def test_dry_run_summary_names_the_schedule():
    from aepo.backends.verl.dry_run import run_summary

    config = compose_shipped("aepo_linear_anneal")
    summary = run_summary(config, check_config(config), train_rows=None)
    assert "aepo (target entropy linear 1.0 -> 0.5 over 200 steps, T_high 1.2" in summary
