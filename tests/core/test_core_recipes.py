from aepo.core import AEPOConfig, recipe_for


def recipe(algo, **kw):
    return recipe_for(AEPOConfig(algorithm=algo, **kw))


def test_grpo_is_plain():
    r = recipe("grpo")
    assert not r.extra_rollout and r.entropy_bonus == 0 and not r.entropy_adv


def test_aepo_uses_controlled_temperature_and_reward():
    r = recipe("aepo")
    assert r.extra_rollout and r.controlled_temperature and r.signal == "reward"


def test_ablations_differ_from_aepo_in_one_piece_each():
    no_temp, adv = recipe("aepo_no_temperature"), recipe("aepo_advantage")
    assert no_temp.extra_rollout and not no_temp.controlled_temperature
    assert no_temp.signal == "reward"
    assert adv.extra_rollout and adv.controlled_temperature and adv.signal == "advantage"


def test_baselines_take_their_coefficients_from_config():
    bonus = {"baselines": {"entropy_reg": {"coef": 0.03}}}
    assert recipe("entropy_reg", **bonus).entropy_bonus == 0.03
    assert recipe("aepo").entropy_bonus == 0.0
    assert recipe("entropy_adv").entropy_adv and not recipe("entropy_adv").extra_rollout
