"""Start-up checks: everything that would otherwise fail hours in, or silently train the
wrong objective, is rejected before Ray starts, with the config key to change."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from omegaconf import OmegaConf, open_dict
from verl.trainer.ppo.utils import need_critic

from aepo.backends.verl.checkpoint import resume_folder, resume_problems
from aepo.backends.verl.data_files import prompts_per_step
from aepo.backends.verl.trainer import aepo_config_from
from aepo.core import AEPOConfig, ConfigError, recipe_for
from aepo.model_dir import ModelPathError, missing_model_parts, require_model_dir

logger = logging.getLogger(__name__)


def check_config(config) -> AEPOConfig:
    """Validate ``aepo:`` and its fit with the rest of the verl config. Raises ConfigError."""
    cfg = aepo_config_from(config)
    recipe = recipe_for(cfg)
    problems: list[str] = []
    arr = config.actor_rollout_ref
    rollout = arr.rollout

    # The controller reads pi_old's entropy at T = 1, and old log-probs must be at T = 1 for
    # the clipped REINFORCE term; verl computes both at rollout.temperature.
    if float(rollout.temperature) != 1.0:
        problems.append(
            f"actor_rollout_ref.rollout.temperature must be 1.0 (got {rollout.temperature}): "
            "AEPO measures entropy and old log-probs at T = 1; aepo.t_high / aepo.t_low set "
            "the temperature of the extra samples"
        )
    if not arr.hybrid_engine:
        problems.append("actor_rollout_ref.hybrid_engine must be true (verl's v0 trainer)")
    correction = config.algorithm.get("rollout_correction") or {}
    if recipe.extra_rollout and correction.get("bypass_mode", False):
        problems.append(
            "algorithm.rollout_correction.bypass_mode must be false: it would use the "
            "T_high/T_low rollout log-probs of the AEPO samples as old log-probs"
        )
    needs_old_entropy = (
        recipe.entropy_adv
        or recipe.adaptive_entropy
        or recipe.top_entropy_quantile is not None
        or recipe.dcpo
        or recipe.entropic
        or recipe.entrocraft
    )
    if needs_old_entropy and correction.get("bypass_mode", False):
        problems.append(
            "algorithm.rollout_correction.bypass_mode must be false: it skips the old-log-prob "
            f"pass whose token entropies algorithm {cfg.algorithm} uses"
        )
    if recipe.extra_rollout and str(config.algorithm.adv_estimator).lower() == "remax":
        problems.append(
            "algorithm.adv_estimator=remax cannot be combined with AEPO's extra rollout"
        )
    if recipe.extra_rollout and need_critic(config):
        problems.append(
            "AEPO's extra rollout needs a critic-free estimator (no values for the extra rows): "
            f"algorithm.adv_estimator={config.algorithm.adv_estimator} uses a critic"
        )

    problems += _batch_size_problems(config, cfg, recipe.extra_rollout)
    problems += _reward_problems(config)
    problems += _context_length_problems(config)
    problems += _model_dir_problems(config)

    problems += _verl_key_problems(config, cfg, recipe)
    problems += v1_problems(config, cfg, recipe)
    problems += _adaptive_entropy_problems(config, cfg, recipe)
    problems += _entropic_problems(config, cfg, recipe)
    if recipe.entrocraft and str(config.algorithm.adv_estimator).lower() != "grpo":
        problems.append(
            f"algorithm.adv_estimator={config.algorithm.adv_estimator}: entrocraft trains on "
            "verl's GRPO advantages inside its band (the code's grpo_range): set "
            "algorithm.adv_estimator=grpo"
        )

    if problems:
        raise ConfigError("cannot start AEPO training:\n  " + "\n  ".join(problems))
    return cfg


V1_MODES = ("sync", "colocate_async")
"""the ``trainer.v1.trainer_mode`` values AEPO runs (``trainer_v1.V1_TRAINERS``)"""
V1_MODES_REFUSED = {
    "separate_async": (
        "rollout on its own GPUs never waits for the update, so the extra requests would need "
        "plans from a policy version the trainer has not measured (docs/verl_v1.md): use "
        "trainer.v1.trainer_mode=colocate_async or sync"
    ),
}


def v1_problems(config, cfg: AEPOConfig, recipe) -> list[str]:
    """verl's V1 trainer (``trainer.use_v1: true``): what AEPO's V1 trainer runs, one line
    per setting it refuses."""
    trainer = config.trainer
    if not trainer.get("use_v1", False):
        return []
    problems = []
    try:
        import transfer_queue  # noqa: F401
    except ImportError:
        problems.append(
            "trainer.use_v1=true needs the transferqueue package (verl's verl-core extra): "
            "pip install transferqueue==0.1.11"
        )
    v1 = trainer.get("v1") or {}
    mode = v1.get("trainer_mode", "sync")
    if mode in V1_MODES_REFUSED:
        problems.append(
            f"trainer.v1.trainer_mode={mode} is not supported by AEPO: {V1_MODES_REFUSED[mode]}"
        )
    elif mode not in V1_MODES:
        problems.append(
            f"trainer.v1.trainer_mode={mode}: AEPO runs verl's V1 trainer in modes "
            f"{', '.join(V1_MODES)}"
        )
    sync_steps = (v1.get(mode) or {}).get("parameter_sync_step", 1)
    if sync_steps != 1:
        problems.append(
            f"trainer.v1.{mode}.parameter_sync_step={sync_steps}: AEPO measures and plans once "
            "per update; set it to 1"
        )
    sampler = v1.get("sampler") or {}
    custom = sampler.get("custom_sampler") or {}
    if custom.get("path") or custom.get("name"):
        problems.append(
            "trainer.v1.sampler.custom_sampler is set: AEPO keeps its extra groups out of verl's "
            "own replay buffer and cannot vouch for another"
        )
    if recipe.extra_rollout and sampler.get("sync_refill_failed_groups", False):
        problems.append(
            "trainer.v1.sampler.sync_refill_failed_groups=true: refills draw new prompts "
            "outside AEPO's plan; set it to false"
        )
    filter_groups = config.algorithm.get("filter_groups") or {}
    if recipe.extra_rollout and filter_groups.get("enable", False):
        problems.append(
            "algorithm.filter_groups.enable=true: group filtering would evict the all-positive "
            "groups AEPO's extra rollout exists to find; set it to false"
        )
    if recipe.extra_rollout and cfg.merge == "append":
        problems.append(
            "aepo.merge=append: on trainer.use_v1=true the REINFORCE rows replace rows of "
            "verl's balanced batch; set aepo.merge=replace_zero_advantage"
        )
    unsupported = [
        name
        for name, used in (
            ("Entropy-Adv", recipe.entropy_adv),
            ("adaptive entropy control", recipe.adaptive_entropy),
            ("the 80/20 rule", recipe.top_entropy_quantile is not None),
            ("DCPO", recipe.dcpo),
            ("EntroPIC", recipe.entropic),
        )
        if used
    ]
    if unsupported:
        problems.append(
            f"aepo.algorithm={cfg.algorithm} ({unsupported[0]}) runs on the legacy trainer "
            "only: set trainer.use_v1=false"
        )
    reward_model = config.reward.get("reward_model") or {}
    if (
        recipe.extra_rollout
        and reward_model.get("enable", False)
        and not reward_model.get("enable_resource_pool", False)
    ):
        problems.append(
            "reward.reward_model.enable=true without enable_resource_pool: on trainer.use_v1=true "
            "AEPO's extra samples need rewards streamed from the agent loop"
        )
    units = OmegaConf.select(
        config, "transfer_queue.backend.SimpleStorage.num_data_storage_units", default=None
    )
    num_cpus = OmegaConf.select(config, "ray_kwargs.ray_init.num_cpus", default=None)
    if units is not None and num_cpus is not None and int(units) + 2 > int(num_cpus):
        # each storage unit and the controller hold one Ray CPU, the task runner another;
        # short of them TransferQueue's init waits forever without a word
        problems.append(
            f"transfer_queue.backend.SimpleStorage.num_data_storage_units={units}: with the "
            f"TransferQueue controller and the task runner that needs {int(units) + 2} of "
            f"ray_kwargs.ray_init.num_cpus={num_cpus} Ray CPUs before any worker starts; "
            "lower it (1 works)"
        )
    return problems


def _verl_key_problems(config, cfg: AEPOConfig, recipe) -> list[str]:
    """The baselines verl implements run from verl's own keys (``aepo:`` has no copy of
    them): the algorithm only has to find verl set up to run it."""
    actor = config.actor_rollout_ref.actor
    where = "actor_rollout_ref.actor"
    mode = actor.policy_loss.get("loss_mode", "vanilla")
    problems = []
    if recipe.policy_loss != "vanilla" and mode != recipe.policy_loss:
        problems.append(
            f"aepo.algorithm={cfg.algorithm} runs verl's {recipe.policy_loss} policy loss: set "
            f"{where}.policy_loss.loss_mode={recipe.policy_loss} (got {mode}; "
            f"configs/{cfg.algorithm}.yaml sets it with its constants)"
        )
    elif recipe.policy_loss == "vanilla" and mode != "vanilla":
        logger.warning(
            "%s.policy_loss.loss_mode=%s runs verl's %s loss under aepo.algorithm=%s",
            where,
            mode,
            mode,
            cfg.algorithm,
        )
    coeff = float(actor.entropy_coeff)
    if cfg.algorithm == "entropy_reg" and coeff <= 0:
        problems.append(
            f"aepo.algorithm=entropy_reg needs {where}.entropy_coeff > 0 (Entropy-Reg's lambda; "
            "configs/entropy_reg.yaml sets the paper's 0.015)"
        )
    elif cfg.algorithm not in ("entropy_reg", "adaptive_entropy") and coeff != 0:
        logger.warning(
            "%s.entropy_coeff=%s adds an entropy bonus to algorithm %s", where, coeff, cfg.algorithm
        )
    return problems


def _adaptive_entropy_problems(config, cfg: AEPOConfig, recipe) -> list[str]:
    """adaptive_entropy: the trainer sets the actor's ``entropy_coeff`` every step, so the
    worker must compute pi_theta's entropy and nothing else may own the coefficient."""
    if not recipe.adaptive_entropy:
        return []
    actor = config.actor_rollout_ref.actor
    problems = []
    if cfg.baselines.adaptive_entropy.update != "training_step":
        problems.append(
            f"aepo.baselines.adaptive_entropy.update={cfg.baselines.adaptive_entropy.update}: the verl engine "
            "updates the coefficient once per training step (verl's actor worker holds "
            "entropy_coeff fixed for a whole update); set aepo.baselines.adaptive_entropy.update="
            "training_step"
        )
    if float(actor.entropy_coeff) != 0:
        problems.append(
            f"actor_rollout_ref.actor.entropy_coeff={actor.entropy_coeff} conflicts with "
            "aepo.algorithm=adaptive_entropy, which sets it every step: leave it at 0"
        )
    distillation = config.get("distillation") or {}
    if distillation.get("enabled", False):
        problems.append(
            "distillation.enabled=true: adaptive_entropy replaces the actor's ppo_loss "
            "and cannot carry the distillation loss"
        )
    if not problems:
        with open_dict(actor):
            actor.calculate_entropy = True
    return problems


