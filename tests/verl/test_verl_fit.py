"""verl 0.9.1's real ``RayPPOTrainer.fit()`` driving AEPORayTrainer on CPU.

The trainer is built the way ``AEPOTaskRunner.run`` builds it: ``check_config``, then
``AEPORayTrainer.__init__`` with verl's own RLHFDataset (a parquet in verl's schema),
sampler, collate_fn and StatefulDataLoader; ``fit()`` logs through verl's Tracking to
TensorBoard and checkpoints through verl's ``_save_checkpoint`` / ``_load_checkpoint``.
Only ``RayPPOTrainer.init_workers`` is replaced: it would start Ray worker groups on GPUs,
vLLM replicas and the reward loop; the stand-ins (tests/verl/verl_fakes.py) take their place and
our own ``AEPORayTrainer.init_workers`` still wraps the rollout manager as in production.
"""

from __future__ import annotations

import gc
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("verl")
pytest.importorskip("tensorboard")

import pandas as pd  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from verl.single_controller.ray.base import ResourcePoolManager  # noqa: E402
from verl.trainer.ppo.ray_trainer import RayPPOTrainer  # noqa: E402
from verl.trainer.ppo.utils import Role  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.workers.utils.padding import no_padding_2_padding  # noqa: E402

from aepo.backends.verl.agent_loop import AGENT_NAME  # noqa: E402
from aepo.backends.verl.checkpoint import STATE_FILE  # noqa: E402
from aepo.backends.verl.extra_rollout import RolloutManagerProxy  # noqa: E402
from aepo.backends.verl.startup import check_config  # noqa: E402
from aepo.backends.verl.trainer import AEPORayTrainer  # noqa: E402
from aepo.core.config import READS  # noqa: E402
from aepo.tasks.tiny_model import build_tokenizer  # noqa: E402
from tests.decisions import record_decisions  # noqa: E402
from tests.shared_metrics import SHARED_METRICS  # noqa: E402
from tests.verl.verl_fakes import (  # noqa: E402
    AGENT_LOOP_WORKERS,
    FakeActorWorkerGroup,
    FakeCheckpointManager,
    FakeRolloutManager,
    fake_entropy,
    fake_log_probs,
)

PROMPTS = 8  # per step
N = 4  # responses per prompt
ROWS = PROMPTS * N
DP = 2
MINI_BATCH_ROWS = 4 * N  # ppo_mini_batch_size (prompts) * n
STEPS = 4  # one epoch of the dataset below
SAVE_FREQ = 2


def write_dataset(path: Path) -> Path:
    """STEPS batches of prompts in the schema ``aepo data prepare`` writes (verl/utils/dataset/rl_dataset.py)."""
    rows = [
        {
            "data_source": "math",
            "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(i + 1)},
            "extra_info": {"index": i, "split": "train"},
        }
        for i in range(STEPS * PROMPTS)
    ]
    pd.DataFrame(rows).to_parquet(path)
    return path


def compose_config(data: Path, out: Path, *overrides: str):
    base = [
        f"data.train_files={data}",
        f"data.val_files={data}",
        f"data.train_batch_size={PROMPTS}",
        "data.max_prompt_length=64",
        "data.max_response_length=16",
        "data.dataloader_num_workers=0",  # no worker processes on a shared CI box
        "data.seed=0",  # verl's RandomSampler: the same prompt order in every run
        f"actor_rollout_ref.rollout.n={N}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        f"actor_rollout_ref.rollout.agent.num_workers={AGENT_LOOP_WORKERS}",
        f"trainer.n_gpus_per_node={DP}",
        "trainer.logger=[console,tensorboard]",
        "trainer.val_before_train=false",  # validation needs verl's reward loop workers
        "trainer.test_freq=-1",
        f"trainer.save_freq={SAVE_FREQ}",
        "trainer.total_epochs=1",
        "trainer.resume_mode=auto",
        f"trainer.default_local_dir={out / 'checkpoints'}",
    ]
    algorithm = next(
        (o.split("=", 1)[1] for o in overrides if o.startswith("aepo.algorithm=")), "aepo"
    )
    if "samples_up" in READS[algorithm]:  # the extra pass's knobs, for the algorithms with one
        base += ["aepo.samples_up=6", "aepo.samples_down=3", "aepo.extra_rollout.min_samples=4"]
    with initialize_config_module("aepo.backends.verl.config", version_base=None):
        return compose("aepo_trainer", overrides=base + list(overrides))


