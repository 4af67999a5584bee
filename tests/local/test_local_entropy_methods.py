"""Each of the field's entropy controls has its own effect in the local engine (CPU, a few real
steps on the built-in task, and the engine's own loss on hand-made tensors)."""

from __future__ import annotations

import math

import pytest
import torch

from aepo.backends.local.checkpoint import latest_checkpoint
from aepo.backends.local.presets import tiny_run_config
from aepo.backends.local.settings import run_config_from_dict
from aepo.backends.local.trainer import LocalTrainer
from aepo.core import AEPOConfig, ppo_clip_loss
from tests.local.test_local_engine import small_config


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("aepo_cache")


def test_top_entropy_updates_only_through_the_top_fifth_of_tokens(cache_dir, tmp_path):
    trainer = LocalTrainer(small_config(cache_dir, tmp_path, "top_entropy", steps=1))
    seen = {}
    update = trainer._update

    def capture(batch, *args):
        seen["batch"] = batch
        seen["old_entropy"] = trainer._score_rows(batch.rollout, with_entropy=True)[1]  # pi_old
        return update(batch, *args)

    trainer._update = capture
    metrics = trainer.train_step()
    batch = seen["batch"]
    mask = batch.rollout.response_mask.bool()
    old_entropy = seen["old_entropy"]
    threshold = torch.quantile(old_entropy[mask].float(), 0.8)  # TRL 1.16's rule, whole batch
    assert metrics["aepo/top_entropy_threshold"] == pytest.approx(float(threshold))
    selected = (old_entropy >= threshold) & mask
    assert metrics["aepo/top_entropy_token_fraction"] == pytest.approx(
        float(selected.sum() / mask.sum())
    )
    assert 0.15 < metrics["aepo/top_entropy_token_fraction"] <= 0.35  # 0.2 plus ties
    assert torch.all(batch.advantages[~selected] == 0)

    # The engine's loss gives the other tokens no gradient, whatever their advantage was.
    advantages = torch.where(selected, batch.advantages, torch.ones_like(batch.advantages))
    advantages[~selected] = 0  # what top_entropy leaves them
    advantages[selected] = 1.0
    log_prob = batch.old_logp.clone().requires_grad_()
    loss, _ = trainer._policy_loss(log_prob, batch.old_logp, advantages, mask)
    loss.backward()
    assert torch.all(log_prob.grad[~selected] == 0)
    # ... and the denominator counts every response token (ratio 1: loss = -sum(A) / tokens).
    torch.testing.assert_close(
        log_prob.grad[selected], -torch.ones(int(selected.sum())) / mask.sum()
    )


def adaptive(cache_dir, out, target, steps=2, **section):
    raw = tiny_run_config(
        "adaptive_entropy",
        target,
        output_dir=str(out),
        steps=steps,
        prompts_per_step=6,
        samples_per_prompt=4,
        mini_batches=2,
        save_every=1,
        progress=False,
        torch_threads=1,
        cache_dir=str(cache_dir),
        warm_start={"steps": 100, "batch_size": 64, "valid_fraction": 1.0},
    )
    raw["aepo"]["baselines"] = {"adaptive_entropy": {"step": 0.01, **section}}
    return run_config_from_dict(raw, source="test")


def test_adaptive_entropy_coefficient_moves_towards_the_target_each_optimizer_step(
    cache_dir, tmp_path
):
    # Target far above the measured entropy: c grows by one step per optimizer step (2
    # mini-batches x 2 steps); the bonus applies from the second optimizer step on (TRL: no
    # measurement before the first), so the step means are (0 + 0.01) / 2 and (0.02 + 0.03) / 2.
    history = LocalTrainer(adaptive(cache_dir, tmp_path / "up", 50.0)).fit()
    assert [h["aepo/entropy_coef"] for h in history] == pytest.approx([0.02, 0.04])
    assert [h["aepo/entropy_coef_applied"] for h in history] == pytest.approx([0.005, 0.025])
    assert all(h["aepo/target_entropy"] == 50.0 for h in history)  # aepo plot draws it
    # Far below: the coefficient stays at its floor and no bonus is applied.
    history = LocalTrainer(adaptive(cache_dir, tmp_path / "down", 1e-3)).fit()
    assert all(h["aepo/entropy_coef"] == 0 for h in history)
    assert all(h["aepo/entropy_coef_applied"] == 0 for h in history)