def _entropic_problems(config, cfg: AEPOConfig, recipe) -> list[str]:
    """entropic: the trainer installs the actor's loss with this step's alpha every step."""
    if not recipe.entropic:
        return []
    problems = []
    update = cfg.baselines.entropic.update
    if update != "training_step":
        problems.append(
            f"aepo.baselines.entropic.update={update}: the verl engine sets EntroPIC's alpha "
            "once per training step (verl's actor worker holds its loss for a whole update); "
            "set aepo.baselines.entropic.update=training_step"
        )
    distillation = config.get("distillation") or {}
    if distillation.get("enabled", False):
        problems.append(
            "distillation.enabled=true: entropic replaces the actor's ppo_loss "
            "and cannot carry the distillation loss"
        )
    return problems


def _batch_size_problems(config, cfg: AEPOConfig, extra_rollout: bool) -> list[str]:
    problems = []
    rollout = config.actor_rollout_ref.rollout
    batch = prompts_per_step(config)
    n = int(rollout.n)
    workers = int(rollout.agent.num_workers)
    mini = int(config.actor_rollout_ref.actor.ppo_mini_batch_size)
    gpus = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
    rows = batch * n
    if rows % workers:
        problems.append(
            f"data.train_batch_size * actor_rollout_ref.rollout.n = {rows} must be divisible by "
            f"actor_rollout_ref.rollout.agent.num_workers = {workers} (verl chunks the rollout)"
        )
    if batch % mini:
        problems.append(
            f"data.train_batch_size = {batch} must be a multiple of "
            f"actor_rollout_ref.actor.ppo_mini_batch_size = {mini}"
        )
    if (mini * n) % gpus:
        problems.append(
            f"actor_rollout_ref.actor.ppo_mini_batch_size * rollout.n = {mini * n} must be "
            f"divisible by the {gpus} GPUs (trainer.n_gpus_per_node * trainer.nnodes)"
        )
    most = max(cfg.samples_up, cfg.samples_down)
    if extra_rollout and cfg.merge != "append" and most > rows:
        problems.append(
            f"aepo.samples_up/samples_down (up to {most}) exceed the {rows} rows of the batch "
            f"they replace rows of (aepo.merge={cfg.merge}); use aepo.merge=append"
        )
    return problems