def init_workers_without_ray(self):
    """Replaces ``RayPPOTrainer.init_workers`` (ray_trainer.py:772): sets the attributes
    fit() uses, and ends with the replicas asleep as the real one does (:981)."""
    self.actor_rollout_wg = FakeActorWorkerGroup(DP)
    if self.use_reference_policy and not self.ref_in_actor:
        self.ref_policy_wg = self.actor_rollout_wg  # the fake answers compute_ref_log_prob
    self.checkpoint_manager = FakeCheckpointManager()
    self.async_rollout_manager = FakeRolloutManager(replicas=self.checkpoint_manager)
    self.checkpoint_manager.sleep_replicas()


@dataclass
class Run:
    trainer: AEPORayTrainer
    rollout: FakeRolloutManager
    actor: FakeActorWorkerGroup
    replicas: FakeCheckpointManager
    checkpoints: Path
    scalars: dict[str, dict[int, float]]
    """TensorBoard: tag -> {step: value}"""
    decisions: list
    """the controller's decisions this process applied, one per step (tests.decisions)"""

    def calls_at(self, step: int) -> list[dict]:
        return [call for call in self.rollout.calls if call["step"] == step]


def read_scalars(logdir: Path) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: {event.step: event.value for event in acc.Scalars(tag)}
        for tag in acc.Tags()["scalars"]
    }


def run_fit(out: Path, *overrides: str, tensorboard: str = "tb") -> Run:
    """AEPOTaskRunner.run's steps with init_workers' Ray part replaced, then verl's fit()."""
    out.mkdir(parents=True, exist_ok=True)
    data = out / "train.parquet"
    if not data.exists():
        write_dataset(data)
    config = compose_config(data, out, *overrides)
    logdir = out / tensorboard
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TENSORBOARD_DIR", str(logdir))
        mp.setattr("datasets.config.HF_DATASETS_CACHE", str(out / "hf_datasets"))
        mp.setattr(RayPPOTrainer, "init_workers", init_workers_without_ray)
        trainer = AEPORayTrainer(
            config=config,
            tokenizer=build_tokenizer(),
            role_worker_mapping={Role.ActorRollout: object},
            resource_pool_manager=ResourcePoolManager(
                resource_pool_spec={"global_pool": [DP]},
                mapping={Role.ActorRollout: "global_pool"},
            ),
            aepo_config=check_config(config),
        )
        decisions = record_decisions(trainer.aepo)
        trainer.init_workers()
        trainer.fit()
    # fit()'s Tracking is a local of fit(); its SummaryWriter is flushed and closed when the
    # object is collected (Tracking.__del__), which must have happened before reading.
    gc.collect()
    manager = trainer.async_rollout_manager
    rollout = manager.inner if isinstance(manager, RolloutManagerProxy) else manager
    return Run(
        trainer=trainer,
        rollout=rollout,
        actor=trainer.actor_rollout_wg,
        replicas=trainer.checkpoint_manager,
        checkpoints=out / "checkpoints",
        scalars=read_scalars(logdir),
        decisions=decisions,
    )


def is_aepo_row(td) -> torch.Tensor:
    """AEPO rows carry fresh ``aepo-`` group uids (extra_rollout.build_extra_requests)."""
    return torch.tensor([str(u).startswith("aepo-") for u in tu.get(td, "uid")])


@pytest.fixture(scope="module")
def aepo_run(tmp_path_factory) -> Run:
    """Four uninterrupted AEPO steps (entropy_source: previous_step), saving every 2."""
    return run_fit(tmp_path_factory.mktemp("aepo_fit"))


# ---- the AEPO step inside fit() ---------------------------------------------------------


