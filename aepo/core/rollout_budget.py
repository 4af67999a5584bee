"""How many extra responses to generate for the REINFORCE term.

The authors sampled n responses for a quarter of the prompts every step (about +25%
generation) to be sure of 30-60 positives. ``extra_rollout.budget: auto`` instead sizes the pass
from the positive rate observed at that temperature, so a step needing 30 positives at a
70% positive rate generates ~56 responses, not a quarter of the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aepo.core.config import AEPOConfig
from aepo.core.controller import Decision
from aepo.core.recipes import recipe_for

FIXED_PROMPT_FRACTION = 0.25
"""``budget: fixed``: the authors' code resamples a quarter of the prompts every step"""
PRIOR_POSITIVE_RATE = 0.5
"""``budget: auto`` assumes this rate at a temperature it has not sampled yet"""


@dataclass(frozen=True)
class ExtraRolloutPlan:
    num_prompts: int
    samples_per_prompt: int
    temperature: float

    @property
    def num_samples(self) -> int:
        return self.num_prompts * self.samples_per_prompt


class PositiveRateTracker:
    """EMA of the fraction of extra samples that pass the filter, per temperature."""

    def __init__(self, prior: float = PRIOR_POSITIVE_RATE, momentum: float = 0.7):
        self.prior = prior
        self.momentum = momentum
        self.rates: dict[str, float] = {}

    @staticmethod
    def _key(temperature: float) -> str:
        return f"{temperature:.4g}"

    def rate(self, temperature: float) -> float:
        return self.rates.get(self._key(temperature), self.prior)

    def update(self, temperature: float, num_positive: int, num_generated: int) -> None:
        if num_generated <= 0:
            return
        observed = num_positive / num_generated
        key = self._key(temperature)
        old = self.rates.get(key)
        self.rates[key] = (
            observed if old is None else self.momentum * old + (1 - self.momentum) * observed
        )

    def state_dict(self) -> dict[str, Any]:
        return {"prior": self.prior, "momentum": self.momentum, "rates": dict(self.rates)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prior = float(state["prior"])
        self.momentum = float(state["momentum"])
        self.rates = {str(k): float(v) for k, v in state["rates"].items()}


def plan_extra_rollout(
    cfg: AEPOConfig,
    *,
    budget: int,
    temperature: float,
    num_prompts: int,
    samples_per_prompt: int,
    positive_rate: float,
) -> ExtraRolloutPlan:
    """Size the extra pass for ``budget`` REINFORCE samples.

    ``num_prompts`` and ``samples_per_prompt`` describe the GRPO batch (prompts x n); the
    extra pass reuses prompts of this batch with the same n, so groups stay comparable
    (needed by the advantage filter).
    """
    if num_prompts <= 0 or samples_per_prompt <= 0:
        raise ValueError(
            f"empty GRPO batch: num_prompts={num_prompts}, samples_per_prompt={samples_per_prompt}"
        )
    m = samples_per_prompt
    extra = cfg.extra_rollout
    if budget <= 0:
        q = 0
    elif extra.budget == "fixed":
        q = math.ceil(FIXED_PROMPT_FRACTION * num_prompts)
    else:
        rate = max(positive_rate, 0.05)  # never plan on a rate so low the pass explodes
        needed = max(extra.min_samples, math.ceil(budget / rate * extra.oversample))
        cap = max(1, math.floor(extra.max_fraction * num_prompts * m))
        q = math.ceil(min(needed, cap) / m)
    q = min(q, num_prompts)
    return ExtraRolloutPlan(num_prompts=q, samples_per_prompt=m, temperature=temperature)


def plan_for_decision(
    cfg: AEPOConfig,
    decision: Decision,
    positive_rates: PositiveRateTracker,
    *,
    num_prompts: int,
    samples_per_prompt: int,
) -> ExtraRolloutPlan:
    """This step's extra pass, as both engines run it: at the controller's temperature (at
    T = 1 for the ``aepo_no_temperature`` ablation), sized for the decision's budget from the
    positive rate seen at that temperature."""
    temperature = decision.temperature if recipe_for(cfg).controlled_temperature else 1.0
    return plan_extra_rollout(
        cfg,
        budget=decision.budget,
        temperature=temperature,
        num_prompts=num_prompts,
        samples_per_prompt=samples_per_prompt,
        positive_rate=positive_rates.rate(temperature),
    )