def _reward_problems(config) -> list[str]:
    reward = config.reward
    fn = reward.get("custom_reward_function") or {}
    path = fn.get("path")
    if path:
        from verl.utils.import_utils import load_extern_object

        try:
            load_extern_object(module_path=path, object_name=fn.get("name") or "compute_score")
        except Exception as err:  # any import failure is the same user error
            return [f"reward.custom_reward_function (path={path}, name={fn.get('name')}): {err}"]
        return []
    if reward.reward_model.get("enable"):
        return []
    return [
        "no reward function: set reward.custom_reward_function.path (our configs use "
        "pkg://aepo.rewards.math_reward) or enable reward.reward_model"
    ]


def is_local_model_path(path: str) -> bool:
    """A local directory, as verl reads ``model.path``: absolute, ``./``/``~`` relative, or
    existing here; anything else (``Qwen/Qwen2.5-Math-7B``) is a Hugging Face hub id, and a
    ``scheme://`` path is copied by verl on the nodes."""
    if "://" in path:
        return False
    return Path(path).is_absolute() or path.startswith((".", "~")) or Path(path).exists()


def model_path_kind(config) -> str:
    """How verl will read ``actor_rollout_ref.model.path``, for the dry run's plan."""
    path = str(config.actor_rollout_ref.model.path)
    if "://" in path:
        return "remote path: verl copies it to each node"
    if is_local_model_path(path):
        return "local directory: config, tokenizer and weights found"
    return "Hugging Face hub id: downloaded on each node unless in its Hugging Face cache"


