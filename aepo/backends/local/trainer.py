"""The single-process engine: GRPO and every AEPO variant through ``aepo.core``.

Each step optimises Eq. 1 (``aepo.core.objective.aepo_objective``) and makes three calls into
the core's :class:`aepo.core.AEPOStep`:

1. ``begin``: this step's target, and the extra pass's plan when it can be made before
   generation (``entropy_source: previous_step``);
2. sample n responses per prompt at T = 1 (the GRPO group), score them at T = 1 (old
   log-probs, token entropy); ``measured`` with the token-mean entropy: the plan (made now, or
   its push re-sized) and this update's entropy bonus coefficient;
3. generate and score the plan's extra pass; ``reinforce``: the positives with advantage
   ``alpha * R``, the GRPO rows they replace and every row's Eq. 1 scale; the engine applies
   them to its tensors;
4. PPO-clip (or verl's Clip-Cov / KL-Cov) updates in contiguous mini-batches (the merge plan
   spreads extra rows over them), with the recipe's entropy bonus (fixed, or adaptive).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aepo.backends.local import checkpoint as ckpt
from aepo.backends.local.metrics_log import MetricsLogger
from aepo.backends.local.prompts import BuiltinTaskPrompts, ParquetPrompts, PromptSource
from aepo.backends.local.rollout import (
    Rollout,
    decode_responses,
    encode_prompts,
    sample,
    score,
)
from aepo.backends.local.settings import BUILTIN, RunConfig
from aepo.core import (
    AEPOConfig,
    AEPOStep,
    Measured,
    StepPlan,
    UpdateLayout,
    entropic_adjust_loss,
    entropy_bonus_loss,
    group_advantage,
    masked_mean,
    ppo_clip_loss,
    recipe_for,
    shape_advantages,
)
from aepo.model_dir import (
    ModelPathError,
    load_causal_lm,
    require_model_dir,
    resolve_device,
    silence_transformers_progress,
)


def load_model(path: str | Path, dtype: str, device: torch.device):
    path = require_model_dir(path)
    try:
        model, tokenizer = load_causal_lm(path, dtype=dtype)
    except Exception as err:
        raise ModelPathError(f"cannot load the model in {path}: {err}") from err
    return model.to(device), tokenizer


@dataclass
class TrainBatch:
    """Rows that enter the update: a rollout plus per-token old log-probs and advantages."""

    rollout: Rollout
    old_logp: torch.Tensor
    advantages: torch.Tensor

    def select(self, rows: torch.Tensor) -> TrainBatch:
        return TrainBatch(self.rollout.select(rows), self.old_logp[rows], self.advantages[rows])

    @staticmethod
    def cat(parts: list[TrainBatch]) -> TrainBatch:
        r = [p.rollout for p in parts]
        return TrainBatch(
            Rollout(
                torch.cat([x.prompt_ids for x in r]),
                torch.cat([x.prompt_mask for x in r]),
                torch.cat([x.responses for x in r]),
                torch.cat([x.response_mask for x in r]),
            ),
            torch.cat([p.old_logp for p in parts]),
            torch.cat([p.advantages for p in parts]),
        )


def apply_merge(grpo: TrainBatch, extra: TrainBatch, plan) -> TrainBatch:
    """Carry out a :class:`aepo.core.MergePlan` on local tensors."""
    merged = TrainBatch(
        grpo.rollout.select(torch.arange(len(grpo.rollout))),  # a copy we may overwrite
        grpo.old_logp.clone(),
        grpo.advantages.clone(),
    )
    k = int(plan.replace_rows.numel())
    if k:
        rows = plan.replace_rows.to(grpo.advantages.device)
        src = torch.arange(k, device=rows.device)
        for name in ("prompt_ids", "prompt_mask", "responses", "response_mask"):
            getattr(merged.rollout, name)[rows] = getattr(extra.rollout, name)[src]
        merged.old_logp[rows] = extra.old_logp[src]
        merged.advantages[rows] = extra.advantages[src]
    parts = [merged]
    if plan.append_rows:
        parts.append(extra.select(torch.arange(k, k + plan.append_rows)))
    if plan.pad_rows:
        pad = grpo.select(torch.zeros(plan.pad_rows, dtype=torch.long))
        pad.rollout.response_mask.zero_()  # no-op rows: no token enters the loss
        parts.append(pad)
    return TrainBatch.cat(parts) if len(parts) > 1 else merged


class LocalTrainer:
    """``resume_from``: a checkpoint directory (:func:`ckpt.latest_checkpoint` finds the
    newest of a run) whose model, optimiser, controller, tracker, RNG, step and data position
    the run continues from."""

    def __init__(
        self,
        config: RunConfig,
        output_dir: str | Path | None = None,
        *,
        resume_from: str | Path | None = None,
    ):
        self.cfg: AEPOConfig = config.aepo
        self.settings = config.trainer
        self.run_config = config
        self.recipe = recipe_for(self.cfg)
        self.output_dir = Path(output_dir or self.settings.output_dir)
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        self.device = resolve_device(self.settings.device)
        if not self.settings.progress:
            silence_transformers_progress()
        self.step = 0
        self.data_position = 0
        self.aepo = AEPOStep(self.cfg)
        self._policy_loss = self._make_policy_loss()
        if resume_from is None:
            model_dir = self._model_source()
        else:
            # Read before any model is loaded: a bad checkpoint fails fast, and a resumed run
            # loads its weights from the checkpoint only, never the configured model first.
            model_dir, optimizer_state, state = ckpt.load_checkpoint_files(resume_from)
        self.model, self.tokenizer = load_model(model_dir, self.settings.dtype, self.device)
        self.optimizer = self._new_optimizer()
        self.prompts = self._prompt_source()
        if resume_from is not None:
            self._restore(Path(resume_from), optimizer_state, state)

    # --- setup ------------------------------------------------------------------------
    def _model_source(self) -> Path:
        if self.settings.model == BUILTIN:
            from aepo.tasks.warm_start import warm_start_model

            return warm_start_model(
                self.settings.warm_start,
                self.settings.cache_dir,
                progress=self.settings.progress,
                task=self.settings.warm_start_task,
            )
        return Path(self.settings.model)

    def _make_policy_loss(self):
        """PPO-clip (``aepo.core``), or Clip-Cov / KL-Cov from verl's registry."""
        if self.recipe.policy_loss == "vanilla":
            cfg, agg = self.cfg, self.settings.loss_agg

            def vanilla(log_prob, old_log_prob, advantages, mask):
                return ppo_clip_loss(
                    log_prob,
                    old_log_prob,
                    advantages,
                    mask,
                    clip_low=cfg.clip_ratio,
                    clip_high=cfg.clip_ratio,
                    agg=agg,
                )

            return vanilla
        from aepo.backends.policy_loss import verl_policy_loss

        return verl_policy_loss(self.cfg, self.recipe.policy_loss, self.settings.loss_agg)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.model.parameters(), lr=self.settings.lr, weight_decay=self.settings.weight_decay
        )

    def _prompt_source(self) -> PromptSource:
        if self.settings.builtin_task is not None:
            return BuiltinTaskPrompts(self.settings.builtin_task, self.settings.seed)
        return ParquetPrompts(
            self.settings.data,
            self.tokenizer,
            self.settings.seed,
            self.settings.apply_chat_template,
        )

    def _restore(self, path: Path, optimizer_state: dict, state: dict) -> None:
        """Everything of a checkpoint but the weights, which ``__init__`` loaded from it."""
        try:
            self.optimizer.load_state_dict(optimizer_state)
            self.aepo.load_state_dict(state)
            ckpt.set_rng_state(state["rng"])
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise ckpt.CheckpointError(f"checkpoint {path} does not fit this run: {err}") from err
        self.step = int(state["step"])
        self.data_position = int(state["data_position"])

    def save(self) -> Path:
        state = {
            "step": self.step,
            "data_position": self.data_position,
            **self.aepo.state_dict(),
            "run_config": self.run_config.model_dump(),
        }
        path = ckpt.checkpoint_path(self.output_dir, self.step)
        return ckpt.save_checkpoint(path, self.model, self.tokenizer, self.optimizer, state)

    # --- one step ---------------------------------------------------------------------
    def _score_rows(self, rollout: Rollout, with_entropy: bool, temperature: float = 1.0):
        self.model.eval()
        with torch.no_grad():
            return score(
                self.model,
                rollout,
                chunk_rows=self.settings.entropy_chunk_rows,
                with_entropy=with_entropy,
                temperature=temperature,
            )

    def _sample(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        samples_per_prompt: int,
        temperature: float,
    ) -> Rollout:
        """``samples_per_prompt`` responses to each prompt row, consecutive per prompt."""
        self.model.eval()
        return sample(
            self.model,
            prompt_ids.repeat_interleave(samples_per_prompt, 0),
            prompt_mask.repeat_interleave(samples_per_prompt, 0),
            temperature=temperature,
            max_new_tokens=self.settings.max_new_tokens,
            pad_id=self.tokenizer.pad_token_id,
            eos_id=self.tokenizer.eos_token_id,
        )

    def _rewards(self, rollout: Rollout, truths: list) -> torch.Tensor:
        texts = decode_responses(self.tokenizer, rollout)
        return torch.tensor(
            [self.prompts.reward(t, g) for t, g in zip(texts, truths, strict=True)],
            dtype=torch.float32,
        )

    def train_step(self) -> dict[str, float]:
        cfg, s = self.cfg, self.settings
        step = self.step + 1
        started = time.perf_counter()
        n = s.samples_per_prompt
        prompts = self.prompts.take(self.data_position, s.prompts_per_step)
        prompt_ids, prompt_mask = encode_prompts(
            self.tokenizer, [p.text for p in prompts], s.max_prompt_length, self.device
        )
        group_ids = [i for i in range(len(prompts)) for _ in range(n)]
        truths = [p.ground_truth for p in prompts for _ in range(n)]

        start = self.aepo.begin(step, num_prompts=len(prompts), samples_per_prompt=n)

        gen_started = time.perf_counter()
        grpo_rollout = self._sample(prompt_ids, prompt_mask, n, 1.0)
        gen_time = time.perf_counter() - gen_started
        mask = grpo_rollout.response_mask
        old_logp, old_entropy = self._score_rows(grpo_rollout, with_entropy=True)
        entropy = float(masked_mean(old_entropy, mask))
        rewards = self._rewards(grpo_rollout, truths)
        measured = self.aepo.measured(start, entropy, rewards)

        seq_adv = group_advantage(rewards, group_ids).to(self.device)
        advantages = seq_adv.unsqueeze(1) * mask.to(seq_adv.dtype)
        old_logp_t = None
        if measured.dcpo is not None:
            # DCPO's second old-log-prob pass: the same GRPO samples, pi_old at T, no generation.
            old_logp_t, _ = self._score_rows(
                grpo_rollout, with_entropy=False, temperature=measured.dcpo.temperature
            )
        advantages, shaping_metrics = shape_advantages(
            cfg,
            advantages,
            mask,
            old_entropy=old_entropy,
            dcpo=measured.dcpo,
            entrocraft=measured.entrocraft,
            old_log_prob=old_logp,
            old_log_prob_t=old_logp_t,
            scores=rewards,
        )
        grpo = TrainBatch(grpo_rollout, old_logp, advantages)
        metrics: dict[str, float] = {
            "reward/mean": float(rewards.mean()),
            "actor/entropy": entropy,
            "response_length/mean": float(mask.sum(-1).float().mean()),
            "aepo/extra_gen_tokens": 0.0,
            "aepo/extra_gen_fraction": 0.0,
        }
        # Every algorithm logs the step's target (the line its entropy is judged against),
        # those with an extra pass the decision too.
        metrics.update(measured.metrics)
        metrics.update(shaping_metrics)
        gen_tokens = grpo_rollout.num_tokens

        batch = grpo
        plan = measured.plan
        if plan is not None:
            extra_batch, extra_metrics, extra_tokens, extra_time = self._extra_rollout(
                plan, prompt_ids, prompt_mask, prompts, grpo, seq_adv
            )
            gen_time += extra_time
            gen_tokens += extra_tokens
            metrics.update(extra_metrics)
            metrics["aepo/extra_gen_tokens"] = float(extra_tokens)
            metrics["aepo/extra_gen_fraction"] = extra_tokens / max(1, grpo_rollout.num_tokens)
            if extra_batch is not None:
                batch = extra_batch

        metrics.update(self._update(batch, measured))
        elapsed = time.perf_counter() - started
        metrics["perf/step_time_s"] = elapsed
        metrics["perf/gen_tokens"] = float(gen_tokens)
        metrics["perf/gen_tokens_per_s"] = gen_tokens / max(gen_time, 1e-9)
        metrics["perf/tokens_per_s"] = gen_tokens / max(elapsed, 1e-9)
        self.step = step
        self.data_position += s.prompts_per_step
        return metrics

    def _extra_rollout(self, plan: StepPlan, prompt_ids, prompt_mask, prompts, grpo, seq_adv):
        """The plan's extra pass, its REINFORCE rows merged into ``grpo`` (None: no row)."""
        metrics = {"aepo/reinforce_samples": 0.0}
        if plan.num_samples == 0:
            return None, metrics, 0, 0.0
        m = plan.rollout.samples_per_prompt
        chosen_t = torch.as_tensor(plan.prompts, device=prompt_ids.device)
        started = time.perf_counter()
        rollout = self._sample(
            prompt_ids[chosen_t], prompt_mask[chosen_t], m, plan.rollout.temperature
        )
        gen_time = time.perf_counter() - started
        group_ids = [i for i in plan.prompts for _ in range(m)]
        truths = [prompts[i].ground_truth for i in group_ids]
        rewards = self._rewards(rollout, truths)
        mini_batches = self.settings.mini_batches
        rows = len(grpo.rollout)
        layout = UpdateLayout(
            loss_agg_mode=self.settings.loss_agg,
            num_chunks=mini_batches if rows % mini_batches == 0 else 1,
            batch_multiple=mini_batches,
            minibatch_of=self._minibatch_of_rows,
        )
        reinforcement = self.aepo.reinforce(
            plan,
            rewards,
            group_ids,
            rollout.response_mask,
            grpo_advantage=seq_adv,
            grpo_lengths=grpo.rollout.response_mask.sum(-1).cpu(),
            layout=layout,
        )
        metrics.update(reinforcement.metrics)
        metrics["aepo/extra_reward_mean"] = float(rewards.mean())
        if len(reinforcement) == 0:
            return None, metrics, rollout.num_tokens, gen_time
        picked = rollout.select(reinforcement.indices.to(rollout.responses.device))
        # Old log-probs of temperature samples at T = 1: the ratio in the clipped term is
        # pi_theta / pi_old of the policy being trained, not of the sampling distribution
        # (sampling at T_high/T_low only chooses which responses enter the term).
        old_logp, _ = self._score_rows(picked, with_entropy=False)
        merged = apply_merge(
            grpo, TrainBatch(picked, old_logp, reinforcement.advantages), reinforcement.merge
        )
        merged.advantages = reinforcement.scaled(merged.advantages)
        return merged, metrics, rollout.num_tokens, gen_time

    def _minibatch_bounds(self, rows: int) -> np.ndarray:
        """Row bounds of the contiguous mini-batches of one epoch (``_update`` and the
        Eq. 1 weighting must agree on them)."""
        return np.linspace(0, rows, min(self.settings.mini_batches, rows) + 1).astype(int)

    def _minibatch_of_rows(self, rows: int) -> torch.Tensor:
        bounds = self._minibatch_bounds(rows)
        return torch.as_tensor(np.searchsorted(bounds[1:], np.arange(rows), side="right"))

    def _update(self, batch: TrainBatch, measured: Measured) -> dict[str, float]:
        s, recipe = self.settings, self.recipe
        self.model.train()
        bounds = self._minibatch_bounds(len(batch.rollout))
        losses, clipfracs, kls, grad_norms, coefs = [], [], [], [], []
        step_coef = measured.entropy_bonus
        adaptive = self.aepo.adaptive_entropy
        entropic, target, cfg = self.aepo.entropic, measured.target, self.cfg
        alphas: list[float] = []
        for _ in range(s.ppo_epochs):
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
                part = batch.select(torch.arange(lo, hi, device=batch.advantages.device))
                mask = part.rollout.response_mask
                if mask.sum() == 0:
                    continue
                logp, ent = score(
                    self.model,
                    part.rollout,
                    chunk_rows=s.entropy_chunk_rows,
                    # the guard's revival bonus needs it on the steps it applies
                    with_entropy=recipe.needs_current_entropy or (step_coef or 0.0) > 0,
                )
                loss, diag = self._policy_loss(logp, part.old_logp, part.advantages, mask)
                total = loss
                if entropic is not None:
                    alpha = measured.entropic_alpha
                    if alpha is None:
                        # the code: this mini-batch's entropy of pi_theta sets alpha, before
                        # the integral takes its error
                        alpha = entropic.step(float(masked_mean(ent.detach(), mask)), target)
                    total = total + entropic_adjust_loss(
                        logp,
                        part.old_logp,
                        part.advantages,
                        mask,
                        alpha,
                        cfg.baselines.entropic.high_prob_threshold,
                        s.loss_agg,
                    )
                    alphas.append(alpha)
                coef = adaptive.applied(measured.target) if step_coef is None else step_coef
                if coef > 0:
                    total = total + entropy_bonus_loss(ent, mask, coef, s.loss_agg)
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                grad_norms.append(
                    float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip))
                )
                self.optimizer.step()
                if step_coef is None:
                    # TRL: the mini-batch's token-mean entropy of pi_theta, measured in the
                    # forward pass of this optimizer step, sets the next step's coefficient.
                    adaptive.update(float(masked_mean(ent.detach(), mask)), measured.target)
                losses.append(loss.item())
                coefs.append(coef)
                if "actor/pg_clipfrac" in diag:  # verl's kl_cov reports none
                    clipfracs.append(diag["actor/pg_clipfrac"])
                kls.append(diag["actor/ppo_kl"])
        self.model.eval()

        def mean(xs):
            return float(np.mean(xs)) if xs else 0.0

        metrics = {
            "actor/pg_loss": mean(losses),
            "actor/pg_clipfrac": mean(clipfracs),
            "actor/ppo_kl": mean(kls),
            "actor/grad_norm": mean(grad_norms),
        }
        if adaptive is not None:
            metrics.update(adaptive.metrics())
            metrics["aepo/entropy_coef_applied"] = mean(coefs)
        if entropic is not None:
            metrics.update(entropic.metrics())
            metrics["aepo/entropic_alpha"] = mean(alphas)  # the alphas this update applied
        return metrics

    # --- loop -------------------------------------------------------------------------
    def fit(self, steps: int | None = None, desc: str | None = None) -> list[dict]:
        """Train until ``steps`` (default: the configured total); returns this call's metrics."""
        from tqdm.auto import tqdm

        total = steps if steps is not None else self.settings.steps
        if self.step >= total:
            return []
        resumed = self.step if self.step > 0 else None
        if resumed is None:
            torch.manual_seed(self.settings.seed)
            np.random.seed(self.settings.seed % 2**32)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "config.yaml").write_text(_to_yaml(self.run_config))
        logger = MetricsLogger(self.output_dir, resume_step=resumed)
        history = []
        bar = tqdm(
            total=total,
            initial=self.step,  # a resumed run's bar continues where it stopped
            desc=desc or self.output_dir.name,
            disable=not self.settings.progress,
            dynamic_ncols=True,
        )
        try:
            while self.step < total:
                metrics = self.train_step()
                for key, value in metrics.items():
                    if not math.isfinite(value):
                        raise FloatingPointError(f"step {self.step}: {key} is {value}")
                logger.log(self.step, metrics)
                history.append({"step": self.step, **metrics})
                bar.update(1)
                bar.set_postfix(
                    H=f"{metrics['actor/entropy']:.3f}", R=f"{metrics['reward/mean']:.2f}"
                )
                every = self.settings.save_every
                if (every and self.step % every == 0) or self.step == total:
                    self.save()
        finally:
            bar.close()
            logger.close()
        return history


def _to_yaml(config: RunConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