def test_step_one_measures_first_then_generates_extras_in_a_second_call(aepo_run):
    first, second = aepo_run.calls_at(1)
    assert len(first["temperatures"]) == ROWS
    assert all(math.isnan(t) for t in first["temperatures"]), "fit's own call: T = 1 only"
    decision = aepo_run.decisions[0]
    assert decision.step == 1
    assert set(second["temperatures"]) == {decision.temperature}
    assert set(second["agents"]) == {AGENT_NAME}
    # The second call woke the replicas fit() had just put to sleep, and put them back.
    events = aepo_run.replicas.events
    assert events[:6] == [
        ("sleep",),  # end of init_workers
        ("update_weights", 0),  # fit(): before the first step
        ("sleep",),  # fit(): after its generate call
        ("update_weights", 1),  # our second pass
        ("sleep",),
        ("update_weights", 1),  # fit(): after the actor update
    ]


def test_later_steps_put_the_extras_in_fits_own_generate_call(aepo_run):
    history = aepo_run.decisions
    assert [d.step for d in history] == list(range(1, STEPS + 1))
    for step in range(2, STEPS + 1):
        (call,) = aepo_run.calls_at(step)
        temps = call["temperatures"]
        assert all(math.isnan(t) for t in temps[:ROWS])
        assert len(temps) > ROWS, f"step {step}: no extra rows in fit's call"
        assert set(temps[ROWS:]) == {history[step - 1].temperature}
        assert set(call["agents"][ROWS:]) == {AGENT_NAME}
        assert len(temps) % AGENT_LOOP_WORKERS == 0
    # One generate call per step after the first: no sleep/wake beyond fit's own.
    assert len(aepo_run.rollout.calls) == STEPS + 1


