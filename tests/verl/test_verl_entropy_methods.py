"""Clip-Cov, KL-Cov, adaptive entropy and the 80/20 rule in the verl engine, on real verl
objects (CPU), each pinned to the local engine on the same batch.

The trainer is built as in ``tests/verl/test_verl_trainer.py``: ``object.__new__`` with fake worker
groups (``tests/verl/verl_fakes.py``), because verl's FSDP workers need Ray and a GPU. Everything the
fakes hand back goes through verl's own DataProto, advantage, ``_update_actor`` and ``ppo_loss``.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("verl")

from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.utils.config import omega_conf_to_dataclass  # noqa: E402
from verl.workers.utils.losses import ppo_loss  # noqa: E402
from verl.workers.utils.padding import no_padding_2_padding  # noqa: E402

from aepo.backends.policy_loss import verl_policy_loss  # noqa: E402
from aepo.backends.verl._verl_internals import actor_loss_with_entropy_coeff  # noqa: E402
from aepo.backends.verl.checkpoint import STATE_FILE, CheckpointStateError  # noqa: E402
from aepo.backends.verl.startup import check_config  # noqa: E402
from aepo.core import AEPOStep, entropy_bonus_loss, ppo_clip_loss  # noqa: E402
from tests.verl.test_verl_trainer import compose_config, fit_step, make_trainer  # noqa: E402
from tests.verl.verl_fakes import fake_entropy, fake_log_probs  # noqa: E402


def update_batch(trainer, call: int = -1):
    """What the actor received, ready for verl's ppo_loss on one rank."""
    td = trainer.actor_rollout_wg.updates[call].clone()
    tu.assign_non_tensor(
        td,
        dp_size=1,
        batch_num_tokens=td["response_mask"].sum(),
        global_batch_size=len(td["response_mask"]),
    )
    return td


def moved_log_probs(td):
    """pi_theta a little away from pi_old: ratios inside and outside the clip range."""
    old = fake_log_probs(td["input_ids"])
    values = old.values() + 0.3 * torch.sin(torch.arange(old.values().numel()).float())
    return torch.nested.nested_tensor_from_jagged(values, offsets=old.offsets())


# ---- the 80/20 rule --------------------------------------------------------------------------


def test_top_entropy_keeps_advantage_only_on_the_batchs_highest_entropy_tokens():
    trainer = make_trainer(compose_config("aepo.algorithm=top_entropy"))
    grpo, out = fit_step(trainer, step=1)
    td = trainer.actor_rollout_wg.updates[-1]
    old_pass = trainer.actor_rollout_wg.log_prob_batches[0]
    old_entropy = no_padding_2_padding(fake_entropy(old_pass["input_ids"]), old_pass)
    mask = grpo.batch["response_mask"].bool()
    # TRL 1.16's rule (get_high_entropy_mask), threshold over every response token of the step.
    threshold = torch.quantile(old_entropy[mask].float(), 0.8)
    keep = (old_entropy >= threshold) & mask
    assert 0 < keep.sum() < mask.sum()
    torch.testing.assert_close(td["advantages"], grpo.batch["advantages"] * keep)
    metrics = out.meta_info["metrics"]
    assert metrics["aepo/top_entropy_threshold"] == pytest.approx(float(threshold))
    assert metrics["aepo/top_entropy_token_fraction"] == pytest.approx(
        float(keep.sum() / mask.sum())
    )
    assert "aepo_old_entropy" not in td.keys(), "the carried entropies must not reach the workers"

    # The masked tokens carry no gradient, but the aggregation still divides by every token
    # (the paper's 1 / sum |o_i|, TRL's division by the completion mask).
    log_prob = old_entropy.new_zeros(mask.shape).copy_(td["old_log_probs"]).requires_grad_()
    loss, _ = ppo_clip_loss(log_prob, td["old_log_probs"], td["advantages"], mask)
    loss.backward()
    assert torch.all(log_prob.grad[mask & ~keep] == 0)
    expected = -(td["advantages"] * mask).sum() / mask.sum()  # ratio 1 before the update
    torch.testing.assert_close(loss, expected)


# ---- adaptive entropy ------------------------------------------------------------------------


def adaptive_config(*extra):
    return compose_config(
        "aepo.algorithm=adaptive_entropy",
        "aepo.baselines.adaptive_entropy.update=training_step",
        "aepo.baselines.adaptive_entropy.step=0.01",
        "actor_rollout_ref.actor.calculate_entropy=true",  # what check_config sets
        *extra,
    )


