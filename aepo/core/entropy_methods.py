"""The field's token-level entropy controls that are not in verl, written once for both engines.

- The 80/20 rule (arXiv 2506.01939): only the highest-entropy tokens carry policy gradient.
  :func:`high_entropy_token_mask` picks them, :func:`top_entropy_advantages` zeroes the
  advantage of every other token. A zero advantage gives PPO-clip's per-token loss 0 (the
  dual clip only acts on negative advantages), so those tokens add nothing to the gradient
  but still count in the aggregation's denominator, as in the paper's objective (normalised by
  all response tokens) and in TRL 1.16 (``per_token_loss * entropy_mask`` divided by the full
  completion mask).
- Adaptive entropy control (Skywork-OR1, arXiv 2505.22312): an entropy bonus ``c * H`` whose
  coefficient moves by a fixed step towards the target, :class:`AdaptiveEntropyCoef`.

- DCPO (arXiv 2601.12730, the AEPO authors): no extra generation; pi_old's log-probs of the
  GRPO samples a second time at T_high or T_low, and the advantage mixed with the ratio
  ``exp(logp_T - logp_1)`` on the positive samples, :func:`dcpo_control` and
  :func:`dcpo_advantages`.

:func:`shape_advantages` is the one place the advantage-shaping baselines (Entropy-Adv, the
80/20 rule, DCPO, Entrocraft) edit the GRPO advantages, in one order, for both engines.

- EntroPIC (arXiv 2511.15248): a PI controller on the entropy error sets alpha, the weight of
  an extra ``-ratio * |A|`` term on high-probability tokens, :class:`EntroPICController` and
  :func:`entropic_adjust_loss`.

- Entrocraft (arXiv 2604.26326): a band around the (scheduled) target; above it only the
  positive samples carry an advantage (RAFT++), below it only the negative ones (NSR), inside it
  GRPO's; or its fixed-target variant, which weighs positives and negatives by a running alpha.
  :func:`entrocraft_control` and :func:`entrocraft_advantages`, applied by
  :func:`shape_advantages`.

Clip-Cov and KL-Cov live in verl's policy-loss registry; both engines call it there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from aepo.core.advantages import entropy_shaped_advantages
from aepo.core.config import (
    AdaptiveEntropyConfig,
    AEPOConfig,
    DCPOConfig,
    EntrocraftConfig,
    EntroPICConfig,
)
from aepo.core.recipes import recipe_for


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(values, q)`` (linear interpolation) without its 16M-element limit: a
    verl batch of 512 x 8 responses of 8k tokens has 33M."""
    flat = values.reshape(-1).float()
    if flat.numel() == 0:
        raise ValueError("quantile of no values")
    ordered = torch.sort(flat).values
    position = q * (flat.numel() - 1)
    lo = math.floor(position)
    hi = min(lo + 1, flat.numel() - 1)
    return torch.lerp(ordered[lo], ordered[hi], position - lo)


def high_entropy_token_mask(
    entropy: torch.Tensor, mask: torch.Tensor, keep: float
) -> tuple[torch.Tensor, float]:
    """The response tokens whose entropy is at least the ``1 - keep`` quantile of the
    entropies of all response tokens given (the paper's batch-level threshold tau_rho^B), and
    that threshold. ``keep = 0.2`` keeps the top 20%. As in TRL 1.16's
    ``get_high_entropy_mask``, ties at the threshold are kept (``>=``)."""
    valid = mask.to(torch.bool)
    if not valid.any():
        return torch.zeros_like(valid), math.nan
    threshold = quantile(entropy[valid], 1.0 - keep)
    return (entropy >= threshold.to(entropy.dtype)) & valid, float(threshold)


def top_entropy_advantages(
    advantages: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, keep: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Advantages with every token outside the top-``keep`` entropy share set to 0, and the
    ``aepo/top_entropy_*`` metrics."""
    selected, threshold = high_entropy_token_mask(entropy, mask, keep)
    tokens = max(1, int(mask.to(torch.bool).sum()))
    metrics = {
        "aepo/top_entropy_threshold": threshold,
        "aepo/top_entropy_token_fraction": int(selected.sum()) / tokens,
    }
    return advantages * selected.to(advantages.dtype), metrics


def adaptive_coef_step(
    coef: float, entropy: float, target: float, step: float, lo: float, hi: float
) -> tuple[float, float]:
    """Skywork-OR1's adaptive entropy control, one measurement ``entropy``: (the bonus this
    step applies, ``c_k * 1[e_k <= target]``; the next ``c``, moved up by ``step`` at or
    below the target and down above it, within ``[lo, hi]``). The one rule behind
    :class:`AdaptiveEntropyCoef` and the reward guard's revival bonus."""
    if entropy <= target:
        return coef, min(coef + step, hi)
    return 0.0, max(coef - step, lo)


