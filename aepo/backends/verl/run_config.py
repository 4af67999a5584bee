"""What the verl engine reads from verl's composed config beyond verl itself: the ``aepo:``
section, checked against the keys verl already has, and the verl-side AEPO settings that
the framework-free core does not hold."""

from __future__ import annotations

from omegaconf import OmegaConf

from aepo.core import AEPOConfig, ConfigError, load_aepo_config
from aepo.core.config import verl_owned_keys

PER_REQUEST_SEED_KEY = "actor_rollout_ref.rollout.custom.per_request_seed"
"""Every training request gets its own vLLM sampling seed, from verl's ``rollout.seed``, the
step, the generate call and the row, so a sample does not depend on which replica serves it
(docs/scale_out.md). It lives in ``rollout.custom``, verl's extension point for rollout
settings, because it is a rollout transport setting the local engine has no use for."""


def aepo_config_from(config) -> AEPOConfig:
    """``aepo:`` validated; a key verl has (clip ratio, entropy coefficient, Clip-Cov / KL-Cov
    constants) is refused there, naming verl's key the run sets instead."""
    if "aepo" not in config:
        raise KeyError("the verl config has no top-level 'aepo:' section (see aepo_trainer.yaml)")
    raw = OmegaConf.to_container(config.aepo, resolve=True)
    shadowed = []
    for key, verl_key in verl_owned_keys().items():
        *sections, name = key.split(".")
        node = raw
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and name in node:
            shadowed.append(f"aepo.{key}: verl has this key, set {verl_key}")
    if shadowed:
        raise ConfigError("invalid AEPO config:\n  " + "\n  ".join(shadowed))
    return load_aepo_config(raw, source="aepo")


def per_request_seed(config) -> bool:
    """``actor_rollout_ref.rollout.custom.per_request_seed`` (false when unset); a value that
    is not a boolean is refused, naming the key."""
    custom = OmegaConf.select(config, "actor_rollout_ref.rollout.custom", default=None)
    value = False if custom is None else custom.get("per_request_seed", False)
    if not isinstance(value, bool):
        raise ConfigError(f"{PER_REQUEST_SEED_KEY}: expected true or false, got {value!r}")
    return value