def test_adaptive_entropy_installs_skyworks_coefficient_in_the_workers_loss_each_step():
    config = adaptive_config()
    trainer = make_trainer(config)
    measured, applied = [], []
    for step in (1, 2, 3):
        _, out = fit_step(trainer, step=step)
        measured.append(trainer.aepo.controller.entropy)
        applied.append(out.meta_info["metrics"]["aepo/entropy_coef_applied"])
    # The fake pi_old's entropy (~0.4) is below the target 0.5: c = 0, 0.01, 0.02 is applied
    # (alpha_k = c_k * 1[e_k <= target]) and c moves up after each step.
    assert max(measured) < 0.5
    assert applied == pytest.approx([0.0, 0.01, 0.02])
    assert out.meta_info["metrics"]["aepo/entropy_coef"] == pytest.approx(0.03)
    assert out.meta_info["metrics"]["aepo/target_entropy"] == 0.5
    fns = trainer.actor_rollout_wg.loss_fns
    assert [fn.keywords["config"].entropy_coeff for fn in fns] == pytest.approx(applied)
    assert all(fn.func is ppo_loss for fn in fns)
    td = trainer.actor_rollout_wg.updates[-1]
    assert tu.get(td, "calculate_entropy") is True

    # The local engine, fed the same measurements, applies the same coefficients.
    cfg = trainer.aepo_cfg
    local = AEPOStep(cfg)
    shape = {"num_prompts": 8, "samples_per_prompt": 4}
    coefficients = [
        local.measured(local.begin(step, **shape), e).entropy_bonus
        for step, e in enumerate(measured, start=1)
    ]
    assert coefficients == applied

    # The installed loss is verl's ppo_loss with -c * agg(H): the local engine's bonus.
    td = update_batch(trainer)
    entropy = fake_entropy(td["input_ids"])
    output = {"log_probs": moved_log_probs(td), "entropy": entropy}
    with_bonus, _ = fns[-1](model_output=output, data=td.clone())
    base_config = fns[-1].keywords["config"]
    without, _ = actor_loss_with_entropy_coeff(base_config, 0.0)(model_output=output, data=td)
    dense_entropy = no_padding_2_padding(entropy, td)
    bonus = entropy_bonus_loss(dense_entropy, td["response_mask"], applied[-1], "token-mean")
    torch.testing.assert_close(with_bonus - without, bonus, rtol=1e-5, atol=1e-7)


def test_adaptive_entropy_gates_the_bonus_off_above_the_target():
    trainer = make_trainer(adaptive_config("aepo.target_entropy=0.1"))
    for step in (1, 2):
        _, out = fit_step(trainer, step=step)
        metrics = out.meta_info["metrics"]
        assert metrics["aepo/entropy_coef_applied"] == 0.0
        assert metrics["aepo/entropy_coef"] == 0.0  # stays at its floor
    assert [fn.keywords["config"].entropy_coeff for fn in trainer.actor_rollout_wg.loss_fns] == [
        0.0
    ], "an unchanged coefficient is not re-sent to the workers"


def test_adaptive_entropy_coefficient_resumes_from_aepo_state(tmp_path):
    config = adaptive_config(f"trainer.default_local_dir={tmp_path}", "trainer.resume_mode=auto")
    trainer = make_trainer(config)
    fit_step(trainer, step=1)
    fit_step(trainer, step=2)
    trainer._save_checkpoint()
    assert (tmp_path / "global_step_2" / STATE_FILE).exists()

    resumed = make_trainer(config)
    resumed.global_steps = 0
    resumed._load_checkpoint()
    assert resumed.aepo.adaptive_entropy.state_dict() == trainer.aepo.adaptive_entropy.state_dict()
    _, out = fit_step(trainer, step=3)
    _, out_resumed = fit_step(resumed, step=3)
    for key in ("aepo/entropy_coef", "aepo/entropy_coef_applied"):
        assert out_resumed.meta_info["metrics"][key] == out.meta_info["metrics"][key]
    assert out.meta_info["metrics"]["aepo/entropy_coef_applied"] == pytest.approx(0.02)
    # The workers got the resumed coefficient, not a fresh 0.
    assert resumed.actor_rollout_wg.loss_fns[-1].keywords["config"].entropy_coeff == 0.02

    (tmp_path / "global_step_2" / STATE_FILE).unlink()
    with pytest.raises(CheckpointStateError, match="is missing"):
        make_trainer(config)._load_checkpoint()


