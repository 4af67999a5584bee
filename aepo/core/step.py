"""One training step of every algorithm, as the paper's phases: three calls per step.

An engine generates, scores and moves tensors; every decision is made here, so the local and
verl engines cannot drift. Each step, in this order:

1. :meth:`AEPOStep.begin` -- this step's target H* (computed once, handed on in the result)
   and, under ``entropy_source: previous_step`` once a measurement exists, the plan of the
   extra pass, so its requests ride in the GRPO generate call;
2. :meth:`AEPOStep.measured` -- pi_old's token-mean entropy at T = 1 over the GRPO group
   (and the group's rewards, which the controller's guard watches): the controller observes
   it, the plan is made now (step 1, ``current_batch``) or its push re-sized from it
   (``previous_step``), and the entropy bonus coefficient of this update is fixed
   (Entropy-Reg, adaptive entropy control);
3. :meth:`AEPOStep.reinforce` -- only when the plan's extra samples were generated and
   scored: the positives are selected, weighted ``alpha * R``, given their place in the GRPO
   batch, and every row of the merged batch its Eq. 1 scale (``aepo.core.objective``).

:class:`AEPOStep` owns everything that outlives a step (the controller's state, the
positive-rate tracker, the RNG that picks prompts and caps selections, seeded from
``aepo.seed``, and adaptive entropy control's coefficient) and saves it as one
``state_dict()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from aepo.core import controller
from aepo.core.advantages import reinforce_advantages
from aepo.core.config import AEPOConfig
from aepo.core.controller import ControllerState, Decision, GuardState
from aepo.core.entropy_methods import (
    AdaptiveEntropyCoef,
    DCPOControl,
    EntrocraftAlpha,
    EntrocraftControl,
    EntroPICController,
    dcpo_control,
    entrocraft_control,
)
from aepo.core.losses import eq1_row_scale
from aepo.core.merge import MergePlan, plan_merge
from aepo.core.recipes import recipe_for
from aepo.core.rollout_budget import ExtraRolloutPlan, PositiveRateTracker, plan_for_decision
from aepo.core.schedule import target_at
from aepo.core.selection import select_from_extra_rollout

TRACKING_TOLERANCE = 0.05
"""how far (relative to H*) a run's entropy may sit from its target: ``aepo demo`` checks its
last-half mean against it, and every step logs ``aepo/target_low`` / ``aepo/target_high`` at
H* (1 -+ it) for the dashboard's band"""


@dataclass(frozen=True)
class StepPlan:
    """This step's decision and the extra pass it asks for."""

    decision: Decision
    rollout: ExtraRolloutPlan
    prompts: tuple[int, ...]
    """which prompts of the GRPO batch (0-based, ascending) the extra pass resamples"""

    @property
    def num_samples(self) -> int:
        return self.rollout.num_samples


@dataclass(frozen=True)
class StepStart:
    """What :meth:`AEPOStep.begin` knows before generation."""

    step: int
    target: float
    """this step's H* (``aepo.target_schedule``, else ``target_entropy``)"""
    num_prompts: int
    samples_per_prompt: int
    plan: StepPlan | None
    """made before generation (``previous_step`` once a measurement exists), else None"""
    extras_due: bool = True
    """False when no extra sample can reach this update whatever the plan (an asynchronous
    trainer's first steps, whose submissions went out before any measurement, or extras
    dropped as stale): :meth:`AEPOStep.measured` still decides and logs, but holds the
    integral, as for a push with no sample to apply"""


@dataclass(frozen=True)
class Measured:
    """What :meth:`AEPOStep.measured` decided from this step's measurement."""

    step: int
    target: float
    entropy: float
    plan: StepPlan | None
    """the extra pass (None: the algorithm has none); a plan made by :meth:`AEPOStep.begin`
    keeps its temperature and prompts, its budget and strength follow the measurement"""
    entropy_bonus: float | None
    """coefficient c of the entropy bonus ``-c * H(pi_theta)`` for every optimizer step of
    this update (Entropy-Reg's fixed one, adaptive entropy control's ``c_k * 1[e_k <= H*]``
    under ``update: training_step``, the guard's revival bonus for AEPO, else 0); None under
    adaptive entropy control's ``optimizer_step`` cadence, where
    :attr:`AEPOStep.adaptive_entropy` moves it after every optimizer step"""
    metrics: dict[str, float]
    """``aepo/target_entropy`` for every algorithm, plus the decision's ``aepo/*`` scalars
    (``aepo/temperature``: the one the extra pass samples at, or DCPO's second old-log-prob
    pass)"""
    dcpo: DCPOControl | None = None
    """DCPO's temperature and gap for this step, from the previous step's measurement (None:
    another algorithm)"""
    entropic_alpha: float | None = None
    """EntroPIC's alpha for this whole update (``update: training_step``); None under
    ``optimizer_step``, where :attr:`AEPOStep.entropic` sets it before every optimizer step,
    and for the other algorithms"""
    entrocraft: EntrocraftControl | None = None
    """Entrocraft's band and mode (or the fixed variant's alpha) from this step's own
    measurement (None: another algorithm)"""


