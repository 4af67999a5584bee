"""AEPORayTrainer's AEPO step on real verl objects (CPU).

The trainer is built with ``object.__new__`` (no Ray workers: RayPPOTrainer.__init__ would need a cluster) and given fake
worker groups and a fake rollout manager. Everything between them is verl's and ours:
DataProto, ``_get_gen_batch``, ``_balance_batch``, ``_compute_old_log_prob``,
``compute_advantage`` (GRPO), ``_update_actor``, the no-padding conversion, ``ppo_loss``.
"""

from __future__ import annotations

import json
import math
import uuid

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from hydra import compose, initialize_config_module  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.core_algos import AdvantageEstimator  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage, compute_response_mask  # noqa: E402
from verl.trainer.ppo.reward import extract_reward  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.utils.config import omega_conf_to_dataclass  # noqa: E402
from verl.workers.utils.losses import ppo_loss  # noqa: E402
from verl.workers.utils.padding import no_padding_2_padding  # noqa: E402

from aepo.backends.verl.agent_loop import (  # noqa: E402
    AGENT_NAME,
    FIT_CALL,
    SECOND_CALL,
    SEED_FIELD,
    TEMPERATURE_FIELD,
    request_seeds,
)
from aepo.backends.verl.checkpoint import STATE_FILE, CheckpointStateError  # noqa: E402
from aepo.backends.verl.log_prob_passes import add_reinforce_log_probs  # noqa: E402
from aepo.backends.verl.trainer import AEPORayTrainer, aepo_config_from  # noqa: E402
from aepo.core import ppo_clip_loss  # noqa: E402
from aepo.core.config import READS  # noqa: E402
from tests.decisions import record_decisions  # noqa: E402
from tests.verl.verl_fakes import (  # noqa: E402
    FakeActorWorkerGroup,
    FakeCheckpointManager,
    FakeDataloader,
    FakeRolloutManager,
    fake_entropy,
    fake_log_probs,
)

PROMPTS = 8  # per step
N = 4  # responses per prompt
DP = 2


def compose_config(*overrides: str):
    base = [
        "data.train_files=unused",
        "data.val_files=unused",
        f"data.train_batch_size={PROMPTS}",
        f"actor_rollout_ref.rollout.n={N}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",  # 16 rows: 2 mini-batches
        "actor_rollout_ref.rollout.agent.num_workers=4",
        "trainer.n_gpus_per_node=2",
    ]
    algorithm = next(
        (o.split("=", 1)[1] for o in overrides if o.startswith("aepo.algorithm=")), "aepo"
    )
    if "samples_up" in READS[algorithm]:  # the extra pass's knobs, for the algorithms with one
        base += ["aepo.samples_up=6", "aepo.samples_down=3", "aepo.extra_rollout.min_samples=4"]
    with initialize_config_module("aepo.backends.verl.config", version_base=None):
        return compose("aepo_trainer", overrides=base + list(overrides))


def make_trainer(config) -> AEPORayTrainer:
    trainer = object.__new__(AEPORayTrainer)
    trainer.config = config
    trainer.global_steps = 1
    trainer.use_critic = False
    trainer.use_reference_policy = False
    trainer.use_rm = False
    trainer.actor_rollout_wg = FakeActorWorkerGroup(DP)
    trainer.checkpoint_manager = FakeCheckpointManager()
    trainer.train_dataloader = FakeDataloader()
    trainer.setup_aepo(aepo_config_from(config))
    # as init_workers does: fit()'s training generate call is where each step begins
    trainer.async_rollout_manager = trainer.wrap_rollout_manager(FakeRolloutManager())
    return trainer


def dataset_batch(step: int) -> dict:
    """What RLHFDataset + collate_fn yield (verl/utils/dataset/rl_dataset.py), for PROMPTS prompts."""
    idx = np.arange(PROMPTS) + step * PROMPTS
    return {
        "dummy_tensor": torch.zeros(PROMPTS, 1),
        "raw_prompt": np.array([[{"role": "user", "content": f"q{i}"}] for i in idx], dtype=object),
        "data_source": np.array(["math"] * PROMPTS, dtype=object),
        "reward_model": np.array([{"ground_truth": str(i)} for i in idx], dtype=object),
        "extra_info": np.array([{"index": int(i)} for i in idx], dtype=object),
        "index": idx,
    }