# ---- Clip-Cov / KL-Cov -----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["clip_cov", "kl_cov"])
def test_local_engines_cov_loss_equals_the_verl_workers_on_the_same_batch(algorithm):
    # verl's keys set to the local engine's aepo.baselines values (KL-Cov's coef: the authors' 1)
    policy_loss = "actor_rollout_ref.actor.policy_loss"
    config = compose_config(
        f"aepo.algorithm={algorithm}",
        f"{policy_loss}.loss_mode={algorithm}",
        f"{policy_loss}.ppo_kl_coef=1.0",
    )
    cfg = check_config(config)
    trainer = make_trainer(config)
    fit_step(trainer, step=1)
    td = update_batch(trainer)
    # Large advantages put some covariances inside Clip-Cov's (1, 5) window.
    td["advantages"] = td["advantages"] * 25
    new_log_probs = moved_log_probs(td)
    worker_config = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert worker_config.policy_loss.loss_mode == algorithm
    torch.manual_seed(7)  # Clip-Cov draws the detached tokens with torch.randperm
    verl_loss, verl_metrics = ppo_loss(worker_config, {"log_probs": new_log_probs}, td)

    log_prob = no_padding_2_padding(new_log_probs, td)
    local = verl_policy_loss(cfg, algorithm, "token-mean")
    torch.manual_seed(7)
    local_loss, local_metrics = local(
        log_prob, td["old_log_probs"], td["advantages"], td["response_mask"]
    )
    torch.testing.assert_close(local_loss, verl_loss, rtol=0, atol=0)
    assert local_metrics["actor/ppo_kl"] == pytest.approx(verl_metrics["actor/ppo_kl"].values[0])
    vanilla, _ = ppo_clip_loss(
        log_prob, td["old_log_probs"], td["advantages"], td["response_mask"], clip_ratio_c=math.inf
    )
    assert not torch.isclose(local_loss, vanilla), f"{algorithm} changed nothing on this batch"


def test_dry_run_names_each_methods_own_settings():
    from aepo.backends.verl.dry_run import algorithm_summary
    from tests.verl.test_verl_config import compose_shipped

    expected = {
        "clip_cov": "clip_cov (verl's clip_cov loss, ratio 0.0002, covariance in (1, 5))",
        "kl_cov": "kl_cov (verl's kl_cov loss, ratio 0.0002, coef 1)",
        "adaptive_entropy": "adaptive_entropy (target entropy 0.5, c from 0 by 0.005 within "
        "[0, 1] each training step)",
        "top_entropy": "top_entropy (gradient through the top 20% of tokens by entropy)",
        "entrocraft": "entrocraft (band 0.1 wide around the target entropy linear 0.65 -> 0.45 "
        "over 200 steps: above it RAFT++, below NSR, inside GRPO)",
    }
    for name, line in expected.items():
        config = compose_shipped(name)
        assert algorithm_summary(check_config(config), config.actor_rollout_ref.actor) == line


# ---- DCPO ------------------------------------------------------------------------------------


def dcpo_config(*extra):
    return compose_config("aepo.algorithm=dcpo", "aepo.target_entropy=0.45", *extra)


def test_dcpo_scores_the_grpo_rows_again_at_t_through_verls_actor_and_mixes_advantages():
    from tests.core.test_core_dcpo import authors_dcpo

    trainer = make_trainer(dcpo_config())
    wg, manager = trainer.actor_rollout_wg, trainer.rollout_manager
    entropies = []
    for step in (1, 2):
        wg.log_prob_batches.clear()
        before = entropies[-1] if entropies else 0.0  # the code's `entropy = 0` at step 1
        grpo, out = fit_step(trainer, step=step)
        entropies.append(trainer.aepo.controller.entropy)
        assert len(manager.calls) == step, "DCPO generates nothing beyond fit()'s call"
        # Two old-log-prob passes over the same rows: T = 1 (fit's), then T (DCPO's).
        first, second = wg.log_prob_batches
        assert torch.equal(first["input_ids"].values(), second["input_ids"].values())
        temperature = 1.2 if before <= 0.45 else 0.8
        assert tu.get(first, "temperature") == 1.0
        assert tu.get(second, "temperature") == temperature
        logp_t = no_padding_2_padding(fake_log_probs(second["input_ids"]) / temperature, second)
        expected = (
            authors_dcpo(
                grpo.batch["advantages"],
                grpo.batch["old_log_probs"],
                logp_t,
                grpo.batch["token_level_scores"].sum(-1),
                before,
                0.45,
            )
            * grpo.batch["response_mask"]
        )
        td = trainer.actor_rollout_wg.updates[-1]
        torch.testing.assert_close(td["advantages"], expected)
        assert "aepo_old_log_probs_t" not in td.keys(), "the T pass must not reach the workers"
        metrics = out.meta_info["metrics"]
        assert metrics["aepo/target_entropy"] == 0.45
        assert metrics["aepo/temperature"] == temperature
        assert metrics["aepo/dcpo_entropy"] == pytest.approx(before)
        assert 0 < metrics["aepo/dcpo_mix"] < 1
    # step 2 read step 1's measurement (about 0.4 < 0.45: still hot, a gap under the cap)
    assert 0.0 < entropies[0] < 0.45


