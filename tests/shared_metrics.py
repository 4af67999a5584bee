"""The TensorBoard scalars both engines must write, so that ``aepo plot`` and users'
dashboards read local and verl runs alike (the engine tests check each one is logged)."""

SHARED_METRICS: tuple[str, ...] = (
    "aepo/entropy",
    "aepo/temperature_entropy",
    "aepo/target_entropy",
    "aepo/target_low",
    "aepo/target_high",
    "aepo/temperature",
    "aepo/direction",
    "aepo/integral",
    "aepo/guard",
    "aepo/reinforce_samples",
    "aepo/positive_rate",
    "aepo/extra_gen_tokens",
    "aepo/extra_gen_fraction",
    "reward/mean",
    "actor/entropy",
    "actor/pg_loss",
)
