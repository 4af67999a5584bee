"""``AEPO_DRY_RUN=1``: what a launch would run, printed after every start-up check."""

from __future__ import annotations

import os

from aepo.backends.verl.data_files import as_list, prompts_per_step
from aepo.backends.verl.startup import model_path_kind
from aepo.core import AEPOConfig, recipe_for


def tensorboard_dir(config) -> str | None:
    """Where verl's TensorBoard logger will write (tracking.py), None if it is off."""
    loggers = config.trainer.get("logger") or []
    if "tensorboard" not in ([loggers] if isinstance(loggers, str) else list(loggers)):
        return None
    runtime_env = config.get("ray_kwargs", {}).get("ray_init", {}).get("runtime_env") or {}
    env_vars = runtime_env.get("env_vars") or {}
    return env_vars.get("TENSORBOARD_DIR") or os.environ.get(
        "TENSORBOARD_DIR",
        f"tensorboard_log/{config.trainer.project_name}/{config.trainer.experiment_name}",
    )


def attention_plan(config) -> str:
    """What :func:`aepo.backends.verl.cluster.choose_attention` will pick, judged from this
    machine (the task runner decides from every Ray node)."""
    import importlib.util

    model = config.actor_rollout_ref.model
    asked = (model.get("override_config") or {}).get("attn_implementation")
    if asked is not None:
        return f"{asked}, remove-padding {'on' if model.use_remove_padding else 'off'}"
    if importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2 (flash-attn installed here)"
    return "sdpa, remove-padding off (flash-attn is not installed here)"


def target_summary(cfg: AEPOConfig) -> str:
    """The entropy target, or the schedule that moves it."""
    schedule = cfg.target_schedule
    if schedule is not None and schedule.kind != "constant":
        return (
            f"target entropy {schedule.kind} {schedule.start} -> {cfg.target_entropy} "
            f"over {schedule.steps} steps"
        )
    return f"target entropy {cfg.target_entropy}"


def algorithm_summary(cfg: AEPOConfig, actor) -> str:
    """The algorithm and the settings it runs with; those verl has (entropy coefficient,
    Clip-Cov / KL-Cov constants) read from verl's ``actor_rollout_ref.actor``."""
    recipe, b = recipe_for(cfg), cfg.baselines
    loss = actor.policy_loss
    if recipe.extra_rollout:
        settings = (
            f"{target_summary(cfg)}, T_high {cfg.t_high} / T_low {cfg.t_low}, "
            f"{cfg.samples_up}/{cfg.samples_down} samples"
        )
    elif recipe.policy_loss == "clip_cov":
        settings = (
            f"verl's clip_cov loss, ratio {loss.clip_cov_ratio:g}, covariance in "
            f"({loss.clip_cov_lb:g}, {loss.clip_cov_ub:g})"
        )
    elif recipe.policy_loss == "kl_cov":
        settings = f"verl's kl_cov loss, ratio {loss.kl_cov_ratio:g}, coef {loss.ppo_kl_coef:g}"
    elif recipe.adaptive_entropy:
        a = b.adaptive_entropy
        settings = (
            f"{target_summary(cfg)}, c from {a.initial_coef:g} by {a.step:g} "
            f"within [{a.min_coef:g}, {a.max_coef:g}] each {a.update.replace('_', ' ')}"
        )
    elif recipe.entropic:
        e = b.entropic
        settings = (
            f"{target_summary(cfg)}, PI alpha K_p {e.proportional_gain:g} K_i "
            f"{e.integral_gain:g} within +-{e.max_alpha:g} on tokens with p > "
            f"{e.high_prob_threshold:g}, each {e.update.replace('_', ' ')}"
        )
    elif recipe.entrocraft:
        e = b.entrocraft
        if e.variant == "fixed":
            settings = f"{target_summary(cfg)}, +-1 advantages weighted 1 +- alpha (leaky PI)"
        else:
            settings = (
                f"band {e.band_width:g} wide around the {target_summary(cfg)}: above it "
                "RAFT++, below NSR, inside GRPO"
            )
    elif recipe.dcpo:
        d = b.dcpo
        settings = (
            f"{target_summary(cfg)}, old log-probs again at T_high {d.t_high} / T_low "
            f"{d.t_low}, gap capped at {d.max_gap:g}, positives: score > {d.score_threshold:g}"
        )
    elif recipe.top_entropy_quantile is not None:
        settings = (
            f"gradient through the top {recipe.top_entropy_quantile:.0%} of tokens by entropy"
        )
    elif cfg.algorithm == "entropy_reg":
        settings = f"verl's entropy bonus, entropy_coeff {actor.entropy_coeff:g}"
    elif recipe.entropy_adv:
        settings = f"beta {b.entropy_adv.beta:g}, kappa {b.entropy_adv.kappa:g}"
    else:
        return cfg.algorithm
    return f"{cfg.algorithm} ({settings})"


def run_summary(config, cfg: AEPOConfig, train_rows: int | None) -> str:
    """What a launch with this config would run: printed by a dry run."""
    data, trainer = config.data, config.trainer
    rollout = config.actor_rollout_ref.rollout
    batch = prompts_per_step(config)
    if train_rows is None:
        steps = "rows unknown"
    else:
        steps = f"{train_rows} rows, {train_rows // batch} steps per epoch"
    if trainer.get("total_training_steps"):
        steps += f", total_training_steps = {trainer.total_training_steps}"
    else:
        steps += f" x {trainer.total_epochs} epochs"
    lines = [
        ("algorithm", algorithm_summary(cfg, config.actor_rollout_ref.actor)),
        ("model", f"{config.actor_rollout_ref.model.path} ({model_path_kind(config)})"),
        ("train files", f"{', '.join(map(str, as_list(data.train_files)))} ({steps})"),
        ("val files", ", ".join(map(str, as_list(data.val_files)))),
        (
            "batch",
            f"{batch} prompts x n = {rollout.n}, mini-batch "
            f"{config.actor_rollout_ref.actor.ppo_mini_batch_size}, prompt "
            f"{data.max_prompt_length} + response {data.max_response_length} tokens",
        ),
        ("GPUs", f"{trainer.nnodes} node(s) x {trainer.n_gpus_per_node}"),
        ("attention", attention_plan(config)),
        ("TensorBoard", tensorboard_dir(config) or "off (trainer.logger)"),
        ("checkpoints", str(trainer.default_local_dir)),
    ]
    width = max(len(name) for name, _ in lines)
    body = "\n".join(f"  {name:<{width}}  {value}" for name, value in lines)
    return f"AEPO dry run: every start-up check passed; Ray was not started.\n{body}"