def test_dcpo_resumes_the_entropy_it_reads(tmp_path):
    config = dcpo_config(f"trainer.default_local_dir={tmp_path}", "trainer.resume_mode=auto")
    trainer = make_trainer(config)
    fit_step(trainer, step=1)
    fit_step(trainer, step=2)
    trainer._save_checkpoint()
    resumed = make_trainer(config)
    resumed.global_steps = 0
    resumed._load_checkpoint()
    _, out = fit_step(trainer, step=3)
    _, out_resumed = fit_step(resumed, step=3)
    for key in ("aepo/dcpo_entropy", "aepo/temperature", "aepo/dcpo_mix"):
        assert out_resumed.meta_info["metrics"][key] == out.meta_info["metrics"][key]
    torch.testing.assert_close(
        resumed.actor_rollout_wg.updates[-1]["advantages"],
        trainer.actor_rollout_wg.updates[-1]["advantages"],
    )
    (tmp_path / "global_step_2" / STATE_FILE).unlink()
    with pytest.raises(CheckpointStateError, match="is missing"):
        make_trainer(config)._load_checkpoint()


def test_local_engines_log_probs_at_t_equal_verls_actor():
    """The local engine's second pass (``score(temperature=T)``) against the functions verl's
    FSDP engine applies to logits / T (transformer_impl.py), on the same logits."""
    from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits

    from aepo.core import token_logprobs_and_entropy

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 17, generator=gen) * 3
    tokens = torch.randint(0, 17, (3, 5), generator=gen)
    for temperature in (1.2, 0.8):
        ours, our_entropy = token_logprobs_and_entropy(logits, tokens, temperature=temperature)
        scaled = logits / temperature
        torch.testing.assert_close(ours, logprobs_from_logits(scaled, tokens))
        torch.testing.assert_close(our_entropy, entropy_from_logits(scaled))


# ---- EntroPIC --------------------------------------------------------------------------------


def entropic_config(*extra):
    return compose_config(
        "aepo.algorithm=entropic",
        "aepo.target_entropy=0.35",
        "aepo.baselines.entropic.update=training_step",
        *extra,
    )


def test_entropic_installs_the_pi_controllers_alpha_in_the_workers_loss_each_step():
    from tests.core.test_core_entropic import authors_alphas

    trainer = make_trainer(entropic_config())
    measured, installed = [], []
    for step in (1, 2, 3):
        _, out = fit_step(trainer, step=step)
        measured.append(trainer.aepo.controller.entropy)
        fn = trainer.actor_rollout_wg.loss_fns[-1]
        installed.append(fn.keywords["control_alpha"])
        assert fn.keywords["high_prob_threshold"] == 0.95
        assert out.meta_info["metrics"]["aepo/entropic_alpha"] == installed[-1]
        assert out.meta_info["metrics"]["aepo/target_entropy"] == 0.35
    expected, integral = authors_alphas(measured, 0.35)
    assert installed == pytest.approx(expected)
    assert trainer.aepo.entropic.integral == pytest.approx(integral)
    assert all(a > 0 for a in installed), "fake pi_old's entropy ~0.4 is above 0.35"