def fit_step(trainer: AEPORayTrainer, step: int):
    """ray_trainer.py fit() lines 1460-1690 for one step, calling the same methods."""
    trainer.global_steps = step
    n = trainer.config.actor_rollout_ref.rollout.n
    batch = DataProto.from_single_dict(dataset_batch(step))
    batch.meta_info["temperature"] = trainer.config.actor_rollout_ref.rollout.temperature
    batch.non_tensor_batch["uid"] = np.array(
        [str(uuid.uuid4()) for _ in range(len(batch))], dtype=object
    )
    gen_batch = trainer._get_gen_batch(batch)
    gen_batch.meta_info["global_steps"] = step
    gen_output = trainer.async_rollout_manager.generate_sequences(
        gen_batch.repeat(n, interleave=True)
    )
    trainer.checkpoint_manager.sleep_replicas()
    gen_output.meta_info.pop("timing")  # fit() reads it: the proxy must keep it
    batch = batch.repeat(repeat_times=n, interleave=True).union(gen_output)
    if "response_mask" not in batch.batch.keys():
        batch.batch["response_mask"] = compute_response_mask(batch)
    trainer._balance_batch(batch, metrics={})
    batch.meta_info["global_token_num"] = torch.sum(batch.batch["attention_mask"], dim=-1).tolist()
    reward_tensor, _ = extract_reward(batch)
    old_log_prob, _ = trainer._compute_old_log_prob(batch)
    old_log_prob.batch.pop("entropys")
    batch = batch.union(old_log_prob)
    batch.batch["token_level_scores"] = reward_tensor
    batch.batch["token_level_rewards"] = reward_tensor
    batch = compute_advantage(
        batch,
        adv_estimator=AdvantageEstimator.GRPO,
        num_repeat=n,
        norm_adv_by_std_in_grpo=True,
        config=trainer.config.algorithm,
    )
    grpo_batch = DataProto(
        batch=batch.batch.clone(),
        non_tensor_batch={k: v.copy() for k, v in batch.non_tensor_batch.items()},
        meta_info=dict(batch.meta_info),
    )
    actor_output = trainer._update_actor(batch)
    return grpo_batch, actor_output


def padded_update(trainer, call: int = -1) -> dict[str, torch.Tensor]:
    """The batch the fake actor received, back in padded form."""
    td = trainer.actor_rollout_wg.updates[call]
    keys = ["advantages", "old_log_probs", "response_mask", "responses"]
    return {k: td[k] for k in keys} | {"td": td}


def row_key(responses: torch.Tensor, advantages: torch.Tensor) -> list[tuple]:
    return [
        tuple(r.tolist()) + (round(float(a), 5),)
        for r, a in zip(responses, advantages[:, 0], strict=True)
    ]


# ---- tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aepo_config():
    return compose_config()


def test_step_one_measures_first_then_generates_extras_in_a_second_pass(aepo_config):
    trainer = make_trainer(aepo_config)
    _, out = fit_step(trainer, step=1)
    manager = trainer.rollout_manager
    assert len(manager.calls) == 2, "step 1: fit's call, then the extra pass after measuring"
    assert all(math.isnan(t) for t in manager.calls[0]["temperatures"])
    # Entropy of the fake pi_old is ~0.4 < 0.5: raise entropy, sample hot.
    extra_temps = set(manager.calls[1]["temperatures"])
    assert extra_temps == {aepo_config.aepo.t_high}
    assert set(manager.calls[1]["agents"]) == {AGENT_NAME}
    # The second pass woke the replicas (update_weights) and put them back to sleep.
    assert trainer.checkpoint_manager.events[-2:] == [("update_weights", 1), ("sleep",)]
    metrics = out.meta_info["metrics"]
    assert metrics["aepo/direction"] == 1.0
    assert metrics["aepo/temperature"] == pytest.approx(1.2)
    assert 0 < metrics["aepo/reinforce_samples"] <= aepo_config.aepo.samples_up
    assert metrics["aepo/entropy"] == pytest.approx(trainer.aepo.controller.entropy)
    assert metrics["aepo/extra_gen_tokens"] > 0


