import pytest

from aepo.core import ALGORITHMS, AEPOConfig, ConfigError, load_aepo_config


def test_defaults_are_the_papers():
    cfg = AEPOConfig()
    assert (cfg.t_high, cfg.t_low) == (1.2, 0.8)
    assert (cfg.samples_up, cfg.samples_down) == (60, 30)
    assert cfg.alpha == 1.0 and cfg.clip_ratio == 0.2
    assert cfg.baselines.entropy_reg.coef == 0.015
    assert (cfg.baselines.entropy_adv.beta, cfg.baselines.entropy_adv.kappa) == (0.4, 2.0)
    assert cfg.controller.gain == "fixed" and cfg.alpha_meaning == "paper"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"t_high": 0.8, "t_low": 0.8}, "t_high must be > t_low, got t_high=0.8, t_low=0.8"),
        ({"t_high": 0.7}, "t_high must be > t_low"),
        ({"target_entropy": -0.1}, "aepo.target_entropy: Input should be greater than 0"),
        ({"target_entropy": 0}, "aepo.target_entropy: Input should be greater than 0"),
        ({"samples_up": -1}, "aepo.samples_up: Input should be greater than or equal to 0"),
        ({"alpha": -2}, "aepo.alpha: Input should be greater than or equal to 0 (got -2)"),
        ({"clip_ratio": 1.5}, "aepo.clip_ratio: Input should be less than 1"),
        ({"t_high": 2.5}, "aepo.t_high: Input should be less than or equal to 2"),
        ({"alpha_meaning": "tokens"}, "aepo.alpha_meaning"),
        ({"extra_rollout": {"oversample": 0.5}}, "aepo.extra_rollout.oversample"),
        ({"controller": {"gains": 1}}, "aepo.controller.gains: unknown key"),
        ({"algorithm": "ppo"}, "aepo.algorithm"),
        ({"target_entropie": 0.5}, "aepo.target_entropie: unknown key"),
        ({"samples_up": "many"}, "aepo.samples_up"),
    ],
)
def test_bad_values_name_the_key_and_value(raw, expected):
    with pytest.raises(ConfigError) as err:
        load_aepo_config(raw)
    assert expected in str(err.value)


def test_error_names_the_source_file():
    with pytest.raises(ConfigError, match=r"configs/x.yaml:aepo.merge"):
        load_aepo_config({"merge": "zip"}, source="configs/x.yaml:aepo")


def test_several_problems_are_reported_together():
    with pytest.raises(ConfigError) as err:
        load_aepo_config({"target_entropy": -1, "t_high": 3.0})
    assert "target_entropy" in str(err.value) and "t_high" in str(err.value)


def test_every_algorithm_validates():
    for algo in ALGORITHMS:
        assert load_aepo_config({"algorithm": algo}).algorithm == algo


def test_assignment_is_validated():
    cfg = AEPOConfig()
    with pytest.raises(ValueError):
        cfg.t_low = 5.0


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"alpha": float("nan")}, "aepo.alpha"),
        ({"alpha": "nan"}, "aepo.alpha"),
        ({"t_high": float("inf")}, "aepo.t_high"),
        ({"reward_threshold": float("nan")}, "aepo.reward_threshold"),
        ({"controller": {"proportional_gain": float("nan")}}, "aepo.controller.proportional_gain"),
        (
            {"algorithm": "entropy_adv", "baselines": {"entropy_adv": {"kappa": float("inf")}}},
            "aepo.baselines.entropy_adv.kappa",
        ),
        (
            {"algorithm": "entropy_reg", "baselines": {"entropy_reg": {"coef": "-inf"}}},
            "aepo.baselines.entropy_reg.coef",
        ),
    ],
)
def test_non_finite_numbers_are_one_line_errors_naming_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        load_aepo_config(raw)
    problems = str(err.value).splitlines()[1:]
    assert len(problems) == 1 and problems[0].strip().startswith(f"{key}: Input should be a finite")


def test_yaml_nan_and_inf_spellings_are_refused():
    import yaml

    for text in ("alpha: .nan", "t_high: .inf", "reward_threshold: .NaN"):
        with pytest.raises(ConfigError, match="finite number"):
            load_aepo_config(yaml.safe_load(text))


@pytest.mark.parametrize(
    "raw, named",
    [
        ({"algorithm": "grpo", "t_high": 1.5}, "t_high"),
        ({"algorithm": "grpo", "controller": {"integral_gain": 0.1}}, "controller"),
        ({"algorithm": "entropy_reg", "alpha": 4.0}, "alpha"),
        (
            {"algorithm": "aepo", "baselines": {"entropy_reg": {"coef": 0.1}}},
            "baselines.entropy_reg",
        ),
        ({"algorithm": "aepo_no_temperature", "t_low": 0.5}, "t_low"),
        ({"algorithm": "aepo_advantage", "reward_threshold": 0.5}, "reward_threshold"),
        ({"algorithm": "clip_cov", "baselines": {"kl_cov": {"coef": 0.5}}}, "baselines.kl_cov"),
    ],
)
def test_a_key_the_algorithm_ignores_is_an_error_naming_it(raw, named):
    with pytest.raises(ConfigError) as err:
        load_aepo_config(raw, source="configs/tiny/x.yaml")
    message = str(err.value)
    assert f"configs/tiny/x.yaml: algorithm {raw['algorithm']} does not read {named}" in message


def test_the_keys_an_algorithm_reads_are_accepted_and_defaults_are_not_reported():
    load_aepo_config({"algorithm": "entropy_reg", "baselines": {"entropy_reg": {"coef": 0.1}}})
    load_aepo_config({"algorithm": "aepo", "t_high": 1.5, "controller": {"integral_gain": 0.1}})
    # verl's base YAML spells out every default: those are not keys the run set
    load_aepo_config({"algorithm": "grpo", **AEPOConfig().model_dump()} | {"algorithm": "grpo"})


def test_the_pre_release_key_names_are_unknown_keys():
    """No migration table: an old name is an unknown key like any typo."""
    for key in ("integral_gain", "entropy_coef", "entropy_adv", "oversample"):
        with pytest.raises(ConfigError, match=f"aepo.{key}: unknown key"):
            load_aepo_config({key: 1})


def test_at_most_18_top_level_keys():
    # The field's entropy controls share one section (baselines); target_schedule sits
    # beside the target_entropy it ends at; engine transport settings (vLLM request seeds)
    # live in the engine's own config, not here.
    assert len(AEPOConfig.model_fields) <= 18


def test_the_docs_state_the_codes_top_level_key_count():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "design_step.md").read_text()
    stated = re.findall(r"(\d+) top-level keys", text)
    assert stated, "docs/design_step.md no longer states the top-level key count"
    assert {int(n) for n in stated} == {len(AEPOConfig.model_fields)}, stated


def test_generated_config_docs_are_up_to_date():
    from aepo.core.config_docs import rendered

    for path, text in rendered().items():
        assert path.read_text() == text, f"{path} is stale: run python -m aepo.core.config_docs"