def test_local_engines_entropic_loss_equals_the_verl_workers_on_the_same_batch():
    from aepo.backends.verl._verl_internals import actor_loss_config, entropic_ppo_loss
    from aepo.core import entropic_adjust_loss

    config = entropic_config()
    trainer = make_trainer(config)
    fit_step(trainer, step=1)
    td = update_batch(trainer)
    # pi_theta sure of most tokens: some above the 0.95 threshold, some below
    old = fake_log_probs(td["input_ids"])
    values = -0.03 * (torch.arange(old.values().numel()) % 4).float()
    new_log_probs = torch.nested.nested_tensor_from_jagged(values, offsets=old.offsets())
    worker_config = actor_loss_config(config)
    alpha = 0.6
    verl_loss, _ = entropic_ppo_loss(
        worker_config,
        {"log_probs": new_log_probs},
        td,
        control_alpha=alpha,
        high_prob_threshold=0.95,
    )
    log_prob = no_padding_2_padding(new_log_probs, td)
    mask = td["response_mask"]
    local = ppo_clip_loss(log_prob, td["old_log_probs"], td["advantages"], mask)[0]
    adjust = entropic_adjust_loss(
        log_prob, td["old_log_probs"], td["advantages"], mask, alpha, 0.95
    )
    torch.testing.assert_close(local + adjust, verl_loss)
    assert adjust.abs() > 1e-4, "the term acted on this batch"
    high = (log_prob > math.log(0.95)) & mask.bool()
    assert 0 < high.sum() < mask.sum()


def test_entropic_integral_resumes_from_aepo_state(tmp_path):
    config = entropic_config(f"trainer.default_local_dir={tmp_path}", "trainer.resume_mode=auto")
    trainer = make_trainer(config)
    fit_step(trainer, step=1)
    fit_step(trainer, step=2)
    trainer._save_checkpoint()
    resumed = make_trainer(config)
    resumed.global_steps = 0
    resumed._load_checkpoint()
    assert resumed.aepo.entropic.state_dict() == trainer.aepo.entropic.state_dict()
    assert resumed.aepo.entropic.integral != 0
    _, out = fit_step(trainer, step=3)
    _, out_resumed = fit_step(resumed, step=3)
    for key in ("aepo/entropic_alpha", "aepo/entropic_integral"):
        assert out_resumed.meta_info["metrics"][key] == out.meta_info["metrics"][key]
    (tmp_path / "global_step_2" / STATE_FILE).unlink()
    with pytest.raises(CheckpointStateError, match="is missing"):
        make_trainer(config)._load_checkpoint()


def test_entropic_on_verl_needs_the_training_step_cadence():
    from aepo.core import ConfigError

    with pytest.raises(ConfigError, match="entropic.update=training_step"):
        check_config(compose_config("aepo.algorithm=entropic"))
    assert check_config(entropic_config()).algorithm == "entropic"


# ---- Entrocraft ------------------------------------------------------------------------------


def entrocraft_config(*extra):
    return compose_config("aepo.algorithm=entrocraft", *extra)


@pytest.mark.parametrize(
    ("keys", "mode"),
    [
        (("aepo.target_entropy=0.1",), "raftpp"),  # H ~0.4 above [0.05, 0.15]
        (("aepo.target_entropy=2.0",), "nsr"),  # below [1.95, 2.05]
        (("aepo.target_entropy=0.5", "aepo.baselines.entrocraft.band_width=1.0"), "grpo"),
        (("aepo.target_entropy=0.3", "aepo.baselines.entrocraft.variant=fixed"), "fixed"),
    ],
)
def test_entrocraft_advantages_on_verl_equal_the_local_engines_and_the_codes(keys, mode):
    """verl's update gets, for the entropy of its own old-log-prob pass, the advantages the
    local engine computes from the same rewards and groups (group_advantage, then the core's
    shaping), which are the code's on 2R - 1."""
    from aepo.core import group_advantage, shape_advantages
    from tests.core.test_core_entrocraft import code_grpo_range

    config = entrocraft_config(*keys)
    trainer = make_trainer(config)
    alpha_before = None  # the fixed variant's state before the step
    for step in (1, 2):
        grpo, out = fit_step(trainer, step=step)
        entropy = trainer.aepo.controller.entropy
        metrics = out.meta_info["metrics"]
        verl_advantages = trainer.actor_rollout_wg.updates[-1]["advantages"]
        assert len(trainer.rollout_manager.calls) == step, "no generation beyond fit()'s"

        # the local engine's path on the same rows
        cfg = trainer.aepo_cfg
        local = AEPOStep(cfg)
        if alpha_before is not None:
            local.entrocraft_alpha.load_state_dict(alpha_before)
        measured = local.measured(local.begin(step, num_prompts=4, samples_per_prompt=4), entropy)
        mask = grpo.batch["response_mask"]
        scores = grpo.batch["token_level_scores"].sum(-1)
        uids = list(grpo.non_tensor_batch["uid"])
        seq = group_advantage(scores, uids)
        local_advantages, local_metrics = shape_advantages(
            cfg, seq.unsqueeze(1) * mask, mask, scores=scores, entrocraft=measured.entrocraft
        )
        torch.testing.assert_close(verl_advantages, local_advantages.to(verl_advantages.dtype))
        assert measured.entrocraft.mode == mode
        for key, value in local_metrics.items():
            assert metrics[key] == pytest.approx(value), key
        if mode != "fixed":
            signed = torch.zeros_like(mask, dtype=torch.float32)
            signed[torch.arange(len(mask)), mask.sum(-1).long() - 1] = 2 * scores - 1
            lower, upper = measured.entrocraft.lower, measured.entrocraft.upper
            code = code_grpo_range(signed, mask.float(), entropy, lower, upper, uids)
            torch.testing.assert_close(
                verl_advantages, code.to(verl_advantages.dtype), atol=1e-5, rtol=0
            )
        alpha_before = (
            trainer.aepo.entrocraft_alpha.state_dict()
            if trainer.aepo.entrocraft_alpha is not None
            else None
        )
        assert 0 < scores.mean() < 1, "the batch has right and wrong answers"


