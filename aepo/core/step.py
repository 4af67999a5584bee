"""One AEPO step, as both engines run it: decide -> plan -> select -> weight -> merge-plan.

:class:`AEPOStep` owns everything that outlives a step (the entropy controller, the
positive-rate tracker and the RNG that picks prompts and caps selections, seeded from
``aepo.seed``) and saves it as one ``state_dict()``. An engine measures, generates, scores
and moves tensors; every decision is made here, so the local and verl engines cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from aepo.core.advantages import reinforce_advantages
from aepo.core.config import AEPOConfig
from aepo.core.controller import Decision, EntropyController
from aepo.core.entropy_methods import AdaptiveEntropyCoef
from aepo.core.losses import eq1_row_scale
from aepo.core.merge import MergePlan, plan_merge
from aepo.core.recipes import recipe_for
from aepo.core.rollout_budget import ExtraRolloutPlan, PositiveRateTracker, plan_for_decision
from aepo.core.schedule import target_at
from aepo.core.selection import Selection, select_from_extra_rollout


@dataclass(frozen=True)
class StepPlan:
    """This step's decision and the extra pass it asks for."""

    decision: Decision
    rollout: ExtraRolloutPlan
    prompts: tuple[int, ...]
    """which prompts of the GRPO batch (0-based, ascending) the extra pass resamples"""
    measurements: int = field(default=0, compare=False)
    """how many measurements the controller had seen when the plan was made"""

    @property
    def num_samples(self) -> int:
        return self.rollout.num_samples


class AEPOStep:
    def __init__(self, cfg: AEPOConfig):
        self.cfg = cfg
        self.recipe = recipe_for(cfg)
        self.controller = EntropyController(cfg)
        self.positive_rates = PositiveRateTracker()
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.measurements = 0
        """entropies observed in this process (tells :meth:`settle` whether a plan is stale)"""
        self.entropy_coef: AdaptiveEntropyCoef | None = (
            AdaptiveEntropyCoef(cfg.baselines.adaptive_entropy, cfg.target_entropy)
            if self.recipe.adaptive_entropy
            else None
        )
        """adaptive_entropy's coefficient (None for the other algorithms)"""

    def follow_target(self, step: int) -> float:
        """This step's target (``aepo.target_schedule``, else ``target_entropy``); the
        adaptive entropy coefficient chases the same one. Engines call it once per step."""
        target = target_at(self.cfg, step)
        if self.entropy_coef is not None:
            self.entropy_coef.target = target
        return target

    # --- decide and plan -------------------------------------------------------------------
    @property
    def plans_before_generation(self) -> bool:
        """Whether this step's plan can be made before the GRPO group is generated (so the
        extra requests ride in the same generate call): ``entropy_source: previous_step``
        once a measurement exists."""
        return (
            self.recipe.extra_rollout
            and self.cfg.entropy_source == "previous_step"
            and self.controller.has_measurement
        )

    def observe(self, entropy: float) -> None:
        """pi_old's token-mean entropy at T = 1 over this step's GRPO group."""
        self.controller.observe(entropy)
        self.measurements += 1

    def plan(self, step: int, *, num_prompts: int, samples_per_prompt: int) -> StepPlan:
        decision = self.controller.decide(step)
        rollout = plan_for_decision(
            self.cfg,
            decision,
            self.positive_rates,
            num_prompts=num_prompts,
            samples_per_prompt=samples_per_prompt,
        )
        chosen = torch.randperm(num_prompts, generator=self.rng)[: rollout.num_prompts]
        return StepPlan(decision, rollout, tuple(sorted(chosen.tolist())), self.measurements)

    def settle(self, plan: StepPlan) -> StepPlan:
        """The plan with its push re-decided from this step's measurement, when the plan was
        made before it (``previous_step``); unchanged otherwise. Engines call it between
        measuring the GRPO group and :meth:`select`."""
        if self.measurements <= plan.measurements:
            return plan
        decision = self.controller.settle(plan.decision)
        return replace(plan, decision=decision, measurements=self.measurements)

    # --- select and weight -----------------------------------------------------------------
    def select(
        self, plan: StepPlan, rewards: torch.Tensor, group_ids: Sequence
    ) -> tuple[Selection, dict[str, float]]:
        """The REINFORCE rows among the extra samples; records the positive rate seen at the
        plan's temperature, which sizes later passes at that temperature."""
        selection, metrics = select_from_extra_rollout(
            self.cfg, plan.decision.budget, rewards, group_ids, self.rng
        )
        self.positive_rates.update(
            plan.rollout.temperature, selection.num_candidates, int(rewards.numel())
        )
        return selection, metrics

    def advantages(
        self, plan: StepPlan, selection: Selection, response_mask: torch.Tensor
    ) -> torch.Tensor:
        """Token advantages ``alpha * R`` of the selected rows (before :meth:`row_scale`).

        Under ``alpha_meaning: paper`` the term is a mean over the samples, so a smaller
        budget no longer weakens it: ``gain: proportional`` then scales alpha by the
        decision's strength too, which is what makes the push fade near the target."""
        weight = self.cfg.alpha
        if self.cfg.alpha_meaning == "paper":
            weight *= plan.decision.strength  # 1.0 under controller.gain: fixed
        return reinforce_advantages(
            selection.signal.to(response_mask.device), weight, response_mask
        )

    def merge_plan(
        self,
        sequence_advantage: torch.Tensor,
        num_extra: int,
        *,
        num_chunks: int,
        batch_multiple: int,
    ) -> MergePlan:
        rows = int(sequence_advantage.numel())
        if self.cfg.merge != "append":
            num_extra = min(num_extra, rows)
        return plan_merge(
            sequence_advantage,
            num_extra,
            mode=self.cfg.merge,
            num_chunks=num_chunks,
            batch_multiple=batch_multiple,
        )

    def row_scale(
        self,
        lengths: torch.Tensor,
        reinforce: torch.Tensor,
        minibatch: torch.Tensor,
        *,
        mode: str,
        rows_per_minibatch: int | None = None,
        horizon: float | None = None,
    ) -> torch.Tensor | None:
        """Per-row advantage factors that make each update ``L_GRPO + alpha * L_REINFORCE``
        (``alpha_meaning: paper``); ``None`` under ``batch_share`` (rows keep ``alpha * R``
        and the aggregate's own weighting, as in the authors' code)."""
        if self.cfg.alpha_meaning == "batch_share":
            return None
        return eq1_row_scale(
            lengths,
            reinforce,
            minibatch,
            mode=mode,
            rows_per_minibatch=rows_per_minibatch,
            horizon=horizon,
        )

    # --- checkpoint ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "controller": self.controller.state_dict(),
            "positive_rates": self.positive_rates.state_dict(),
            "rng_state": self.rng.get_state().tolist(),
        }
        if self.entropy_coef is not None:
            state["adaptive_entropy"] = self.entropy_coef.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises ``ValueError`` naming what is missing or malformed."""
        try:
            self.controller.load_state_dict(state["controller"])
            self.positive_rates.load_state_dict(state["positive_rates"])
            rng_state = state["rng_state"]
            if self.entropy_coef is not None:
                self.entropy_coef.load_state_dict(state["adaptive_entropy"])
        except KeyError as err:
            raise ValueError(f"AEPO state has no {err.args[0]!r} entry") from None
        except (TypeError, AttributeError) as err:
            raise ValueError(f"malformed AEPO state: {err}") from None
        try:
            self.rng.set_state(torch.tensor(rng_state, dtype=torch.uint8))
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"malformed AEPO rng_state: {err}") from None