def test_adaptive_entropy_resumes_its_coefficient(cache_dir, tmp_path):
    config = adaptive(cache_dir, tmp_path / "run", 50.0, steps=3, update="training_step")
    straight = LocalTrainer(config).fit()
    config = adaptive(cache_dir, tmp_path / "stopped", 50.0, steps=3, update="training_step")
    LocalTrainer(config).fit(steps=2)
    resumed = LocalTrainer(config, resume_from=latest_checkpoint(tmp_path / "stopped"))
    assert resumed.aepo.adaptive_entropy.coef == pytest.approx(0.02)
    (last,) = resumed.fit()
    # training_step: alpha_k = c_k (0, 0.01, 0.02 applied), c after step 3 = 0.03.
    assert last["aepo/entropy_coef_applied"] == pytest.approx(0.02)
    assert last["aepo/entropy_coef_applied"] == straight[-1]["aepo/entropy_coef_applied"]
    assert last["aepo/entropy_coef"] == pytest.approx(straight[-1]["aepo/entropy_coef"])


def cov_batch():
    """Two rows whose covariances fall inside Clip-Cov's (1, 5) window."""
    gen = torch.Generator().manual_seed(3)
    old = -torch.rand(2, 6, generator=gen)
    new = old + 0.01 * torch.randn(2, 6, generator=gen)
    adv = torch.tensor([[8.0] * 6, [-8.0] * 6])
    new[0, 2] = -0.05  # a likely token with a large advantage: the largest covariance
    return new, old, adv, torch.ones(2, 6)


@pytest.mark.parametrize("algorithm", ["clip_cov", "kl_cov"])
def test_cov_losses_act_on_the_highest_covariance_tokens_only(algorithm):
    cfg = AEPOConfig(algorithm=algorithm)
    stub = type("Stub", (), {})()
    stub.cfg, stub.settings = cfg, type("S", (), {"loss_agg": "token-mean"})()
    stub.recipe = type("R", (), {"policy_loss": algorithm})()
    loss_fn = LocalTrainer._make_policy_loss(stub)
    new, old, adv, mask = cov_batch()
    log_prob = new.clone().requires_grad_()
    loss, _ = loss_fn(log_prob, old, adv, mask)
    loss.backward()
    plain = new.clone().requires_grad_()
    if algorithm == "clip_cov":  # PPO-clip without dual clip, minus the detached tokens
        reference, _ = ppo_clip_loss(plain, old, adv, mask, clip_ratio_c=float("inf"))
    else:  # KL-Cov replaces clipping: the plain ratio surrogate, plus the penalty on top-k
        reference = (-adv * torch.exp(plain - old) * mask).sum() / mask.sum()
    reference.backward()
    changed = ~torch.isclose(log_prob.grad, plain.grad)
    # 12 tokens x ratio 2e-4 rounds up to one token, the only one whose gradient differs:
    # detached by Clip-Cov, pulled back towards pi_old by KL-Cov's penalty.
    assert changed.sum() == 1
    if algorithm == "clip_cov":
        assert log_prob.grad[changed].item() == 0
    else:
        expected_extra = cfg.baselines.kl_cov.coef * torch.sign(new - old)[changed] / mask.sum()
        torch.testing.assert_close(
            log_prob.grad[changed] - plain.grad[changed], expected_extra, rtol=1e-4, atol=1e-6
        )


# ---- DCPO ------------------------------------------------------------------------------------