def test_previous_step_puts_extras_in_the_same_generate_call(aepo_config):
    trainer = make_trainer(aepo_config)
    fit_step(trainer, step=1)
    calls_before = len(trainer.rollout_manager.calls)
    grpo, out = fit_step(trainer, step=2)
    calls = trainer.rollout_manager.calls[calls_before:]
    assert len(calls) == 1, "step 2 must not need a second generate call"
    temps = calls[0]["temperatures"]
    num_grpo = PROMPTS * N
    assert all(math.isnan(t) for t in temps[:num_grpo])
    assert set(temps[num_grpo:]) == {1.2}
    assert len(temps) % 4 == 0
    assert out.meta_info["metrics"]["aepo/reinforce_samples"] > 0
    assert len(grpo) == num_grpo, "fit's own batch keeps only the GRPO rows"


def test_per_request_seed_seeds_every_row_of_every_generate_call():
    """actor_rollout_ref.rollout.custom.per_request_seed: each row of each training generate call carries the seed of
    (rollout.seed, step, call, row), GRPO rows through our agent loop; fit()'s batch comes
    back without the request fields."""
    trainer = make_trainer(
        compose_config(
            "actor_rollout_ref.rollout.custom.per_request_seed=true",
            "actor_rollout_ref.rollout.seed=7",
        )
    )
    grpo1, _ = fit_step(trainer, step=1)
    grpo2, _ = fit_step(trainer, step=2)
    calls = trainer.rollout_manager.calls
    assert len(calls) == 3  # step 1: fit's call and the extra pass; step 2: one call
    keys = [(1, FIT_CALL), (1, SECOND_CALL), (2, FIT_CALL)]
    for call, (step, index) in zip(calls, keys, strict=True):
        assert list(call["seeds"]) == request_seeds(7, step, index, len(call["seeds"])).tolist()
        assert set(call["agents"]) == {AGENT_NAME}
    assert len(calls[2]["seeds"]) > PROMPTS * N  # the extras ride in fit's call
    for batch in (grpo1, grpo2):
        assert SEED_FIELD not in batch.non_tensor_batch
        assert TEMPERATURE_FIELD not in batch.non_tensor_batch


def test_per_request_seed_seeds_the_grpo_recipes_rows():
    trainer = make_trainer(
        compose_config(
            "aepo.algorithm=grpo", "actor_rollout_ref.rollout.custom.per_request_seed=true"
        )
    )
    fit_step(trainer, step=3)
    (call,) = trainer.rollout_manager.calls
    assert list(call["seeds"]) == request_seeds(42, 3, FIT_CALL, PROMPTS * N).tolist()


def test_requests_carry_no_seed_by_default(aepo_config):
    trainer = make_trainer(aepo_config)
    fit_step(trainer, step=1)
    assert all(call["seeds"] is None for call in trainer.rollout_manager.calls)