@dataclass(frozen=True)
class UpdateLayout:
    """How an engine cuts the merged batch into optimizer steps: what the merge and the Eq. 1
    weighting must agree on with the engine's update."""

    loss_agg_mode: str
    num_chunks: int
    """contiguous equal parts of the GRPO batch downstream (ranks x mini-batches)"""
    batch_multiple: int
    """``merge: append`` pads the merged batch to a multiple of this"""
    minibatch_of: Callable[[int], torch.Tensor]
    """rows of a merged batch -> the (global) mini-batch each row falls in"""
    rows_per_minibatch: int | None = None
    """the sequence count the aggregate divides by (verl), None: rows with a token (local)"""
    horizon: float | None = None
    """``seq-mean-token-sum-norm``'s divisor"""


@dataclass(frozen=True)
class Reinforcement:
    """The REINFORCE rows of one step and where they go."""

    indices: torch.Tensor
    """which extra samples (rows of the extra pass, ascending) become REINFORCE rows"""
    advantages: torch.Tensor
    """their token advantages ``alpha * R`` (x the decision's strength under
    ``alpha_meaning: paper``), before :attr:`row_scale`"""
    merge: MergePlan | None
    """where they go in the GRPO batch (None when no sample was selected)"""
    row_scale: torch.Tensor | None
    """per row of the merged batch, the factor on its advantages that makes each update
    ``L_GRPO + alpha * L_REINFORCE``; None under ``alpha_meaning: batch_share``"""
    metrics: dict[str, float]

    def __len__(self) -> int:
        return int(self.indices.numel())

    def scaled(self, advantages: torch.Tensor) -> torch.Tensor:
        """The merged batch's token advantages times :attr:`row_scale` (each row's Eq. 1
        weight); unchanged under ``batch_share``."""
        if self.row_scale is None:
            return advantages
        return advantages * self.row_scale.to(advantages).unsqueeze(1)