def _model_dir_problems(config) -> list[str]:
    """A local model directory must hold what verl's workers load, checked here rather than
    minutes into a launch; a missing directory or config.json is already named by
    :func:`_context_length_problems`."""
    model = config.actor_rollout_ref.model
    path = str(model.path)
    if not is_local_model_path(path) or not Path(path).expanduser().is_dir():
        return []
    tokenizer_path = str(model.get("tokenizer_path") or path)
    tokenizer = Path(tokenizer_path).expanduser() if is_local_model_path(tokenizer_path) else None
    directory = Path(path).expanduser()
    missing = [
        part
        for part in missing_model_parts(directory, tokenizer)
        if part != "config.json" and not (tokenizer is None and part.startswith("a tokenizer"))
    ]
    if not missing:
        return []
    return [
        f"actor_rollout_ref.model.path: local model directory {directory} has no "
        f"{' and no '.join(missing)}"
    ]


def _context_length_problems(config) -> list[str]:
    """The model must exist, and prompt + response must fit its positions. Checked here from
    ``config.json`` when the model is on this machine; :func:`check_model_positions` checks
    again in the task runner from the config verl loads, before any worker starts."""
    path = str(config.actor_rollout_ref.model.path)
    try:
        config_file = _model_config_file(path)
    except ModelPathError as err:
        return [f"actor_rollout_ref.model.path: {err}"]
    if config_file is None:
        logger.info(
            "actor_rollout_ref.model.path=%s is not in the local Hugging Face cache: whether "
            "prompt + response fit its positions is checked once the task runner loads it",
            path,
        )
        return []
    try:
        model_config = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        return [f"{config_file}: unreadable model config ({err})"]
    # Where verl looks too (workers/rollout/utils.py): multimodal configs nest it.
    positions = model_config.get("max_position_embeddings") or (
        model_config.get("text_config") or {}
    ).get("max_position_embeddings")
    if positions is None:
        return []
    return context_length_problems(config, int(positions), str(config_file))


