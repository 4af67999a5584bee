"""The AEPO algorithm, framework-free (torch only): both engines call into this package.

The objective (arXiv 2510.08141, Eq. 1) is one function, ``objective.aepo_objective``::

    J_AEPO = J_GRPO + alpha * E_{o ~ pi_old^T} (1/|o|) sum_t min(r_t R, clip(r_t, 1-eps, 1+eps) R)

where T is T_high when pi_old's entropy H is below the target H* and T_low otherwise, r_t is
pi_theta / pi_old at T = 1, and R = 1 for the positive samples (the others drop out). Next to
it, the identity that lets both engines realise it through ordinary PPO-clip rows.

An engine's step is three calls into ``step.AEPOStep`` (file -> what it holds):

- ``begin``: the target H* of the step (``schedule.target_at``, once) and, when it can be made
  before generation, the extra pass's plan;
- ``measured``: H vs H* -> T and the sample budget (``controller``: pure functions of the
  state, the measurement and the target); how many ``o ~ pi_old^T`` to generate
  (``rollout_budget.plan_for_decision``) and for which prompts; the entropy bonus's coefficient
  (Entropy-Reg, ``entropy_methods.AdaptiveEntropyCoef``);
- ``reinforce``: ``R`` and the positives (``selection.select_reinforce_samples``); advantage
  ``alpha * R`` (``advantages.reinforce_advantages``); the GRPO rows they replace
  (``merge.plan_merge``); each row's weight so every update is Eq. 1 whatever the engine's
  ``loss_agg_mode`` and mini-batches (``losses.eq1_row_scale``).

``J_GRPO`` itself is the engine's own GRPO rows: ``advantages.group_advantage`` (= verl's
``compute_grpo_outcome_advantage``) and ``losses.ppo_clip_loss`` (= verl's vanilla loss).
The baselines that reshape those rows' advantages (Entropy-Adv, the 80/20 rule, DCPO) do it in
one function both engines call, ``entropy_methods.shape_advantages``.

Where we differ from the paper and from the authors' code (github.com/597358816/AEPO):

1. Row replacement (``merge.plan_merge``): the REINFORCE rows take the place of GRPO rows
   whose advantage is exactly 0 (whole-group ties, no gradient), spread over ranks and
   mini-batches; the authors overwrite the first k rows, losing real GRPO rows. verl needs
   the batch size unchanged, so appending is an option, not the default.
2. Auto budget (``extra_rollout.budget: auto``): the extra pass is sized from the positive
   rate seen at that temperature; the authors resample a quarter of the prompts x n every
   step (about +25% generation) to be sure of 30-60 positives.
3. Proportional gain (``controller.gain: proportional``, off by default): the paper's rule
   is bang-bang; scaling the push with ``|H - H*| / H*`` stops a small model oscillating
   around the target (docs/configuration.md, "Why gain: proportional").
4. One-step lag (``entropy_source: previous_step``, default): this step's T is decided from
   the previous step's measurement so the extra requests ride in the same rollout call.
   The authors' code lags too (it reads the last update's ``actor/entropy_loss``, the
   entropy of pi_theta during that update) but generates the extras in a second call;
   ``current_batch`` measures pi_old on this step's batch first, as the paper describes,
   and then generates. Step 1 always measures first.
5. Random capping (``select_reinforce_samples``): when more samples pass the filter than the
   budget allows, a seeded uniform subset is kept, not the first ones, so no prompt wins by
   its position in the batch.
6. The weighting (``alpha_meaning: paper``, default): the REINFORCE rows are weighted so the
   term is alpha times the mean over its samples, as Eq. 1 says. The authors (and our
   ``batch_share``) leave the rows to the aggregation, where under token-mean their weight
   is alpha x their share of the batch's tokens (60 rows of 4096: ~1.5% of alpha) and moves
   with batch size and response lengths. Under ``paper`` a proportional gain scales alpha by
   its strength, since a smaller budget no longer weakens a mean.
7. Positives (``positive_filter: reward``, default): R >= 1, as in the paper; the authors'
   code keeps samples whose group advantage among the temperature samples is > 0.05
   (``positive_filter: advantage``).
"""

import importlib

# Where each public name lives. Imported on first use (PEP 562), so that reading and
# validating a config (aepo.core.config, pydantic only) does not pay for importing torch:
# a configuration error comes back in well under a second.
_EXPORTS = {
    "advantages": ("entropy_shaped_advantages", "group_advantage", "reinforce_advantages"),
    "config": ("ALGORITHMS", "AEPOConfig", "ConfigError", "load_aepo_config"),
    "controller": ("LOWER", "RAISE", "ControllerState", "Decision"),
    "entropy": ("token_logprobs_and_entropy",),
    "entropy_methods": (
        "AdaptiveEntropyCoef",
        "DCPOControl",
        "EntroPICController",
        "EntrocraftAlpha",
        "EntrocraftControl",
        "dcpo_advantages",
        "dcpo_control",
        "entropic_adjust_loss",
        "entrocraft_advantages",
        "entrocraft_band",
        "entrocraft_control",
        "high_entropy_token_mask",
        "shape_advantages",
        "top_entropy_advantages",
    ),
    "losses": (
        "AGG_MODES",
        "VERL_AGG_MODES",
        "aggregate",
        "entropy_bonus_loss",
        "eq1_row_scale",
        "masked_mean",
        "ppo_clip_loss",
    ),
    "merge": ("MergePlan", "plan_merge"),
    "objective": ("aepo_objective",),
    "recipes": ("Recipe", "recipe_for"),
    "schedule": ("target_at",),
    "rollout_budget": (
        "ExtraRolloutPlan",
        "PositiveRateTracker",
        "plan_extra_rollout",
        "plan_for_decision",
    ),
    "selection": (
        "Selection",
        "select_from_extra_rollout",
        "select_reinforce_samples",
    ),
    "step": ("AEPOStep", "Measured", "Reinforcement", "StepPlan", "StepStart", "UpdateLayout"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