def test_merge_replaces_zero_advantage_rows_first_and_keeps_batch_divisible():
    # batch_share: rows keep their advantages, so GRPO rows can be recognised after the merge
    trainer = make_trainer(compose_config("aepo.alpha_meaning=batch_share"))
    grpo, out = fit_step(trainer, step=1)
    k = int(out.meta_info["metrics"]["aepo/reinforce_samples"])
    got = padded_update(trainer)
    td = got["td"]
    resp_mask = td["response_mask"]
    adv = got["advantages"]
    assert len(resp_mask) == len(grpo), "replace mode keeps the batch size"
    assert len(resp_mask) % DP == 0 and len(resp_mask) % (4 * N) == 0

    grpo_adv = grpo.batch["advantages"]
    grpo_zero = (grpo_adv.abs().amax(-1) == 0).sum().item()
    assert grpo_zero >= k, "the fake rollout yields enough zero-advantage rows"
    # Every GRPO row with a non-zero advantage is still there, unchanged.
    grpo_nonzero = grpo_adv.abs().amax(-1) != 0
    before = row_key(grpo.batch["responses"][grpo_nonzero], grpo_adv[grpo_nonzero])
    after = set(row_key(got["responses"], adv))
    assert all(r in after for r in before)
    # Exactly k rows are AEPO rows (fresh "aepo-" group uids), and the rows they took were
    # zero-advantage GRPO rows: k fewer of those remain.
    is_aepo = torch.tensor([str(u).startswith("aepo-") for u in tu.get(td, "uid")])
    assert int(is_aepo.sum()) == k > 0
    remaining_zero = int(((adv.abs().amax(-1) == 0) & ~is_aepo).sum())
    assert remaining_zero == grpo_zero - k
    # The AEPO rows carry alpha * R on their response tokens and nothing elsewhere.
    mask = resp_mask[is_aepo].bool()
    assert torch.all(adv[is_aepo][mask] == trainer.aepo_cfg.alpha)
    assert torch.all(adv[is_aepo][~mask] == 0)
    # Spread over the 2 ranks x 2 mini-batches (4 contiguous chunks of 8 rows).
    chunks = {int(i) // 8 for i in torch.nonzero(is_aepo).reshape(-1)}
    assert len(chunks) == min(4, k)
    assert out.meta_info["metrics"]["aepo/displaced_nonzero"] == 0.0


def test_aepo_rows_get_old_log_probs_from_a_t1_actor_pass(aepo_config):
    trainer = make_trainer(aepo_config)
    fit_step(trainer, step=1)
    wg = trainer.actor_rollout_wg
    # 1: GRPO old-log-prob pass, 2: the AEPO rows' pass (padded to dp).
    assert len(wg.log_prob_batches) == 2
    extra_pass = wg.log_prob_batches[1]
    assert tu.get(extra_pass, "temperature") == 1.0
    assert len(extra_pass["response_mask"]) % DP == 0
    td = wg.updates[-1]
    expected = no_padding_2_padding(fake_log_probs(td["input_ids"]), td)
    mask = td["response_mask"].bool()
    assert torch.allclose(td["old_log_probs"][mask], expected[mask])


def aepo_rows(count: int) -> DataProto:
    """``count`` rows as the merge builds them, with the keys the log-prob passes read."""
    rows = FakeRolloutManager().generate_sequences(
        DataProto.from_single_dict({"index": np.arange(4)}).repeat(4)
    )[:count]
    rows.meta_info = {"temperature": 1.0}
    rows.batch["old_log_probs"] = torch.zeros_like(rows.batch["response_mask"], dtype=torch.float)
    rows.batch["ref_log_prob"] = torch.zeros_like(rows.batch["old_log_probs"])
    return rows


@pytest.mark.parametrize("actor_micro,ref_micro,padded", [(2, None, 8), (2, 3, 12), (4, 2, 8)])
def test_aepo_rows_pass_is_padded_to_whole_micro_batches(actor_micro, ref_micro, padded):
    # Without dynamic bsz each rank's chunk must be whole micro-batches, and the reference
    # worker has its own micro-batch size (_verl_internals.log_prob_pass_divisor).
    overrides = [
        "actor_rollout_ref.actor.use_dynamic_bsz=false",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={actor_micro}",
    ]
    if ref_micro is not None:
        overrides.append(f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={ref_micro}")
    trainer = make_trainer(compose_config(*overrides))
    wg = FakeActorWorkerGroup(DP, log_prob_micro=actor_micro, ref_micro=ref_micro)
    trainer.actor_rollout_wg = trainer.ref_policy_wg = wg
    trainer.ref_in_actor = False
    rows = aepo_rows(5)
    if ref_micro is None:
        rows.batch.pop("ref_log_prob")
    add_reinforce_log_probs(trainer, rows)
    (td,) = wg.log_prob_batches
    assert len(td["response_mask"]) == padded
    assert tu.get(td, "temperature") == 1.0
    assert len(tu.get(td, "global_token_num")) == padded
    expected = no_padding_2_padding(fake_log_probs(td["input_ids"]), td)[:5]
    mask = rows.batch["response_mask"].bool()
    assert torch.allclose(rows.batch["old_log_probs"][mask], expected[mask])
    if ref_micro is None:
        assert wg.ref_batches == []
    else:
        (ref_td,) = wg.ref_batches
        assert len(ref_td["response_mask"]) == padded
        ref = no_padding_2_padding(fake_log_probs(ref_td["input_ids"], shift=-0.5), ref_td)[:5]
        assert torch.allclose(rows.batch["ref_log_prob"][mask], ref[mask])


def test_entropy_monitor_ignores_the_aepo_rows_pass(aepo_config):
    trainer = make_trainer(aepo_config)
    history = record_decisions(trainer.aepo)
    fit_step(trainer, step=1)
    assert len(history) == 1
    td = trainer.actor_rollout_wg.log_prob_batches[0]
    ids = td["input_ids"]
    ent = no_padding_2_padding(fake_entropy(ids), td)
    mask = td["response_mask"].float()
    assert trainer.aepo.controller.entropy == pytest.approx(float((ent * mask).sum() / mask.sum()))


def test_append_merge_pads_to_the_batch_multiple_with_noop_rows():
    config = compose_config("aepo.merge=append", "aepo.alpha_meaning=batch_share")
    trainer = make_trainer(config)
    grpo, out = fit_step(trainer, step=1)
    k = int(out.meta_info["metrics"]["aepo/reinforce_samples"])
    td = trainer.actor_rollout_wg.updates[-1]
    rows = len(td["response_mask"])
    assert rows % math.lcm(DP, 4 * N) == 0 and rows > len(grpo)
    assert torch.equal(td["advantages"][: len(grpo)], grpo.batch["advantages"])
    padding = td["response_mask"][len(grpo) + k :]
    assert padding.sum() == 0 and len(padding) == rows - len(grpo) - k


def test_grpo_recipe_leaves_the_batch_alone():
    trainer = make_trainer(compose_config("aepo.algorithm=grpo"))
    grpo, out = fit_step(trainer, step=1)
    td = trainer.actor_rollout_wg.updates[-1]
    assert torch.equal(td["advantages"], grpo.batch["advantages"])
    assert len(trainer.async_rollout_manager.calls) == 1
    metrics = out.meta_info["metrics"]
    # No controller, so no decision metrics; only the target its entropy is judged against.
    assert {key for key in metrics if key.startswith("aepo/")} == {
        "aepo/target_entropy",
        "aepo/target_low",
        "aepo/target_high",
    }
    assert metrics["aepo/target_entropy"] == trainer.aepo_cfg.target_entropy


def test_entropy_adv_shapes_advantages_with_old_pass_entropies():
    trainer = make_trainer(compose_config("aepo.algorithm=entropy_adv"))
    grpo, _ = fit_step(trainer, step=1)
    td = trainer.actor_rollout_wg.updates[-1]
    ids = trainer.actor_rollout_wg.log_prob_batches[0]["input_ids"]
    old_entropy = no_padding_2_padding(
        fake_entropy(ids), trainer.actor_rollout_wg.log_prob_batches[0]
    )
    a = grpo.batch["advantages"]
    mask = grpo.batch["response_mask"].float()
    expected = (a + torch.minimum(0.4 * old_entropy, a.abs() / 2.0)) * mask
    assert torch.allclose(td["advantages"], expected)
    assert "aepo_old_entropy" not in td.keys(), "the carried entropies must not reach the workers"


def test_no_temperature_ablation_samples_extras_at_t1():
    trainer = make_trainer(compose_config("aepo.algorithm=aepo_no_temperature"))
    fit_step(trainer, step=1)
    assert set(trainer.rollout_manager.calls[1]["temperatures"]) == {1.0}


def test_advantage_ablation_uses_group_advantages_of_any_sign():
    trainer = make_trainer(compose_config("aepo.algorithm=aepo_advantage", "aepo.samples_up=40"))
    _, out = fit_step(trainer, step=1)
    adv = padded_update(trainer)["advantages"]
    assert (adv < 0).any() and (adv > 0).any()
    assert out.meta_info["metrics"]["aepo/reinforce_samples"] > 0


def test_policy_loss_on_the_merged_batch_matches_the_core(aepo_config):
    """verl's ppo_loss (vanilla) on what the actor receives == aepo.core.ppo_clip_loss."""
    trainer = make_trainer(aepo_config)
    fit_step(trainer, step=1)
    td = trainer.actor_rollout_wg.updates[-1].clone()
    assert (td["advantages"] > 0.99).any(), "the merged batch holds AEPO rows"
    actor_cfg = omega_conf_to_dataclass(aepo_config.actor_rollout_ref.actor)
    num_tokens = td["response_mask"].sum()
    tu.assign_non_tensor(
        td, dp_size=1, batch_num_tokens=num_tokens, global_batch_size=len(td["response_mask"])
    )
    new_log_probs = fake_log_probs(td["input_ids"], shift=0.0)
    # Move the policy: some ratios inside, some outside the clip range, both signs.
    values = new_log_probs.values() + 0.3 * torch.sin(
        torch.arange(new_log_probs.values().numel()).float()
    )
    new_log_probs = torch.nested.nested_tensor_from_jagged(values, offsets=new_log_probs.offsets())
    verl_loss, _ = ppo_loss(actor_cfg, {"log_probs": new_log_probs}, td)

    log_prob = no_padding_2_padding(new_log_probs, td)
    core_loss, _ = ppo_clip_loss(
        log_prob,
        td["old_log_probs"],
        td["advantages"],
        td["response_mask"],
        clip_low=actor_cfg.clip_ratio_low,
        clip_high=actor_cfg.clip_ratio_high,
        clip_ratio_c=actor_cfg.clip_ratio_c,
        agg="token-mean",
    )
    assert torch.allclose(verl_loss, core_loss, atol=1e-6)


def test_controller_state_round_trips_through_the_checkpoint_hooks(tmp_path, aepo_config):
    config = compose_config(f"trainer.default_local_dir={tmp_path}", "trainer.resume_mode=auto")
    trainer = make_trainer(config)
    fit_step(trainer, step=1)
    fit_step(trainer, step=2)
    trainer._save_checkpoint()
    state_file = tmp_path / "global_step_2" / STATE_FILE
    assert state_file.exists()
    assert (tmp_path / "latest_checkpointed_iteration.txt").read_text() == "2"

    resumed = make_trainer(config)
    resumed.global_steps = 0
    resumed._load_checkpoint()
    assert resumed.global_steps == 2
    assert resumed.aepo.state_dict() == trainer.aepo.state_dict()
    assert resumed.aepo.positive_rates.state_dict() == trainer.aepo.positive_rates.state_dict()
    assert torch.equal(resumed.aepo.rng.get_state(), trainer.aepo.rng.get_state())
    # Same decision next step as the uninterrupted run.
    decisions = [record_decisions(t.aepo) for t in (resumed, trainer)]
    fit_step(resumed, step=3)
    fit_step(trainer, step=3)
    assert decisions[0] == decisions[1] and len(decisions[0]) == 1


def test_missing_or_corrupt_state_stops_an_aepo_resume(tmp_path):
    config = compose_config(f"trainer.default_local_dir={tmp_path}", "trainer.resume_mode=auto")
    trainer = make_trainer(config)
    fit_step(trainer, step=1)
    trainer._save_checkpoint()
    state_file = tmp_path / "global_step_1" / STATE_FILE

    state_file.write_text("{not json")
    with pytest.raises(CheckpointStateError, match=str(state_file)):
        make_trainer(config)._load_checkpoint()

    state_file.write_text(json.dumps({"format": 1, "controller": {"entropy": 0.3}}))
    with pytest.raises(CheckpointStateError, match="corrupt AEPO state"):
        make_trainer(config)._load_checkpoint()

    state_file.unlink()
    with pytest.raises(CheckpointStateError, match="is missing"):
        make_trainer(config)._load_checkpoint()
    # A GRPO run needs no controller: resuming it without the file is fine.
    grpo = make_trainer(
        compose_config(f"trainer.default_local_dir={tmp_path}", "aepo.algorithm=grpo")
    )
    grpo._load_checkpoint()
    assert grpo.global_steps == 1


def test_current_batch_source_always_measures_before_generating_extras():
    trainer = make_trainer(compose_config("aepo.entropy_source=current_batch"))
    history = record_decisions(trainer.aepo)
    fit_step(trainer, step=1)
    fit_step(trainer, step=2)
    calls = trainer.rollout_manager.calls
    assert len(calls) == 4, "each step: fit's call, then the extra pass"
    assert all(math.isnan(t) for t in calls[2]["temperatures"])
    assert set(calls[3]["temperatures"]) == {1.2}
    assert history[-1].step == 2


def test_validation_generation_passes_through_untouched(aepo_config):
    """fit() validates between steps: its generate call reaches the real manager as it is
    and begins no step (the next step's hooks would otherwise read the validation batch)."""
    trainer = make_trainer(aepo_config)
    fit_step(trainer, step=1)
    assert trainer._step is None, "the step state is dropped when the update goes to verl"
    val = trainer._get_gen_batch(DataProto.from_single_dict(dataset_batch(2)))
    val.meta_info["validate"] = True
    before = len(trainer.rollout_manager.calls)
    trainer.async_rollout_manager.generate_sequences(val)
    call = trainer.rollout_manager.calls[before]
    assert len(trainer.rollout_manager.calls) == before + 1
    assert all(math.isnan(t) for t in call["temperatures"])
    assert trainer._step is None, "validation must not begin a step"


def test_target_schedule_is_logged_each_step_and_survives_the_checkpoint(tmp_path):
    config = compose_config(
        f"trainer.default_local_dir={tmp_path}",
        "trainer.resume_mode=auto",
        "aepo.target_entropy=0.25",
        "aepo.target_schedule={kind:linear,start:0.75,steps:4}",
    )
    expected = {1: 0.75, 2: 0.625, 3: 0.5, 4: 0.375, 5: 0.25}
    trainer = make_trainer(config)
    history = record_decisions(trainer.aepo)
    for step in (1, 2):
        _, out = fit_step(trainer, step=step)
        assert out.meta_info["metrics"]["aepo/target_entropy"] == pytest.approx(expected[step])
    assert [d.target for d in history] == pytest.approx([0.75, 0.625])
    trainer._save_checkpoint()
    saved = json.loads((tmp_path / "global_step_2" / STATE_FILE).read_text())
    assert saved["controller"]["last_target"] == pytest.approx(0.625)
    assert saved["controller"]["config"]["target_schedule"] == {
        "kind": "linear",
        "start": 0.75,
        "steps": 4,
    }

    resumed = make_trainer(config)
    resumed.global_steps = 0
    resumed._load_checkpoint()
    assert resumed.global_steps == 2
    assert resumed.aepo.last_target == pytest.approx(0.625)
    history = record_decisions(resumed.aepo)
    for step in (3, 4, 5):
        _, out = fit_step(resumed, step=step)
        assert out.meta_info["metrics"]["aepo/target_entropy"] == pytest.approx(expected[step])
    assert [d.target for d in history] == pytest.approx([expected[s] for s in (3, 4, 5)])


def test_an_update_without_a_measurement_names_the_setting_that_skips_it():
    """Both trainers' actor updates read the step's measurement through
    StepState.measurement(); verl's bypass mode skips the pass that makes it."""
    from aepo.backends.verl.trainer import StepState

    with pytest.raises(RuntimeError, match=r"rollout_correction\.bypass_mode"):
        StepState(prompts=None, start=None).measurement()
    measured = object()
    assert StepState(prompts=None, start=None, measured=measured).measurement() is measured