def test_actor_gets_merged_batches_of_the_size_verl_splits(aepo_run):
    updates = aepo_run.actor.updates
    assert len(updates) == STEPS
    tb = aepo_run.scalars
    for step, td in enumerate(updates, start=1):
        rows = len(td["response_mask"])
        assert rows == ROWS, "replace_zero_advantage keeps fit's batch size"
        assert rows % DP == 0 and rows % MINI_BATCH_ROWS == 0
        aepo_rows = is_aepo_row(td)
        assert int(aepo_rows.sum()) == tb["aepo/reinforce_samples"][step] > 0
        # Eq. 1 under token-mean: in every global mini-batch (contiguous rank chunks, each cut
        # into contiguous mini-batches), the AEPO rows' advantages over the mini-batch's
        # tokens add up to alpha -- alpha times the mean of R = 1 over those samples.
        mask = td["response_mask"].float()
        minibatch = (torch.arange(rows) % (rows // DP)) // (MINI_BATCH_ROWS // DP)
        for b in minibatch.unique():
            in_b = minibatch == b
            weight = (td["advantages"] * mask)[in_b & aepo_rows].sum() / mask[in_b].sum()
            expected = aepo_run.trainer.aepo_cfg.alpha if (in_b & aepo_rows).any() else 0.0
            assert float(weight) == pytest.approx(expected, rel=1e-5)


def test_tensorboard_has_the_design_scalars_at_every_step(aepo_run):
    tb = aepo_run.scalars
    missing = [tag for tag in SHARED_METRICS if set(tb.get(tag, {})) != set(range(1, STEPS + 1))]
    assert not missing, f"not logged at every step 1..{STEPS}: {missing}"
    history = aepo_run.decisions
    for step, decision in enumerate(history, start=1):
        assert tb["aepo/temperature"][step] == pytest.approx(decision.temperature)
        assert tb["aepo/direction"][step] == decision.direction
        assert tb["aepo/target_entropy"][step] == pytest.approx(0.5)
        assert tb["aepo/extra_gen_tokens"][step] > 0
    # previous_step: step s chooses its temperature from the measurement fit logged as
    # actor/entropy at step s - 1 (step 1 measures first), then settles the push from its own
    # measurement, which aepo/entropy reports.
    entropy, used = tb["actor/entropy"], tb["aepo/entropy"]
    cfg = aepo_run.trainer.aepo_cfg
    for step in range(1, STEPS + 1):
        assert used[step] == pytest.approx(entropy[step], rel=1e-5)
    chosen_from = tb["aepo/temperature_entropy"]
    assert chosen_from[1] == pytest.approx(entropy[1], rel=1e-5)
    for step in range(2, STEPS + 1):
        hot = entropy[step - 1] < 0.5
        assert tb["aepo/temperature"][step] == pytest.approx(cfg.t_high if hot else cfg.t_low)
        assert chosen_from[step] == pytest.approx(entropy[step - 1], rel=1e-5)
    # fit() logs the actor output of the merged batch: the fake's pg_loss per mini-batch.
    for step, td in enumerate(aepo_run.actor.updates, start=1):
        adv, mask = td["advantages"], td["response_mask"].float()
        per_mini = [
            float(-(adv[i : i + MINI_BATCH_ROWS] * mask[i : i + MINI_BATCH_ROWS]).sum())
            / float(mask[i : i + MINI_BATCH_ROWS].sum())
            for i in range(0, len(adv), MINI_BATCH_ROWS)
        ]
        assert tb["actor/pg_loss"][step] == pytest.approx(np.mean(per_mini), rel=1e-5)
    # reward/mean is the GRPO rows' mean reward (the local engine's meaning), which is what
    # verl's critic/score/mean reports for fit's (unmerged) batch.
    for step in range(1, STEPS + 1):
        assert tb["reward/mean"][step] == pytest.approx(tb["critic/score/mean"][step])


def test_the_dashboard_is_in_verls_tensorboard_dir_and_names_tags_fit_logs(aepo_run):
    """AEPORayTrainer writes the custom-scalars layout where fit()'s Tracking writes; read
    back by TensorBoard's own Custom Scalars plugin, every line is a scalar of this run."""
    from aepo.tensorboard_layout import LAYOUT_FILE, layout_tags
    from tests.tensorboard_reader import read_dashboard, unwritten_tags

    logdir = aepo_run.checkpoints.parent / "tb"
    layout, written = read_dashboard(logdir)
    assert written == set(aepo_run.scalars)
    assert len(layout_tags()) == 10 and layout_tags() <= written
    assert unwritten_tags(layout, written) == set()  # the guard's lines included
    # TensorBoard polls only the last event file of a run: fit()'s, not the layout's
    files = sorted(p.name for p in logdir.iterdir())
    assert files[0] == LAYOUT_FILE and len(files) == 2


def test_aepo_plot_draws_the_verl_run(aepo_run, tmp_path):
    """Issue 5: same names as the local engine, so `aepo plot` draws a verl run's curves."""
    from aepo.cli import main as aepo_cli
    from aepo.plot.curves import ENTROPY, REWARD, TARGET, load_scalars

    logdir = aepo_run.checkpoints.parent / "tb"
    curves = load_scalars(logdir)
    for tag in (ENTROPY, TARGET, REWARD):
        assert curves[tag][0].tolist() == list(range(1, STEPS + 1)), tag
    out = tmp_path / "verl_entropy.png"
    assert aepo_cli(["plot", str(logdir), "--labels", "verl AEPO", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def kl_run(tmp_path_factory) -> Run:
    """AEPO with a reference policy (``use_kl_loss``): fit() makes a reference pass."""
    return run_fit(
        tmp_path_factory.mktemp("aepo_kl_fit"),
        "actor_rollout_ref.actor.use_kl_loss=true",
        "trainer.save_freq=-1",
    )


@pytest.mark.parametrize("run_name", ["aepo_run", "kl_run"])
def test_reinforce_rows_get_their_log_probs_in_passes_of_their_own(run_name, request):
    """Every step, after the selection, the REINFORCE rows get an old-log-prob pass (and a
    reference pass) of their own; fit()'s own passes hold fit()'s rows only, so
    actor/entropy and the entropy monitor read the GRPO rows. Step 1 also wakes, generates
    and puts to sleep the second generation. The fake actor's log-probs are a function of the
    token id (tests/verl/verl_fakes.py), so a row scored in another batch gets exactly the
    same values."""
    run = request.getfixturevalue(run_name)
    tb = run.scalars
    with_ref = run_name == "kl_run"
    passes = 2 if with_ref else 1
    assert tb["aepo/extra_worker_calls"][1] == 3 + passes  # wake, generate, sleep + passes
    for step in range(2, STEPS + 1):
        assert tb["aepo/reinforce_samples"][step] > 0
        assert tb["aepo/extra_worker_calls"][step] == passes, f"step {step}"
    assert "aepo/riding_rows" not in tb
    # Two old-log-prob calls per step: fit()'s over its own rows, then the REINFORCE rows'.
    batches = run.actor.log_prob_batches
    assert len(batches) == 2 * STEPS
    assert len(run.actor.ref_batches) == (2 * STEPS if with_ref else 0)
    for step in range(1, STEPS + 1):
        fits, own = batches[2 * step - 2], batches[2 * step - 1]
        assert len(fits["response_mask"]) == ROWS and not is_aepo_row(fits).any()
        assert is_aepo_row(own).any() and len(own["response_mask"]) % DP == 0
        # fit()'s actor/entropy and the entropy monitor read fit's rows (token mean).
        entropy = no_padding_2_padding(fake_entropy(fits["input_ids"]), fits)
        mask = fits["response_mask"].float()
        grpo_entropy = float((entropy * mask).sum() / mask.sum())
        assert tb["actor/entropy"][step] == pytest.approx(grpo_entropy, rel=1e-6)
        assert tb["aepo/entropy"][step] == pytest.approx(grpo_entropy, rel=1e-6)
    # The REINFORCE rows reach the update with the log-probs of their own tokens, exactly.
    for td in run.actor.updates:
        aepo_rows = is_aepo_row(td)
        mask = td["response_mask"].bool() & aepo_rows[:, None]
        old = no_padding_2_padding(fake_log_probs(td["input_ids"]), td)
        assert torch.equal(td["old_log_probs"][mask], old[mask])
        if with_ref:
            ref = no_padding_2_padding(fake_log_probs(td["input_ids"], shift=-0.5), td)
            assert torch.equal(td["ref_log_prob"][mask], ref[mask])


def test_current_batch_source_measures_before_every_extra_pass_inside_fit(tmp_path):
    run = run_fit(tmp_path, "aepo.entropy_source=current_batch", "trainer.total_training_steps=2")
    for step in (1, 2):
        fits_call, extra_call = run.calls_at(step)
        assert all(math.isnan(t) for t in fits_call["temperatures"])
        assert len(fits_call["temperatures"]) == ROWS
        assert set(extra_call["agents"]) == {AGENT_NAME}
    # Every extra pass woke the replicas fit() had put to sleep (the fake refuses to
    # generate otherwise) and left them asleep for fit()'s own update_weights.
    wakes = [e for e in run.replicas.events if e[0] == "update_weights"]
    assert wakes == [("update_weights", s) for s in (0, 1, 1, 2, 2)]
    assert set(run.scalars["aepo/reinforce_samples"]) == {1, 2}


def test_a_step_without_positives_logs_zero_reinforce_rows_on_every_rank(tmp_path):
    """No extra sample reaches the reward threshold, so nothing is merged: every rank's
    aepo/reinforce_rows_dpR is still logged, 0, at every step (a step of the real V1 e2e run
    had no positive and its resumed run had no such series at all)."""
    run = run_fit(tmp_path, "aepo.reward_threshold=2.0", "trainer.total_training_steps=2")
    assert run.scalars["aepo/reinforce_samples"] == {1: 0.0, 2: 0.0}
    ranks = [tag for tag in run.scalars if tag.startswith("aepo/reinforce_rows_dp")]
    assert ranks and all(run.scalars[tag] == {1: 0.0, 2: 0.0} for tag in ranks), ranks


# ---- checkpoints -------------------------------------------------------------------------


def test_checkpoint_holds_aepo_state_beside_verls_files(aepo_run):
    for step in (SAVE_FREQ, STEPS):
        folder = aepo_run.checkpoints / f"global_step_{step}"
        assert (folder / "actor").is_dir() and (folder / "data.pt").is_file()
        state = json.loads((folder / STATE_FILE).read_text())
        assert state["global_step"] == step
        assert "history" not in state["controller"]  # a checkpoint does not grow with the run
    assert (aepo_run.checkpoints / "latest_checkpointed_iteration.txt").read_text() == str(STEPS)
    final = json.loads((aepo_run.checkpoints / f"global_step_{STEPS}" / STATE_FILE).read_text())
    assert final["controller"] == json.loads(
        json.dumps(aepo_run.trainer.aepo.state_dict()["controller"])
    )


def test_resumed_run_continues_the_uninterrupted_trajectory(tmp_path, aepo_run):
    interrupted = run_fit(tmp_path, f"trainer.total_training_steps={SAVE_FREQ}")
    assert sorted({c["step"] for c in interrupted.rollout.calls}) == [1, 2]

    resumed = run_fit(tmp_path, tensorboard="tb_resumed")
    assert resumed.actor.loaded == [
        str(tmp_path / "checkpoints" / f"global_step_{SAVE_FREQ}" / "actor")
    ]
    # Progress continues at step 3 with the prompts the uninterrupted run saw there
    # (verl's dataloader state), not at step 1 of the epoch.
    assert sorted({c["step"] for c in resumed.rollout.calls}) == [3, 4]
    fits_calls = [run.calls_at(step)[0] for run, step in ((interrupted, 1), (interrupted, 2))]
    fits_calls += [resumed.calls_at(step)[0] for step in (3, 4)]
    seen = [call["index"][:ROWS] for call in fits_calls]
    assert sorted(set(np.concatenate(seen).tolist())) == list(range(STEPS * PROMPTS)), (
        "the two runs together must see the epoch's prompts once each"
    )
    for step in (3, 4):
        calls = resumed.calls_at(step)
        assert len(calls) == 1, f"step {step}: a second pass, as if the controller had no state"
        (call,), (expected,) = calls, aepo_run.calls_at(step)
        assert np.array_equal(call["index"], expected["index"])
        assert call["temperatures"][ROWS:] == expected["temperatures"][ROWS:]
    assert set(resumed.scalars["aepo/temperature"]) == {3, 4}
    for tag in ("aepo/entropy", "aepo/temperature", "aepo/reinforce_samples", "actor/entropy"):
        for step in (3, 4):
            assert resumed.scalars[tag][step] == pytest.approx(aepo_run.scalars[tag][step])
    # The restored controller carried on: same history, positive rates and selection RNG.
    assert resumed.trainer.aepo_state_dict() == aepo_run.trainer.aepo_state_dict()


def test_target_schedule_through_fit_and_a_resume_mid_schedule(tmp_path):
    schedule = ("aepo.target_entropy=0.2", "aepo.target_schedule={kind:linear,start:0.8,steps:3}")
    expected = {1: 0.8, 2: 0.6, 3: 0.4, 4: 0.2}
    first = run_fit(tmp_path, *schedule, f"trainer.total_training_steps={SAVE_FREQ}")
    resumed = run_fit(tmp_path, *schedule, tensorboard="tb_resumed")
    logged = {**first.scalars["aepo/target_entropy"], **resumed.scalars["aepo/target_entropy"]}
    assert set(resumed.scalars["aepo/target_entropy"]) == {3, 4}
    assert logged == pytest.approx(expected)
    history = resumed.decisions
    assert [(d.step, d.target) for d in history] == [
        (3, pytest.approx(0.4)),
        (4, pytest.approx(0.2)),
    ]


# ---- GRPO --------------------------------------------------------------------------------


def test_grpo_through_fit_generates_and_updates_only_the_plain_batch(tmp_path):
    run = run_fit(tmp_path, "aepo.algorithm=grpo", "trainer.total_training_steps=2")
    # Every algorithm's step begins at fit()'s generate call; GRPO's passes straight through.
    assert isinstance(run.trainer.async_rollout_manager, RolloutManagerProxy)
    assert [c["step"] for c in run.rollout.calls] == [1, 2]
    assert all(len(c["temperatures"]) == ROWS for c in run.rollout.calls)
    for td in run.actor.updates:
        assert len(td["response_mask"]) == ROWS and not is_aepo_row(td).any()
        _, group_sizes = np.unique(tu.get(td, "uid"), return_counts=True)
        assert set(group_sizes.tolist()) == {N}, "fit's GRPO groups, nothing replaced"
    # No controller, no decision metrics: only the target its entropy is judged against.
    assert sorted(tag for tag in run.scalars if tag.startswith("aepo/")) == [
        "aepo/target_entropy",
        "aepo/target_high",
        "aepo/target_low",
    ]
    assert set(run.scalars["aepo/target_entropy"]) == {1, 2}
    assert set(run.scalars["reward/mean"]) == {1, 2}
    assert set(run.scalars["actor/entropy"]) == {1, 2}


# ---- adaptive entropy ----------------------------------------------------------------------


def test_adaptive_entropy_through_fit_sets_logs_and_resumes_its_coefficient(tmp_path):
    keys = (
        "aepo.algorithm=adaptive_entropy",
        "aepo.baselines.adaptive_entropy.update=training_step",
        "aepo.baselines.adaptive_entropy.step=0.01",
    )
    straight = run_fit(tmp_path / "straight", *keys)
    # The fake pi_old's entropy (~0.4) is below the target 0.5 at every step.
    expected = {1: 0.0, 2: 0.01, 3: 0.02, 4: 0.03}
    assert straight.scalars["aepo/entropy_coef_applied"] == pytest.approx(expected)
    assert set(straight.scalars["aepo/target_entropy"].values()) == {0.5}
    coefficients = [fn.keywords["config"].entropy_coeff for fn in straight.actor.loss_fns]
    assert coefficients == pytest.approx(list(expected.values()))
    assert all(tu.get(td, "calculate_entropy") is True for td in straight.actor.updates)

    run_fit(tmp_path / "stopped", *keys, f"trainer.total_training_steps={SAVE_FREQ}")
    resumed = run_fit(tmp_path / "stopped", *keys, tensorboard="tb_resumed")
    for tag in ("aepo/entropy_coef", "aepo/entropy_coef_applied"):
        for step in (3, 4):
            assert resumed.scalars[tag][step] == pytest.approx(straight.scalars[tag][step]), tag
    assert resumed.actor.loss_fns[0].keywords["config"].entropy_coeff == pytest.approx(0.02)


# ---- DCPO and EntroPIC -------------------------------------------------------------------


def test_dcpo_through_fit_scores_twice_logs_and_resumes(tmp_path):
    keys = ("aepo.algorithm=dcpo", "aepo.target_entropy=0.45")
    straight = run_fit(tmp_path / "straight", *keys)
    assert len(straight.rollout.calls) == 4, "one generate call per step: no extra generation"
    temperatures = [tu.get(td, "temperature") for td in straight.actor.log_prob_batches]
    assert temperatures == [1.0, 1.2] * 4  # fit's pass, then DCPO's (H ~0.4 <= 0.45)
    for tag in ("aepo/target_entropy", "aepo/dcpo_mix", "aepo/temperature", "aepo/dcpo_entropy"):
        assert set(straight.scalars[tag]) == {1, 2, 3, 4}, tag
    assert straight.scalars["aepo/dcpo_entropy"][1] == 0.0  # the code's start
    assert 0 < straight.scalars["aepo/dcpo_entropy"][2] < 0.45

    run_fit(tmp_path / "stopped", *keys, f"trainer.total_training_steps={SAVE_FREQ}")
    resumed = run_fit(tmp_path / "stopped", *keys, tensorboard="tb_resumed")
    for tag in ("aepo/dcpo_mix", "aepo/dcpo_entropy", "aepo/temperature"):
        for step in (3, 4):
            assert resumed.scalars[tag][step] == pytest.approx(straight.scalars[tag][step]), tag


def test_entropic_through_fit_sets_logs_and_resumes_its_integral(tmp_path):
    keys = (
        "aepo.algorithm=entropic",
        "aepo.target_entropy=0.35",
        "aepo.baselines.entropic.update=training_step",
    )
    straight = run_fit(tmp_path / "straight", *keys)
    alphas = straight.scalars["aepo/entropic_alpha"]
    assert set(alphas) == {1, 2, 3, 4} and set(straight.scalars["aepo/target_entropy"]) == set(
        alphas
    )
    installed = [fn.keywords["control_alpha"] for fn in straight.actor.loss_fns]
    assert installed == pytest.approx([alphas[k] for k in (1, 2, 3, 4)])
    assert (
        straight.scalars["aepo/entropic_integral"][4]
        > straight.scalars["aepo/entropic_integral"][1]
    )

    run_fit(tmp_path / "stopped", *keys, f"trainer.total_training_steps={SAVE_FREQ}")
    resumed = run_fit(tmp_path / "stopped", *keys, tensorboard="tb_resumed")
    for tag in ("aepo/entropic_alpha", "aepo/entropic_integral"):
        for step in (3, 4):
            assert resumed.scalars[tag][step] == pytest.approx(straight.scalars[tag][step]), tag


# ---- Entrocraft --------------------------------------------------------------------------


def test_entrocraft_through_fit_follows_the_scheduled_band_and_resumes(tmp_path):
    """The band's centre is the target_schedule (0.8 -> 0.2 over 3 steps, width 0.1) and each
    step's mode follows that step's own pi_old entropy (the fakes' ~0.4): NSR while the band
    is above it, RAFT++ once below; no generation beyond fit()'s; a resumed run stays on the
    same line."""
    from aepo.core.entropy_methods import ENTROCRAFT_MODES, entrocraft_mode

    keys = (
        "aepo.algorithm=entrocraft",
        "aepo.target_entropy=0.2",
        "aepo.target_schedule={kind:linear,start:0.8,steps:3}",
    )
    straight = run_fit(tmp_path / "straight", *keys)
    assert len(straight.rollout.calls) == 4, "one generate call per step: no extra generation"
    lower, upper = (
        straight.scalars["aepo/entrocraft_lower"],
        straight.scalars["aepo/entrocraft_upper"],
    )
    centre = {1: 0.8, 2: 0.6, 3: 0.4, 4: 0.2}
    for step, target in centre.items():
        assert (lower[step], upper[step]) == pytest.approx((target - 0.05, target + 0.05))
        entropy = straight.scalars["actor/entropy"][step]  # token-mean: the entropy it reads
        mode = ENTROCRAFT_MODES[entrocraft_mode(entropy, lower[step], upper[step])]
        assert straight.scalars["aepo/entrocraft_mode"][step] == mode, step
    assert straight.scalars["aepo/entrocraft_mode"][1] == -1.0  # NSR: the band is above
    assert straight.scalars["aepo/entrocraft_mode"][4] == 1.0  # RAFT++: the band is below
    # RAFT++ updates carry only positive advantages, NSR's only negative ones
    for step, td in zip(
        (1, 4), (straight.actor.updates[0], straight.actor.updates[-1]), strict=True
    ):
        advantages = td["advantages"]
        assert (advantages <= 0).all() if step == 1 else (advantages >= 0).all()
        assert advantages.abs().sum() > 0

    run_fit(tmp_path / "stopped", *keys, f"trainer.total_training_steps={SAVE_FREQ}")
    resumed = run_fit(tmp_path / "stopped", *keys, tensorboard="tb_resumed")
    for tag in ("aepo/entrocraft_mode", "aepo/entrocraft_lower", "aepo/target_entropy"):
        assert set(resumed.scalars[tag]) == {3, 4}, tag
        for step in (3, 4):
            assert resumed.scalars[tag][step] == pytest.approx(straight.scalars[tag][step]), tag


def test_entrocraft_fixed_variant_resumes_its_alpha(tmp_path):
    keys = (
        "aepo.algorithm=entrocraft",
        "aepo.target_entropy=0.3",
        "aepo.baselines.entrocraft.variant=fixed",
    )
    straight = run_fit(tmp_path / "straight", *keys)
    alphas = straight.scalars["aepo/entrocraft_alpha"]
    assert set(alphas) == {1, 2, 3, 4}
    # the leaky accumulator: alpha_t - e_t grows by 0.01 e_t each step (e = H - H* > 0 here)
    assert alphas[4] > alphas[1] > 0
    run_fit(tmp_path / "stopped", *keys, f"trainer.total_training_steps={SAVE_FREQ}")
    state = json.loads(
        (tmp_path / "stopped" / "checkpoints" / f"global_step_{SAVE_FREQ}" / STATE_FILE).read_text()
    )
    assert state["entrocraft"]["last_alpha"] != 0
    resumed = run_fit(tmp_path / "stopped", *keys, tensorboard="tb_resumed")
    for step in (3, 4):
        assert resumed.scalars["aepo/entrocraft_alpha"][step] == pytest.approx(alphas[step])