def context_length_problems(config, positions: int, source: str) -> list[str]:
    """verl sets ``rollout.max_model_len`` to the model's positions when it is unset and then
    silently caps every response at ``max_model_len`` minus its prompt (verl 0.9.1
    ``workers/rollout/vllm_rollout/vllm_async_server.py``): a response
    length beyond the positions would train on truncated responses with no error."""
    needed = int(config.data.max_prompt_length) + int(config.data.max_response_length)
    remedy = (
        "shorten them (the AEPO authors' released config uses 2048 + 2048), or train from a "
        f"copy of the model whose config.json sets max_position_embeddings >= {needed} (a "
        "larger rope_theta, e.g. 40000, keeps long contexts usable)"
    )
    lengths = f"data.max_prompt_length + data.max_response_length = {needed}"
    limit = config.actor_rollout_ref.rollout.get("max_model_len")
    if limit is not None and int(limit) > positions:
        return [
            f"actor_rollout_ref.rollout.max_model_len = {limit} exceeds "
            f"max_position_embeddings = {positions} in {source}: lower it, or {remedy}"
        ]
    if limit is not None and needed > int(limit):
        return [
            f"{lengths} exceeds actor_rollout_ref.rollout.max_model_len = {limit}: vLLM would "
            "cut every response short; raise it (or remove it) or shorten the lengths"
        ]
    if needed <= positions:
        return []
    return [f"{lengths} exceeds max_position_embeddings = {positions} in {source}: {remedy}"]


def check_model_positions(config, hf_config) -> None:
    """The task runner's check, from the model config verl itself loaded (a hub id is
    resolved by then), before any worker or GPU is allocated. Raises ConfigError."""
    from verl.workers.rollout.utils import get_max_position_embeddings

    source = f"the config of {config.actor_rollout_ref.model.path}"
    problems = context_length_problems(config, get_max_position_embeddings(hf_config), source)
    if problems:
        raise ConfigError("cannot start AEPO training:\n  " + "\n  ".join(problems))


def _model_config_file(path: str) -> Path | None:
    """``config.json`` of a local model directory, or of a hub id already in the local
    Hugging Face cache (nothing is downloaded here); None for a hub id that is not cached
    and for remote paths (``hdfs://``), which verl copies on the nodes."""
    if "://" in path:
        return None
    if is_local_model_path(path):
        return require_model_dir(Path(path).expanduser()) / "config.json"
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(path, "config.json")
    except HFValidationError as err:
        raise ModelPathError(
            f"{path!r} is neither a local model directory nor a Hugging Face model id ({err})"
        ) from err
    return Path(cached) if isinstance(cached, str) else None


def check_resume(config, cfg: AEPOConfig) -> None:
    """The AEPO state of the checkpoint verl will resume from is there, readable and written
    by the same algorithm: else ConfigError naming the file. Other ``aepo`` settings that
    differ from the checkpoint's are named in one warning."""
    problems, changes = resume_problems(config.trainer, cfg)
    if problems:
        raise ConfigError("cannot resume AEPO training:\n  " + "\n  ".join(problems))
    if changes:
        logger.warning("resuming %s with changes: %s", resume_folder(config.trainer), changes)


def make_local_paths_absolute(config) -> None:
    """Model and data paths that exist relative to the launching shell become absolute: the
    task runner reads them in a Ray worker, whose working directory on a cluster started
    with ``ray start`` is not the shell's."""

    def absolute(path):
        local = Path(str(path)).expanduser()
        return os.path.abspath(local) if not local.is_absolute() and local.exists() else path

    with open_dict(config):
        model = config.actor_rollout_ref.model
        model.path = absolute(model.path)
        for key in ("train_files", "val_files"):
            files = config.data.get(key)
            if isinstance(files, str):
                config.data[key] = absolute(files)
            elif files is not None:
                config.data[key] = [absolute(f) for f in files]
