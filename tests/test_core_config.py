import pytest

from aepo.core import ALGORITHMS, AEPOConfig, ConfigError, load_aepo_config


def test_defaults_are_the_papers():
    cfg = AEPOConfig()
    assert (cfg.t_high, cfg.t_low) == (1.2, 0.8)
    assert (cfg.samples_up, cfg.samples_down) == (60, 30)
    assert cfg.alpha == 1.0 and cfg.clip_ratio == 0.2
    assert cfg.entropy_coef == 0.015
    assert (cfg.entropy_adv_beta, cfg.entropy_adv_kappa) == (0.4, 2.0)
    assert cfg.gain == "fixed" and cfg.entropy_ema is None


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"t_high": 0.8, "t_low": 0.8}, "t_high must be > t_low, got t_high=0.8, t_low=0.8"),
        ({"t_high": 0.7}, "t_high must be > t_low"),
        ({"target_entropy": -0.1}, "target_entropy must be > 0, got -0.1"),
        ({"target_entropy": 0}, "target_entropy must be > 0"),
        ({"samples_up": -1}, "samples_up must be >= 0, got -1"),
        ({"alpha": -2}, "alpha must be >= 0, got -2"),
        ({"clip_ratio": 1.5}, "clip_ratio must be in (0, 1)"),
        ({"entropy_ema": 0}, "entropy_ema must be in (0, 1]"),
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
        load_aepo_config({"target_entropy": -1, "t_high": 0.5})
    assert "target_entropy" in str(err.value) and "t_high" in str(err.value)


def test_every_algorithm_validates():
    for algo in ALGORITHMS:
        assert load_aepo_config({"algorithm": algo}).algorithm == algo


def test_assignment_is_validated():
    cfg = AEPOConfig()
    with pytest.raises(ValueError):
        cfg.t_low = 5.0