def test_dcpo_scores_the_grpo_samples_again_at_t_and_mixes_their_advantages(cache_dir, tmp_path):
    """The local engine's DCPO on its real model: the update's advantages are the authors'
    formula on the GRPO samples' log-probs at T = 1 and at T (the model's logits / T), with no
    extra generation; step 2 reads step 1's measurement; the state resumes exactly."""
    from aepo.backends.local.rollout import score
    from tests.core.test_core_dcpo import authors_dcpo

    config = small_config(cache_dir, tmp_path, "dcpo", steps=2, target_entropy=0.3)
    trainer = LocalTrainer(config)
    seen, temperatures = {}, []
    update, sample = trainer._update, trainer._sample

    def capture(batch, measured):
        seen["batch"], seen["measured"] = batch, measured
        logp_t, _ = score(
            trainer.model,
            batch.rollout,
            chunk_rows=64,
            with_entropy=False,
            temperature=measured.dcpo.temperature,
        )
        seen["logp_t"] = logp_t
        return update(batch, measured)

    def record(*args):
        temperatures.append(args[-1])
        return sample(*args)

    scored = []
    rewards = trainer._rewards

    def keep(rollout, truths):
        scored.append(rewards(rollout, truths))
        return scored[-1]

    trainer._update, trainer._sample, trainer._rewards = capture, record, keep
    entropies = []
    for step in (1, 2):
        before = entropies[-1] if entropies else 0.0
        scored.clear()
        metrics = trainer.train_step()
        entropies.append(metrics["actor/entropy"])
        assert temperatures == [1.0] * step, "DCPO generates only the GRPO group, at T = 1"
        batch, measured = seen["batch"], seen["measured"]
        mask = batch.rollout.response_mask
        temperature = 1.2 if before <= 0.3 else 0.8
        assert measured.dcpo.temperature == temperature == metrics["aepo/temperature"]
        assert metrics["aepo/dcpo_entropy"] == pytest.approx(before)
        (r,) = scored  # the GRPO group's rewards: DCPO scores nothing else
        group = r.view(-1, 4)
        std = group.std(-1, keepdim=True)
        grpo = ((group - group.mean(-1, keepdim=True)) / (std + 1e-6)).view(-1)
        expected = (
            authors_dcpo(grpo.unsqueeze(1) * mask, batch.old_logp, seen["logp_t"], r, before, 0.3)
            * mask
        )
        torch.testing.assert_close(batch.advantages, expected, rtol=1e-4, atol=1e-5)
        assert not torch.equal(seen["logp_t"] * mask, batch.old_logp * mask)
    assert metrics["aepo/target_entropy"] == 0.3 and 0 < metrics["aepo/dcpo_mix"] < 1

    # What DCPO keeps (the previous step's entropy) comes back with a checkpoint.
    path = trainer.save()
    resumed = LocalTrainer(config, resume_from=path)
    assert resumed.aepo.controller.entropy == pytest.approx(entropies[-1])
    assert resumed.aepo.state_dict()["controller"] == trainer.aepo.state_dict()["controller"]


# ---- EntroPIC --------------------------------------------------------------------------------


def test_entropic_sets_alpha_each_optimizer_step_from_pi_thetas_entropy(cache_dir, tmp_path):
    """The code's cadence: every optimizer step's alpha comes from that mini-batch's entropy of
    pi_theta and the integral so far; the integral resumes with the checkpoint."""
    from tests.core.test_core_entropic import authors_alphas

    config = small_config(cache_dir, tmp_path, "entropic", steps=2, target_entropy=0.6)
    trainer = LocalTrainer(config)
    seen = []
    step = trainer.aepo.entropic.step

    def record(entropy, target):
        alpha = step(entropy, target)
        seen.append((entropy, alpha))
        return alpha

    trainer.aepo.entropic.step = record
    history = [trainer.train_step(), trainer.train_step()]
    assert len(seen) == 2 * 2, "one alpha per optimizer step (2 mini-batches x 2 steps)"
    expected, integral = authors_alphas([h for h, _ in seen], 0.6)
    assert [a for _, a in seen] == pytest.approx(expected)
    assert history[-1]["aepo/entropic_alpha"] == pytest.approx(sum(expected[2:]) / 2)
    assert history[-1]["aepo/entropic_integral"] == pytest.approx(integral)
    assert history[-1]["aepo/target_entropy"] == 0.6

    trainer.step = 2
    path = trainer.save()
    resumed = LocalTrainer(config, resume_from=path)
    assert resumed.aepo.entropic.integral == pytest.approx(integral)