class AEPOStep:
    def __init__(self, cfg: AEPOConfig):
        self.cfg = cfg
        self.recipe = recipe_for(cfg)
        self.controller = ControllerState()
        self.positive_rates = PositiveRateTracker()
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self._integral_before = 0.0
        """the integral before this step's measurement (taken back if the push is dropped)"""
        self.last_step: int | None = None
        self.last_target: float | None = None
        """step and target of the last step begun (saved: a checkpoint shows where a
        schedule stood)"""
        self.adaptive_entropy: AdaptiveEntropyCoef | None = (
            AdaptiveEntropyCoef(cfg.baselines.adaptive_entropy)
            if self.recipe.adaptive_entropy
            else None
        )
        """adaptive entropy control's coefficient (None for the other algorithms)"""
        self.entropic: EntroPICController | None = (
            EntroPICController(cfg.baselines.entropic) if self.recipe.entropic else None
        )
        """EntroPIC's controller (None for the other algorithms)"""
        self.entrocraft_alpha: EntrocraftAlpha | None = (
            EntrocraftAlpha()
            if self.recipe.entrocraft and cfg.baselines.entrocraft.variant == "fixed"
            else None
        )
        """Entrocraft's fixed-variant alpha state (None for the band and other algorithms)"""

    # --- 1. begin ----------------------------------------------------------------------------
    def begin(self, step: int, *, num_prompts: int, samples_per_prompt: int) -> StepStart:
        target = target_at(self.cfg, step)
        self.last_step, self.last_target = step, target
        plan = None
        if (
            self.recipe.extra_rollout
            and self.cfg.entropy_source == "previous_step"
            and self.controller.has_measurement
        ):
            plan = self._plan(step, target, num_prompts, samples_per_prompt)
        return StepStart(step, target, num_prompts, samples_per_prompt, plan)

    # --- 2. measured -------------------------------------------------------------------------
    def measured(
        self, start: StepStart, entropy: float, rewards: torch.Tensor | None = None
    ) -> Measured:
        """pi_old's token-mean entropy at T = 1 over this step's GRPO group, and the group's
        rewards (one per sample; None: the guard keeps its state and verdict)."""
        cfg, target = self.cfg, start.target
        dcpo = None
        if self.recipe.dcpo:
            # the authors' code reads the entropy of the update before this one
            dcpo = dcpo_control(cfg.baselines.dcpo, self.controller.entropy, target)
        before = self.controller
        self.controller = controller.observe(cfg, before, entropy, target)
        if rewards is not None and self.recipe.extra_rollout:
            rewards = rewards.detach().float().reshape(-1)
            positives = int((rewards >= cfg.reward_threshold).sum())
            self.controller = controller.watch(
                cfg, self.controller, float(rewards.mean()), positives
            )
        entropy = self.controller.entropy
        plan = start.plan
        if plan is not None:  # made before this measurement: its push follows it now
            plan = replace(plan, decision=controller.settle(cfg, self.controller, plan.decision))
        elif self.recipe.extra_rollout:  # measure first (step 1, current_batch)
            plan = self._plan(start.step, target, start.num_prompts, start.samples_per_prompt)
        self._integral_before = before.integral
        if plan is not None and (
            not start.extras_due or plan.decision.budget == 0 or plan.num_samples == 0
        ):
            self.controller = controller.hold_integral(self.controller, before.integral)
        bonus: float | None = self.recipe.entropy_bonus
        if self.recipe.extra_rollout:  # the guard's revival of a policy without positives
            bonus = self.controller.guard.revival_bonus
        adaptive = self.adaptive_entropy
        if adaptive is not None:
            bonus = None
            if cfg.baselines.adaptive_entropy.update == "training_step":
                bonus = adaptive.begin_step(entropy, target)
        metrics = {
            "aepo/target_entropy": target,
            # the band TensorBoard's dashboard draws around the target
            "aepo/target_low": target * (1 - TRACKING_TOLERANCE),
            "aepo/target_high": target * (1 + TRACKING_TOLERANCE),
        }
        if plan is not None:
            metrics.update(plan.decision.metrics())
            # what the extra pass samples at: T = 1 under aepo_no_temperature, whatever the
            # decision's direction
            metrics["aepo/temperature"] = plan.rollout.temperature
            metrics["aepo/integral"] = self.controller.integral
            metrics["aepo/reward_average"] = (
                self.controller.guard.reward if self.controller.guard.reward is not None else 0.0
            )
            metrics["aepo/revival_coef"] = self.controller.guard.revival_bonus
        if dcpo is not None:
            metrics.update(dcpo.metrics())
        entropic_alpha = None
        if self.entropic is not None and cfg.baselines.entropic.update == "training_step":
            entropic_alpha = self.entropic.step(entropy, target)
            metrics.update(self.entropic.metrics())
        entrocraft = None
        if self.recipe.entrocraft:
            # the code reads this batch's own pi_old entropy (ray_trainer.py, current_entropy)
            entrocraft = entrocraft_control(
                cfg.baselines.entrocraft, entropy, target, self.entrocraft_alpha
            )
            metrics.update(entrocraft.metrics())
        return Measured(
            start.step, target, entropy, plan, bonus, metrics, dcpo, entropic_alpha, entrocraft
        )

    def _plan(self, step: int, target: float, num_prompts: int, samples_per_prompt: int):
        decision = controller.decide(self.cfg, self.controller, step, target)
        rollout = plan_for_decision(
            self.cfg,
            decision,
            self.positive_rates,
            num_prompts=num_prompts,
            samples_per_prompt=samples_per_prompt,
        )
        chosen = torch.randperm(num_prompts, generator=self.rng)[: rollout.num_prompts]
        return StepPlan(decision, rollout, tuple(sorted(chosen.tolist())))

    # --- 3. reinforce ------------------------------------------------------------------------
    def reinforce(
        self,
        plan: StepPlan,
        rewards: torch.Tensor,
        group_ids: Sequence,
        response_mask: torch.Tensor,
        *,
        grpo_advantage: torch.Tensor,
        grpo_lengths: torch.Tensor,
        layout: UpdateLayout,
    ) -> Reinforcement:
        """Select, weigh and place the extra samples.

        ``rewards``, ``group_ids`` and ``response_mask``: every sample of the extra pass.
        ``grpo_advantage``: one value per GRPO row, exactly zero where the row gives no
        policy gradient; ``grpo_lengths``: response tokens per GRPO row. Records the
        positive rate seen at the plan's temperature, which sizes later passes there.
        """
        cfg = self.cfg
        selection, metrics = select_from_extra_rollout(
            cfg, plan.decision.budget, rewards, group_ids, self.rng
        )
        self.positive_rates.update(
            plan.rollout.temperature, selection.num_candidates, int(rewards.numel())
        )
        if len(selection) == 0:  # no push after all: the integral must not wind for it
            self.controller = controller.hold_integral(self.controller, self._integral_before)
            metrics["aepo/integral"] = self.controller.integral
        picked_mask = response_mask[selection.indices.to(response_mask.device)]
        # Under alpha_meaning: paper the term is a mean over the samples, so a smaller budget
        # no longer weakens it: gain: proportional scales alpha by the strength too, which is
        # what makes the push fade near the target. Under batch_share each row is a unit of
        # push: the last row's fraction is spread over them all (1.0 under gain: fixed).
        weight = cfg.alpha
        if cfg.alpha_meaning == "paper":
            weight *= plan.decision.strength  # 1.0 under controller.gain: fixed
        else:
            weight *= plan.decision.row_weight
        advantages = reinforce_advantages(
            selection.signal.to(picked_mask.device), weight, picked_mask
        )
        if len(selection) == 0:
            return Reinforcement(selection.indices, advantages, None, None, metrics)

        rows = int(grpo_advantage.numel())
        num_extra = len(selection) if cfg.merge == "append" else min(len(selection), rows)
        merge = plan_merge(
            grpo_advantage,
            num_extra,
            mode=cfg.merge,
            num_chunks=layout.num_chunks,
            batch_multiple=layout.batch_multiple,
        )
        metrics["aepo/displaced_nonzero"] = float(merge.displaced_nonzero)
        scale = None
        if cfg.alpha_meaning == "paper":
            # batch_share: rows keep alpha * R and the aggregate's own weighting (the
            # authors' code)
            scale = self._row_scale(merge, picked_mask.sum(-1).cpu(), grpo_lengths, layout)
        return Reinforcement(selection.indices, advantages, merge, scale, metrics)

    @staticmethod
    def _row_scale(merge: MergePlan, extra_lengths, grpo_lengths, layout: UpdateLayout):
        k = int(merge.replace_rows.numel())
        rows = int(grpo_lengths.numel())
        lengths = grpo_lengths.detach().reshape(-1).cpu().clone()
        lengths[merge.replace_rows] = extra_lengths[:k].to(lengths.dtype)
        lengths = torch.cat(
            [
                lengths,
                extra_lengths[k : k + merge.append_rows].to(lengths.dtype),
                torch.zeros(merge.pad_rows, dtype=lengths.dtype),  # no-op rows
            ]
        )
        total = int(lengths.numel())
        reinforce = merge.reinforce_rows(rows)
        return eq1_row_scale(
            lengths,
            reinforce,
            layout.minibatch_of(total),
            mode=layout.loss_agg_mode,
            rows_per_minibatch=layout.rows_per_minibatch,
            horizon=layout.horizon,
        )

    # --- checkpoint ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "controller": {
                "entropy": self.controller.entropy,
                "integral": self.controller.integral,
                "guard": asdict(self.controller.guard),
                "config": self.cfg.model_dump(),
                "last_step": self.last_step,
                "last_target": self.last_target,
            },
            "positive_rates": self.positive_rates.state_dict(),
            "rng_state": self.rng.get_state().tolist(),
        }
        if self.adaptive_entropy is not None:
            state["adaptive_entropy"] = self.adaptive_entropy.state_dict()
        if self.entropic is not None:
            state["entropic"] = self.entropic.state_dict()
        if self.entrocraft_alpha is not None:
            state["entrocraft"] = self.entrocraft_alpha.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises ``ValueError`` naming what is missing or malformed."""
        try:
            saved = state["controller"]
            entropy, integral = saved["entropy"], float(saved["integral"])
            last_step, last_target = saved["last_step"], saved["last_target"]
            # checkpoints written before the reward guard have no entry: a fresh guard
            guard = GuardState(**saved.get("guard", {}))
            if guard.reward is not None and not math.isfinite(float(guard.reward)):
                raise ValueError(f"guard reward {guard.reward!r}")
            self.positive_rates.load_state_dict(state["positive_rates"])
            rng_state = state["rng_state"]
            if self.adaptive_entropy is not None:
                self.adaptive_entropy.load_state_dict(state["adaptive_entropy"])
            if self.entropic is not None:
                self.entropic.load_state_dict(state["entropic"])
            if self.entrocraft_alpha is not None:
                self.entrocraft_alpha.load_state_dict(state["entrocraft"])
        except KeyError as err:
            raise ValueError(f"AEPO state has no {err.args[0]!r} entry") from None
        except (TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"malformed AEPO state: {err}") from None
        if (entropy is not None and not isinstance(entropy, int | float)) or not math.isfinite(
            integral
        ):
            raise ValueError(
                f"malformed AEPO state: controller entropy={entropy!r}, integral={integral!r}"
            )
        self.controller = ControllerState(
            entropy=None if entropy is None else float(entropy), integral=integral, guard=guard
        )
        self.last_step = None if last_step is None else int(last_step)
        self.last_target = None if last_target is None else float(last_target)
        try:
            self.rng.set_state(torch.tensor(rng_state, dtype=torch.uint8))
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"malformed AEPO rng_state: {err}") from None