class AdaptiveEntropyCoef:
    """Skywork-OR1's adaptive entropy control, as TRL 1.16 implements it
    (``GRPOTrainer.compute_loss``, ``use_adaptive_entropy``):

    - after each measurement ``e``: ``c += step`` if ``e <= target`` else ``c -= step``,
      clipped to ``[min_coef, max_coef]``;
    - the bonus applied is ``c`` when the entropy is <= the target, else 0.

    Two cadences (``aepo.baselines.adaptive_entropy.update``):

    - ``optimizer_step`` (TRL): every optimizer step applies :meth:`applied`, the ``c`` and
      gate left by the previous step's measurement (no bonus before the first), then
      :meth:`update` with that mini-batch's entropy of pi_theta;
    - ``training_step`` (Skywork-OR1's ``alpha_k = c_k * 1[e_k <= target]``, then
      ``c_{k+1}``): :meth:`begin_step` with the step's pi_old entropy, once per step.

    ``c`` and the last measurement are state, saved with the checkpoint so a resumed run
    continues them.
    """

    def __init__(self, cfg: AdaptiveEntropyConfig):
        self.cfg = cfg
        self.coef = float(cfg.initial_coef)
        self.last_entropy: float | None = None

    def applied(self, target: float) -> float:
        """The coefficient the next loss multiplies the entropy with, at this step's target."""
        if self.last_entropy is None or self.last_entropy > target:
            return 0.0
        return self.coef

    def begin_step(self, entropy: float, target: float) -> float:
        """This step's coefficient ``c_k * 1[e_k <= target]``; then ``c`` moves for the next."""
        this_step = self.coef if float(entropy) <= target else 0.0
        self.update(entropy, target)
        return this_step

    def update(self, entropy: float, target: float) -> None:
        entropy = float(entropy)
        if not math.isfinite(entropy):
            raise ValueError(f"adaptive entropy control measured a non-finite entropy {entropy}")
        cfg = self.cfg
        _, self.coef = adaptive_coef_step(
            self.coef, entropy, target, cfg.step, cfg.min_coef, cfg.max_coef
        )
        self.last_entropy = entropy

    def metrics(self) -> dict[str, float]:
        """``c`` after the latest update."""
        return {"aepo/entropy_coef": self.coef}

    def state_dict(self) -> dict[str, Any]:
        return {"coef": self.coef, "last_entropy": self.last_entropy}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises ``ValueError`` naming what is missing or malformed."""
        try:
            coef = float(state["coef"])
            last = state["last_entropy"]
            last = None if last is None else float(last)
        except KeyError as err:
            raise ValueError(f"adaptive entropy state has no {err.args[0]!r} entry") from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"malformed adaptive entropy state: {err}") from None
        self.coef, self.last_entropy = coef, last


# ---- DCPO ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DCPOControl:
    """DCPO's decision for one step, fixed before the second old-log-prob pass.

    Read from the authors' code (597358816/AEPO 15dc716, ``RayPPOTrainer.fit``, branch
    ``alg == "DCPO"``), which this follows where the paper's summary of it differs:

    - H is the entropy the previous update reported (``metrics["actor/entropy_loss"]``), 0
      before the first update. Here it is the previous step's pi_old token-mean entropy at
      T = 1 (the measurement both engines make identically, saved with the controller); it
      is the entropy the authors' previous update saw on its first mini-batch. Step 1 reads
      0, as the code does: T = t_high and a gap of ``min(H*, max_gap)``.
    - T = t_high when ``H <= H*`` (the code's ``entropy <= entropy_base``), else t_low.
    """

    entropy: float
    """H: the previous step's measurement (0 at step 1, as in the code)"""
    target: float
    temperature: float
    gap: float
    """``min(|H* - H|, max_gap)``"""

    def metrics(self) -> dict[str, float]:
        return {
            "aepo/dcpo_entropy": self.entropy,
            "aepo/temperature": self.temperature,
            "aepo/dcpo_gap": self.gap,
        }


def dcpo_control(cfg: DCPOConfig, previous_entropy: float | None, target: float) -> DCPOControl:
    entropy = 0.0 if previous_entropy is None else float(previous_entropy)
    temperature = cfg.t_high if entropy <= target else cfg.t_low
    return DCPOControl(entropy, target, temperature, min(abs(target - entropy), cfg.max_gap))


def dcpo_advantages(
    cfg: DCPOConfig,
    control: DCPOControl,
    advantages: torch.Tensor,
    old_log_prob: torch.Tensor,
    old_log_prob_t: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``(1 - a) * A + a * 1[score > threshold] * exp(logp_T - logp_1)`` per response token,
    with ``a = c / (c + 1)``, ``c = gap / (share of samples with score > threshold)``, and the
    ``aepo/dcpo_*`` metrics (``aepo/dcpo_mix`` is a, DCPO's control signal).

    ``scores``: one summed score per row; ``old_log_prob`` / ``old_log_prob_t``: pi_old's token
    log-probs at T = 1 and at ``control.temperature``. With no positive sample the code
    divides by 0 and its advantages become NaN; here a = 0 (the added term is 0 for every
    row then, so plain GRPO). Padding tokens get advantage 0 (the code leaves the factor
    there; the loss masks them either way).
    """
    positive = (scores.reshape(-1) > cfg.score_threshold).to(advantages.device)
    share = float(positive.float().mean()) if positive.numel() else 0.0
    c = control.gap / share if share > 0 else 0.0
    mix = c / (c + 1.0)
    weights = mask.to(advantages.dtype)
    factor = torch.exp(old_log_prob_t.to(advantages.dtype) - old_log_prob.to(advantages.dtype))
    term = positive.to(advantages.dtype).unsqueeze(1) * factor * weights
    mixed = (1.0 - mix) * advantages + mix * term
    tokens = weights.sum().clamp(min=1)
    metrics = {
        **control.metrics(),
        "aepo/dcpo_mix": mix,
        "aepo/dcpo_positive_share": share,
        "aepo/dcpo_ratio_mean": float((factor * weights).sum() / tokens),
    }
    return mixed, metrics


def shape_advantages(
    cfg: AEPOConfig,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_entropy: torch.Tensor | None = None,
    dcpo: DCPOControl | None = None,
    old_log_prob: torch.Tensor | None = None,
    old_log_prob_t: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    entrocraft: EntrocraftControl | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO token advantages as the algorithm's baseline shapes them, and its
    ``aepo/*`` metrics; unchanged (and no metric) for every other algorithm.

    ``old_entropy``: pi_old's token entropies (Entropy-Adv, the 80/20 rule); ``dcpo``: the
    step's :class:`DCPOControl` (``Measured.dcpo``), with ``old_log_prob`` /
    ``old_log_prob_t`` (pi_old's at T = 1 and at its temperature) and ``scores`` (one per
    row). The recipes are exclusive; the order is fixed so that both engines apply the same
    one whatever a future recipe combines.
    """
    recipe, metrics = recipe_for(cfg), {}
    if recipe.entropy_adv:
        entropy_adv = cfg.baselines.entropy_adv
        advantages = entropy_shaped_advantages(
            advantages, old_entropy, mask, beta=entropy_adv.beta, kappa=entropy_adv.kappa
        )
    if recipe.top_entropy_quantile is not None:
        # One threshold over the whole step's batch (the paper's tau_rho^B), from pi_old's
        # entropies (TRL takes pi_theta's per micro-batch).
        advantages, top_metrics = top_entropy_advantages(
            advantages, old_entropy, mask, recipe.top_entropy_quantile
        )
        metrics.update(top_metrics)
    if dcpo is not None:
        advantages, dcpo_metrics = dcpo_advantages(
            cfg.baselines.dcpo, dcpo, advantages, old_log_prob, old_log_prob_t, scores, mask
        )
        metrics.update(dcpo_metrics)
    if entrocraft is not None:
        advantages, entrocraft_metrics = entrocraft_advantages(entrocraft, advantages, scores, mask)
        metrics.update(entrocraft_metrics)
    return advantages, metrics


# ---- EntroPIC --------------------------------------------------------------------------------


class EntroPICController:
    """EntroPIC's PI controller, as its code has it (yk7333/EntroPIC 2470730, ``dp_actor.py``):

    ``alpha = clip(K_i * I + K_p * (H - H*), -max_alpha, max_alpha)``, then ``I += H - H*``.

    alpha > 0 (entropy above the target) adds ``alpha * (-ratio * |A|)`` on high-probability
    tokens, which pushes positive samples' tokens up by (1 + alpha) and negative samples' by
    (1 - alpha) in weight: sharper, lower entropy; alpha < 0 the reverse
    (:func:`entropic_adjust_loss`).

    The code updates on every micro-batch from pi_theta's entropy there, adding
    ``(H - H*) * micro_rows / mini_batch_rows`` to I (so one error per mini-batch, per rank).
    Here one update adds ``H - H*`` once: per optimizer step (``update: optimizer_step``, the
    local engine's mini-batch is its micro-batch) or per training step from pi_old's entropy
    (``training_step``, what verl's worker allows). ``I`` is state, saved with the checkpoint.
    """

    def __init__(self, cfg: EntroPICConfig):
        self.cfg = cfg
        self.integral = 0.0
        self.last_alpha = 0.0

    def step(self, entropy: float, target: float) -> float:
        """alpha for the update that measured ``entropy``; the integral then moves."""
        entropy = float(entropy)
        if not math.isfinite(entropy):
            raise ValueError(f"EntroPIC measured a non-finite entropy {entropy}")
        cfg, error = self.cfg, entropy - target
        alpha = cfg.integral_gain * self.integral + cfg.proportional_gain * error
        self.last_alpha = min(max(alpha, -cfg.max_alpha), cfg.max_alpha)
        self.integral += error
        return self.last_alpha

    def metrics(self) -> dict[str, float]:
        return {"aepo/entropic_alpha": self.last_alpha, "aepo/entropic_integral": self.integral}

    def state_dict(self) -> dict[str, Any]:
        return {"integral": self.integral, "last_alpha": self.last_alpha}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises ``ValueError`` naming what is missing or malformed."""
        try:
            integral, last = float(state["integral"]), float(state["last_alpha"])
        except KeyError as err:
            raise ValueError(f"EntroPIC state has no {err.args[0]!r} entry") from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"malformed EntroPIC state: {err}") from None
        if not (math.isfinite(integral) and math.isfinite(last)):
            raise ValueError(f"malformed EntroPIC state: integral={integral}, last_alpha={last}")
        self.integral, self.last_alpha = integral, last


def entropic_adjust_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    alpha: float,
    threshold: float,
    agg: str = "token-mean",
) -> torch.Tensor:
    """EntroPIC's added term ``alpha * agg(-ratio * |A|)`` over the response tokens whose
    probability under pi_theta exceeds ``threshold`` (the code's ``compute_policy_loss_entropic``,
    ratio with its clamp of the log-ratio to +-20).

    Normalised as verl 0.9.1's ``agg_loss`` does with the high-probability tokens as mask:
    under ``token-mean`` by every response token of the update (verl's global token count),
    where the authors' verl divided by the high-probability tokens of the micro-batch.
    """
    from aepo.core.losses import aggregate

    log_ratio = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(log_ratio)
    high = (log_prob > math.log(threshold)) & mask.to(torch.bool)
    per_token = -ratio * advantages.abs()
    if agg == "token-mean":
        tokens = mask.to(per_token.dtype).sum().clamp(min=1)
        return alpha * (per_token * high.to(per_token.dtype)).sum() / tokens
    return alpha * aggregate(per_token, high, agg)


# ---- Entrocraft ------------------------------------------------------------------------------

ENTROCRAFT_MODES = {"raftpp": 1.0, "grpo": 0.0, "nsr": -1.0, "fixed": 0.0}
"""``aepo/entrocraft_mode`` per mode: +1 only positives train (entropy above the band), -1
only negatives (below), 0 GRPO inside it (and the ``fixed`` variant)"""


def entrocraft_band(cfg: EntrocraftConfig, target: float) -> tuple[float, float]:
    """``[H* - w/2, H* + w/2]``: the band as a width around this step's target.

    The code's schedules move a lower and an upper bound from a start pair to an end pair
    (``entropy_lower_bound_range``, ``entropy_upper_bound_range``) with one interpolation
    weight for both, so a band of constant width (every released script: upper = lower +
    0.1) is its centre's schedule plus the width. The centre is the level AEPO holds, so one
    ``aepo.target_schedule`` drives both, and the tracking error of each is measured against
    the same line. The code's ``grpo_range_linear`` with lower [0.6, 0.4], upper [0.7, 0.5] is
    ``target_schedule: {kind: linear, start: 0.65, steps: T}``, ``target_entropy: 0.45``,
    ``band_width: 0.1``, one step later: the code reaches ``step / total_steps`` at
    verl's global step ``step`` (1 at the first), this package's schedule ``(step - 1) /
    steps`` (0 at the first, :func:`aepo.core.schedule.target_at`). Bounds below 0 are
    kept: entropy is never below them, so that side of the band never acts.
    """
    half = cfg.band_width / 2.0
    return target - half, target + half


def entrocraft_mode(entropy: float, lower: float, upper: float) -> str:
    """The code's ``compute_grpo_range_outcome_advantage``: ``H > upper`` -> RAFT++ (only the
    positives train: sharper), ``H < lower`` -> NSR (only the negatives: pushing mass off wrong
    answers flattens), else GRPO. Both comparisons strict, as there."""
    if entropy > upper:
        return "raftpp"
    if entropy < lower:
        return "nsr"
    return "grpo"


def signed_outcome(scores: torch.Tensor) -> torch.Tensor:
    """``2R - 1``: the code's math scorers return +1 / -1 (``1.0 if correct else -1.0``); a
    binary {0, 1} reward maps onto them, so NSR sees the wrong answers at all (their raw 0
    would give NSR no gradient)."""
    return 2.0 * scores.reshape(-1).float() - 1.0


def raftpp_advantages(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The code's ``compute_raftpp_outcome_advantage`` on ``2R - 1``: ``max(score, 0)`` on every
    response token, no group baseline, no std."""
    signed = signed_outcome(scores).clamp(min=0.0)
    return signed.to(mask.device).unsqueeze(1) * mask.float()


def nsr_advantages(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The code's ``compute_nsr_outcome_advantage`` on ``2R - 1``: ``min(score, 0)``."""
    signed = signed_outcome(scores).clamp(max=0.0)
    return signed.to(mask.device).unsqueeze(1) * mask.float()


def entropic_outcome_advantages(
    scores: torch.Tensor, mask: torch.Tensor, alpha: float
) -> torch.Tensor:
    """The code's ``compute_entropic_outcome_advantage`` on ``2R - 1``: ``score * w`` with
    ``w = 1 + alpha`` on positive scores, ``1 - alpha`` on negative ones (1 on a score of 0)."""
    signed = signed_outcome(scores)
    weights = torch.ones_like(signed)
    weights[signed > 0] = 1.0 + alpha
    weights[signed < 0] = 1.0 - alpha
    return (signed * weights).to(mask.device).unsqueeze(1) * mask.float()


class EntrocraftAlpha:
    """The fixed-target variant's alpha, as the code keeps it (``RayPPOTrainer._last_alpha``,
    ``compute_entropic_outcome_advantage``): ``alpha = last + 1.0 * (H - H*)``, then ``last =
    alpha - 0.99 * (H - H*)``, i.e. a leaky PI: ``alpha_t = s_t + e_t``, ``s_{t+1} = s_t + 0.01 e_t``,
    unclipped. The code starts ``last`` at 0 in every process (it is not checkpointed); here it
    is state, saved with the checkpoint so a resumed run continues it."""

    PROPORTIONAL = 1.0
    """the code's ``1. * (current_entropy - target_entropy)``"""
    CARRY = 0.99
    """the code's ``alpha - 0.99 * (current_entropy - target_entropy)``"""

    def __init__(self) -> None:
        self.last_alpha = 0.0

    def step(self, entropy: float, target: float) -> float:
        entropy = float(entropy)
        if not math.isfinite(entropy):
            raise ValueError(f"Entrocraft measured a non-finite entropy {entropy}")
        error = entropy - target
        alpha = self.last_alpha + self.PROPORTIONAL * error
        self.last_alpha = alpha - self.CARRY * error
        return alpha

    def state_dict(self) -> dict[str, Any]:
        return {"last_alpha": self.last_alpha}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises ``ValueError`` naming what is missing or malformed."""
        try:
            last = float(state["last_alpha"])
        except KeyError as err:
            raise ValueError(f"Entrocraft state has no {err.args[0]!r} entry") from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"malformed Entrocraft state: {err}") from None
        if not math.isfinite(last):
            raise ValueError(f"malformed Entrocraft state: last_alpha={last}")
        self.last_alpha = last


@dataclass(frozen=True)
class EntrocraftControl:
    """Entrocraft's decision for one step (arXiv 2604.26326), read from its code
    (lblaoke/entrocraft 26165bd, ``verl/trainer/ppo/core_algos.py``: ``compute_grpo_range_*``,
    ``compute_raftpp_outcome_advantage``, ``compute_nsr_outcome_advantage``,
    ``compute_entropic_outcome_advantage``; ``ray_trainer.py``, ``fit``), which this follows:

    - H is the current batch's entropy: the code's ``current_entropy`` is ``agg_loss`` of the
      old-log-prob pass's token entropies of this very batch (verl's ``actor/entropy``, pi_old
      at T = 1, under the actor's ``loss_agg_mode``). Here it is pi_old's token-mean entropy at
      T = 1 over the step's GRPO group, the measurement both engines make; the two agree under
      ``token-mean`` (the code's scripts' default).
    - The band moves with the step; see :func:`entrocraft_band` for how its bounds map to
      ``aepo.target_schedule`` and width (the code's linear weight ``step / total_steps`` and
      cosine weight ``(1 - cos(pi step / total_steps)) / 2`` are this package's ``linear`` and
      ``cosine`` schedules, one step later).
    - Rewards: the code's are +1 / -1; RAFT++, NSR and the fixed variant read ``2R - 1``
      (:func:`signed_outcome`). GRPO inside the band is unchanged by the map (it is affine,
      and GRPO divides by the group's std).
    - The paper describes the method as a schedule of the entropy; the code acts only through
      which samples carry an advantage (no regulariser, no extra generation), and so does this.
    """

    entropy: float
    target: float
    mode: str
    """``raftpp``, ``nsr``, ``grpo`` (``variant: band``) or ``fixed``"""
    lower: float | None = None
    upper: float | None = None
    alpha: float | None = None
    """the fixed variant's alpha for this step"""

    def metrics(self) -> dict[str, float]:
        metrics = {"aepo/entrocraft_mode": ENTROCRAFT_MODES[self.mode]}
        if self.lower is not None:
            metrics["aepo/entrocraft_lower"] = self.lower
            metrics["aepo/entrocraft_upper"] = self.upper
        if self.alpha is not None:
            metrics["aepo/entrocraft_alpha"] = self.alpha
        return metrics


def entrocraft_control(
    cfg: EntrocraftConfig, entropy: float, target: float, alpha: EntrocraftAlpha | None
) -> EntrocraftControl:
    """This step's mode from this step's measurement (``alpha``: the fixed variant's state,
    which moves here, once per step)."""
    entropy = float(entropy)
    if cfg.variant == "fixed":
        if alpha is None:
            raise ValueError("Entrocraft's fixed variant needs its alpha state")
        return EntrocraftControl(entropy, target, "fixed", alpha=alpha.step(entropy, target))
    lower, upper = entrocraft_band(cfg, target)
    return EntrocraftControl(entropy, target, entrocraft_mode(entropy, lower, upper), lower, upper)


def entrocraft_advantages(
    control: EntrocraftControl,
    advantages: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The step's token advantages: GRPO's (``advantages``, unchanged) inside the band, else
    RAFT++'s or NSR's, or the fixed variant's; and the ``aepo/entrocraft_*`` metrics
    (``aepo/entrocraft_trained_share``: the share of responses with a non-zero advantage)."""
    if control.mode == "raftpp":
        shaped = raftpp_advantages(scores, mask)
    elif control.mode == "nsr":
        shaped = nsr_advantages(scores, mask)
    elif control.mode == "fixed":
        shaped = entropic_outcome_advantages(scores, mask, control.alpha)
    else:
        shaped = advantages
    shaped = shaped.to(advantages.dtype)
    trained = (shaped * mask.to(shaped.dtype)).abs().sum(-1) > 0
    metrics = {**control.metrics(), "aepo/entrocraft_trained_share": float(trained.float().mean())}
    return shaped, metrics
