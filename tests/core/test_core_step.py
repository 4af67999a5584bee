"""The one AEPO step object both engines call: seeded from ``aepo.seed``, one state_dict."""

import pytest
import torch

from aepo.core import AEPOConfig, AEPOStep, UpdateLayout

LAYOUT = UpdateLayout(
    loss_agg_mode="token-mean",
    num_chunks=1,
    batch_multiple=1,
    minibatch_of=lambda rows: torch.zeros(rows, dtype=torch.long),
)


def reinforce(step: AEPOStep, plan, rewards, groups, rows: int = 64):
    return step.reinforce(
        plan,
        rewards,
        groups,
        torch.ones(len(rewards), 3),
        grpo_advantage=torch.zeros(rows),
        grpo_lengths=torch.full((rows,), 3),
        layout=LAYOUT,
    )


def run_steps(step: AEPOStep, entropies, start=1):
    out = []
    for i, h in enumerate(entropies, start=start):
        begun = step.begin(i, num_prompts=16, samples_per_prompt=4)
        plan = step.measured(begun, h).plan
        rewards = (torch.arange(plan.num_samples) % 3 == 0).float()
        groups = [p for p in plan.prompts for _ in range(4)]
        out.append((plan, reinforce(step, plan, rewards, groups).indices.tolist()))
    return out


def test_plans_and_selections_follow_aepo_seed():
    cfg = AEPOConfig(
        samples_up=3,
        samples_down=3,
        extra_rollout={"budget": "fixed"},
        entropy_source="current_batch",
    )
    a = run_steps(AEPOStep(cfg), [0.2, 0.7, 0.3])
    b = run_steps(AEPOStep(cfg), [0.2, 0.7, 0.3])
    c = run_steps(AEPOStep(cfg.model_copy(update={"seed": 1})), [0.2, 0.7, 0.3])
    assert a == b
    assert [p.prompts for p, _ in a] != [p.prompts for p, _ in c]


def test_state_dict_round_trip_continues_the_same_steps():
    cfg = AEPOConfig(
        samples_up=3,
        samples_down=3,
        extra_rollout={"budget": "fixed"},
        entropy_source="current_batch",
    )
    straight = AEPOStep(cfg)
    run_steps(straight, [0.2, 0.7])
    resumed = AEPOStep(cfg)
    resumed.load_state_dict(straight.state_dict())
    assert run_steps(resumed, [0.3, 0.6], start=3) == run_steps(straight, [0.3, 0.6], start=3)


def test_state_without_rng_is_refused_naming_the_entry():
    step = AEPOStep(AEPOConfig())
    state = step.state_dict()
    del state["rng_state"]
    with pytest.raises(ValueError, match="no 'rng_state' entry"):
        AEPOStep(AEPOConfig()).load_state_dict(state)


def test_paper_meaning_scales_alpha_by_the_proportional_strength():
    cfg = AEPOConfig(
        controller={"gain": "proportional", "proportional_gain": 2.0}, alpha=2.0, target_entropy=0.5
    )
    for meaning, expected in (("paper", 0.4), ("batch_share", 2.0)):
        step = AEPOStep(cfg.model_copy(update={"alpha_meaning": meaning}))
        begun = step.begin(1, num_prompts=8, samples_per_prompt=4)
        plan = step.measured(begun, 0.4).plan  # 0.1 nats below -> strength 0.2, 12 rows
        assert plan.decision.strength == pytest.approx(0.2)
        rows = reinforce(step, plan, torch.ones(plan.num_samples), [0] * plan.num_samples)
        assert torch.allclose(rows.advantages, torch.full_like(rows.advantages, expected))
        assert (rows.row_scale is None) == (meaning == "batch_share")


def test_a_state_without_the_last_step_is_refused_naming_the_entry():
    """States are those this version writes; one without the controller's last step and
    target (saved before target schedules) is refused, not half-loaded."""
    state = AEPOStep(AEPOConfig()).state_dict()
    del state["controller"]["last_step"]
    with pytest.raises(ValueError, match="no 'last_step' entry"):
        AEPOStep(AEPOConfig()).load_state_dict(state)


def test_previous_step_plans_are_settled_by_the_measurement_that_follows_them():
    cfg = AEPOConfig(
        target_entropy=0.5,
        entropy_source="previous_step",
        samples_up=8,
        samples_down=8,
        controller={"gain": "proportional", "proportional_gain": 2.0},
    )
    step = AEPOStep(cfg)
    first = step.begin(1, num_prompts=16, samples_per_prompt=4)
    assert first.plan is None  # no measurement yet: measure first
    assert step.measured(first, 0.3).plan is not None
    second = step.begin(2, num_prompts=16, samples_per_prompt=4)  # from step 1's 0.3
    assert second.plan is not None
    settled = step.measured(second, 0.7).plan  # step 2's own measurement crossed the target
    assert settled.rollout == second.plan.rollout and settled.prompts == second.plan.prompts
    assert (settled.decision.budget, settled.decision.strength) == (0, 0.0)
    rewards = torch.ones(settled.num_samples)
    groups = [p for p in settled.prompts for _ in range(4)]
    assert len(reinforce(step, settled, rewards, groups)) == 0  # hot samples: wrong way