def test_entropics_term_raises_likely_tokens_above_the_target_and_lowers_them_below(
    cache_dir, tmp_path
):
    """Its own effect in the engine: one update of the same batch from the same weights, with
    alpha +1 (entropy above H*), 0 (plain GRPO) and -1 (below H*): the tokens pi_old gives
    p > 0.95, where the term acts, end more likely the larger alpha is."""
    import copy
    from dataclasses import replace

    from aepo.backends.local.rollout import score

    config = small_config(
        cache_dir,
        tmp_path,
        "entropic",
        steps=1,
        baselines={"entropic": {"update": "training_step"}},
    )
    trainer = LocalTrainer(config)
    seen = {}
    trainer._update = lambda batch, measured: seen.update(batch=batch, measured=measured) or {}
    trainer.train_step()
    batch, measured = seen["batch"], seen["measured"]
    mask = batch.rollout.response_mask.bool()
    likely = (batch.old_logp > math.log(0.95)) & mask
    assert 0 < likely.sum() < mask.sum()
    weights = copy.deepcopy(trainer.model.state_dict())
    lifted = {}
    for alpha in (1.0, 0.0, -1.0):
        trainer.model.load_state_dict(weights)
        trainer.optimizer = trainer._new_optimizer()
        LocalTrainer._update(trainer, batch, replace(measured, entropic_alpha=alpha))
        with torch.no_grad():
            logp, _ = score(trainer.model, batch.rollout, chunk_rows=64, with_entropy=False)
        lifted[alpha] = float((logp - batch.old_logp)[likely].mean())
    assert lifted[1.0] > lifted[0.0] > lifted[-1.0]