def test_entrocraft_needs_verls_grpo_estimator():
    from aepo.core import ConfigError

    with pytest.raises(ConfigError, match="adv_estimator=grpo"):
        check_config(entrocraft_config("algorithm.adv_estimator=rloo"))
    assert check_config(entrocraft_config()).algorithm == "entrocraft"


# ---- the guard's revival bonus (AEPO) -------------------------------------------------------


def test_revival_bonus_goes_into_the_workers_loss_only_while_the_policy_has_no_positive():
    """A policy already dry for 5 steps (the guard's state, as a resumed run holds it) and a
    step with no positive either (``reward_threshold`` 1.5): the update's loss is verl's
    ppo_loss with the bonus as ``entropy_coeff``, and verl is asked to compute pi_theta's
    entropy for it; then a step with positives takes both back."""
    from dataclasses import replace

    from aepo.core.controller import GuardState

    trainer = make_trainer(compose_config("aepo.reward_threshold=1.5"))
    assert trainer.config.actor_rollout_ref.actor.calculate_entropy is False
    _, out = fit_step(trainer, step=1)
    assert out.meta_info["metrics"]["aepo/revival_coef"] == 0.0
    assert trainer.actor_rollout_wg.loss_fns == [], "a healthy step re-sends no loss"
    dry = GuardState(dry_steps=5, revival_coef=0.03, start_entropy=10.0, reward=0.0, best=0.5)
    trainer.aepo.controller = replace(trainer.aepo.controller, guard=dry)
    _, out = fit_step(trainer, step=2)
    assert out.meta_info["metrics"]["aepo/revival_coef"] == pytest.approx(0.03)
    (fn,) = trainer.actor_rollout_wg.loss_fns
    assert fn.func is ppo_loss and fn.keywords["config"].entropy_coeff == pytest.approx(0.03)
    assert tu.get(trainer.actor_rollout_wg.updates[-1], "calculate_entropy") is True
    assert trainer.aepo.controller.guard.revival_coef == pytest.approx(0.035)

    trainer.aepo_cfg = trainer.aepo.cfg = trainer.aepo_cfg.model_copy(
        update={"reward_threshold": 0.5}
    )  # the fake rewards have positives at 0.5: the policy is alive again
    _, out = fit_step(trainer, step=3)
    assert out.meta_info["metrics"]["aepo/revival_coef"] == 0.0
    assert [f.keywords["config"].entropy_coeff for f in trainer.actor_rollout_wg.loss_fns] == [
        pytest.approx(0.03),
        0.0,
    ]
    assert tu.get(trainer.actor_rollout_wg.updates[-1], "calculate_entropy") is False


def test_revival_bonus_is_refused_in_one_warning_where_it_would_replace_a_loss(caplog):
    """With distillation on, verl's ppo_loss would drop the distillation loss (and V1's actor
    cannot swap its loss): no bonus, ``aepo/revival_coef`` 0, one warning for the run."""
    import logging

    from aepo.backends.verl.revival import RevivalBonus

    revival = RevivalBonus(compose_config("distillation.enabled=true"))
    with caplog.at_level(logging.WARNING, logger="aepo.backends.verl.revival"):
        for _ in range(3):
            assert revival.entropy_coeff(0.03, None) == (None, {"aepo/revival_coef": 0.0})
        assert revival.refuse("trainer.use_v1=true") == {"aepo/revival_coef": 0.0}
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "distillation.enabled=true" in warning and "\n" not in warning
    assert revival.entropy_coeff(0.0, None) == (None, {}), "no bonus due: nothing to refuse"