def test_the_target_is_computed_once_per_step(monkeypatch):
    import aepo.core.step as step_module

    calls = []

    def counting_target_at(cfg, step):
        calls.append(step)
        return 0.5

    monkeypatch.setattr(step_module, "target_at", counting_target_at)
    for algorithm in ("aepo", "adaptive_entropy"):
        cfg = AEPOConfig(algorithm=algorithm)
        step = AEPOStep(cfg)
        calls.clear()
        for t in (1, 2):
            measured = step.measured(step.begin(t, num_prompts=16, samples_per_prompt=4), 0.3)
            if measured.plan is not None:
                n = measured.plan.num_samples
                reinforce(step, measured.plan, torch.ones(n), [0] * n)
        assert calls == [1, 2], algorithm


def _track(settle: bool, steps: int = 200) -> list[float]:
    """Entropy of a simulated policy under AEPOStep in previous_step mode: each update moves
    it by a constant drift (GRPO's collapse) plus a strong REINFORCE push, strength-scaled
    (strong enough that a push decided one update late overshoots). ``settle=False`` applies
    the plan as ``begin`` made it, from the previous step's measurement."""
    import random

    cfg = AEPOConfig(
        target_entropy=0.5,
        entropy_source="previous_step",
        samples_up=12,
        samples_down=12,
        controller={"gain": "proportional", "proportional_gain": 4.0},
    )
    step, noise = AEPOStep(cfg), random.Random(0)
    entropy, trace = 0.9, []
    for t in range(1, steps + 1):
        begun = step.begin(t, num_prompts=32, samples_per_prompt=8)
        plan = step.measured(begun, entropy).plan
        trace.append(entropy)
        if begun.plan is not None and not settle:
            plan = begun.plan
        push = plan.decision.direction * plan.decision.strength
        entropy = max(0.0, entropy - 0.03 + 0.3 * push + noise.gauss(0, 0.005))
    return trace[steps // 2 :]


def test_settling_removes_the_lag_of_previous_step_on_a_simulated_policy():
    def rms(trace):
        return (sum((h - 0.5) ** 2 for h in trace) / len(trace)) ** 0.5 / 0.5

    lagged, settled = rms(_track(settle=False)), rms(_track(settle=True))
    assert settled < 0.6 * lagged, (settled, lagged)  # measured 0.25 against 0.54


VERL_SHARED = ("verl/log_prob_passes.py", "verl/batch_merge.py", "verl/extra_rollout.py")
ENGINES = {
    "local": ("local/trainer.py",),
    "verl": ("verl/trainer.py", *VERL_SHARED),
    "verl V1": ("verl/trainer_v1.py", *VERL_SHARED),
}
"""the modules that make each engine's step (the two verl trainers share three)"""

CORE_HELPERS = frozenset(
    {
        "AEPOStep",
        "UpdateLayout",
        "entropic_adjust_loss",
        "entropy_bonus_loss",
        "group_advantage",
        "load_aepo_config",
        "masked_mean",
        "ppo_clip_loss",
        "recipe_for",
        "shape_advantages",
    }
)
"""core functions an engine may call outside AEPOStep: losses, GRPO's advantage and the
baselines' shaping; none decides anything the three calls decide"""


def _engine_calls(path):
    """(the ``self.aepo.*`` methods called, the core functions called by bare name)."""
    import ast

    tree = ast.parse(path.read_text())
    core_names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aepo.core")
        for alias in node.names
    }
    step_calls, bare_calls = [], set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Attribute):
            if func.value.attr == "aepo":
                step_calls.append(func.attr)
        elif isinstance(func, ast.Name) and func.id in core_names:
            bare_calls.add(func.id)
    return step_calls, bare_calls


def test_each_engine_step_makes_at_most_three_calls_into_the_core():
    """The step is the algorithm's three phases; a third engine, or a change of order, is
    made once, in aepo.core.step. Every other call into the core is a helper that decides
    nothing (CORE_HELPERS): a bare call to a core decision (a selection, a plan, a filter)
    from an engine would let the engines drift."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "aepo" / "backends"
    assert {p.name for p in (root / "verl").glob("trainer*.py")} == {"trainer.py", "trainer_v1.py"}
    for engine, modules in ENGINES.items():
        calls = []
        for name in modules:
            step_calls, bare_calls = _engine_calls(root / name)
            calls += step_calls
            assert bare_calls <= CORE_HELPERS, (name, sorted(bare_calls - CORE_HELPERS))
        step_calls = [c for c in calls if c not in ("state_dict", "load_state_dict")]
        assert sorted(step_calls) == ["begin", "measured", "reinforce"], (engine, calls)


def test_the_call_count_test_sees_a_bare_core_call(tmp_path):
    """The check above is only as good as its parser: an engine calling a core decision
    directly (as the verl engine once called reinforce_candidates) is caught."""
    engine = tmp_path / "engine.py"
    engine.write_text(
        "from aepo.core import masked_mean, select_from_extra_rollout as pick\n"
        "def step(self, cfg, r, g):\n"
        "    self.aepo.begin(1)\n"
        "    masked_mean(r, r)\n"
        "    return pick(cfg, 4, r, g)\n"
    )
    step_calls, bare_calls = _engine_calls(engine)
    assert step_calls == ["begin"]
    assert bare_calls - CORE_HELPERS == {"pick"}


def test_the_logged_temperature_is_the_one_the_extra_pass_samples_at():
    for algorithm, expected in (("aepo", 1.2), ("aepo_no_temperature", 1.0)):
        step = AEPOStep(AEPOConfig(algorithm=algorithm))
        measured = step.measured(step.begin(1, num_prompts=16, samples_per_prompt=4), 0.3)
        assert measured.plan.rollout.temperature == expected
        assert measured.metrics["aepo/temperature"] == expected