@pytest.mark.parametrize(
    ("algorithm", "signals"),
    [
        ("dcpo", ("aepo/dcpo_mix", "aepo/dcpo_entropy", "aepo/temperature")),
        ("entropic", ("aepo/entropic_alpha", "aepo/entropic_integral")),
    ],
)
def test_a_resumed_run_continues_the_same_control(cache_dir, tmp_path, algorithm, signals):
    """Stopped after step 2 and resumed from its checkpoint, steps 3 and 4 carry the same
    control signal as a run that never stopped (DCPO's previous entropy, EntroPIC's integral)."""
    from tests.local.test_local_engine import small_config as config_for

    straight = LocalTrainer(config_for(cache_dir, tmp_path / "straight", algorithm, steps=4)).fit()
    config = config_for(cache_dir, tmp_path / "resumed", algorithm, steps=4)
    config.trainer.save_every = 2
    LocalTrainer(config).fit(steps=2)
    resumed = LocalTrainer(config, resume_from=latest_checkpoint(tmp_path / "resumed")).fit()
    assert [h["step"] for h in resumed] == [3, 4]
    for a, b in zip(straight[2:], resumed, strict=True):
        for key in (*signals, "actor/entropy", "aepo/target_entropy"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


# ---- Entrocraft ------------------------------------------------------------------------------


def test_entrocraft_trains_on_the_codes_advantages_for_this_steps_entropy(cache_dir, tmp_path):
    """The local engine's Entrocraft on its real model: the band around the scheduled target,
    the mode from this step's own pi_old entropy, the update's advantages the authors' code on
    2R - 1, no generation beyond the GRPO group, the fixed variant's alpha resumed."""
    from aepo.core.entropy_methods import entrocraft_mode
    from tests.core.test_core_entrocraft import code_entropic, code_grpo_range

    schedule = {"kind": "linear", "start": 3.0, "steps": 2}
    config = small_config(
        cache_dir, tmp_path, "entrocraft", steps=3, target_entropy=0.05, target_schedule=schedule
    )
    trainer = LocalTrainer(config)
    seen, temperatures, scored = {}, [], []
    update, sample, rewards = trainer._update, trainer._sample, trainer._rewards

    def capture(batch, measured):
        seen["batch"], seen["measured"] = batch, measured
        return update(batch, measured)

    def record(*args):
        temperatures.append(args[-1])
        return sample(*args)

    def keep(rollout, truths):
        scored.append(rewards(rollout, truths))
        return scored[-1]

    trainer._update, trainer._sample, trainer._rewards = capture, record, keep
    modes = []
    for step, centre in zip((1, 2, 3), (3.0, 1.525, 0.05), strict=True):
        scored.clear()
        metrics = trainer.train_step()
        assert temperatures == [1.0] * step, "Entrocraft generates only the GRPO group"
        batch, measured = seen["batch"], seen["measured"]
        lower, upper = centre - 0.05, centre + 0.05
        assert (metrics["aepo/entrocraft_lower"], metrics["aepo/entrocraft_upper"]) == (
            pytest.approx(lower),
            pytest.approx(upper),
        )
        entropy = metrics["actor/entropy"]
        modes.append(entrocraft_mode(entropy, lower, upper))
        assert measured.entrocraft.mode == modes[-1]
        (r,) = scored
        mask = batch.rollout.response_mask.float()
        signed = torch.zeros_like(mask)
        signed[torch.arange(len(mask)), mask.sum(-1).long() - 1] = 2 * r - 1
        groups = [i // 4 for i in range(len(r))]
        expected = code_grpo_range(signed, mask, entropy, lower, upper, groups)
        torch.testing.assert_close(batch.advantages, expected, rtol=0, atol=1e-5)
    assert modes[0] == "nsr" and modes[-1] == "raftpp", modes

    fixed = small_config(
        cache_dir,
        tmp_path / "fixed",
        "entrocraft",
        steps=2,
        target_entropy=0.4,
        baselines={"entrocraft": {"variant": "fixed"}},
    )
    trainer = LocalTrainer(fixed)
    seen.clear()
    update, rewards = trainer._update, trainer._rewards
    trainer._update, trainer._rewards, last = capture, keep, 0.0
    for _ in range(2):
        scored.clear()
        metrics = trainer.train_step()
        batch, entropy, (r,) = seen["batch"], metrics["actor/entropy"], scored
        assert metrics["aepo/entrocraft_alpha"] == pytest.approx(last + entropy - 0.4)
        mask = batch.rollout.response_mask.float()
        signed = torch.zeros_like(mask)
        signed[torch.arange(len(mask)), mask.sum(-1).long() - 1] = 2 * r - 1
        expected, last = code_entropic(signed, mask, entropy, 0.4, last)
        torch.testing.assert_close(batch.advantages, expected, rtol=0, atol=1e-5)
    assert trainer.aepo.entrocraft_alpha.last_alpha == pytest.approx(last)
    resumed = LocalTrainer(fixed, resume_from=trainer.save())
    assert resumed.aepo.entrocraft_alpha.last_alpha == pytest.approx(last)


def test_the_guards_revival_bonus_raises_the_entropy_of_a_policy_without_positives(
    cache_dir, tmp_path
):
    """No sample reaches ``reward_threshold`` 1.5: to the guard every step is dry, as for a
    dead policy. From the first dry step on (``guard_patience`` 1) the bonus's coefficient
    grows (here 0.5 a step, to show in 3 steps), and the engine's update applies it: the
    GRPO part is the same with ``revival_step`` 0, so only the bonus tells the runs apart."""

    def run(name, revival_step):
        controller = {"guard_patience": 1, "revival_step": revival_step}
        config = small_config(
            cache_dir, tmp_path / name, reward_threshold=1.5, controller=controller
        )
        return LocalTrainer(config).fit()

    revived, off = run("revived", 0.5), run("off", 0.0)
    assert [h["aepo/revival_coef"] for h in revived] == [0.0, 0.5, 0.0]
    assert all(h["aepo/revival_coef"] == 0.0 for h in off)
    assert all(h["aepo/guard"] == 1.0 for h in revived + off)
    # step 1 applied no bonus: identical; step 2's update had it: step 3 measures more entropy
    # (which is now above the run's first, so the bonus stops there)
    assert revived[1]["actor/entropy"] == off[1]["actor/entropy"]
    assert revived[2]["actor/entropy"] > off[2]["actor/entropy"] + 0.05
