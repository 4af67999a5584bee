"""``python -m aepo.backends.verl.main``: AEPO on verl 0.9.1 (Ray + FSDP + vLLM).

The default config is ``aepo_trainer`` (this package's ``config/``), which extends verl's
``ppo_trainer``. The shipped per-target files are used with
``--config-path "$PWD/configs" --config-name aepo_h0.5``; any verl key can be overridden
on the command line as usual (``data.train_files=...``, ``trainer.nnodes=2``).

With ``AEPO_DRY_RUN=1`` in the environment it runs every start-up check, prints what the
run would do, and exits before Ray starts.
"""

from __future__ import annotations

import os
import sys

import hydra

DRY_RUN_VARIABLE = "AEPO_DRY_RUN"


def launch(config) -> None:
    """Check everything that can be checked on the driver, then hand over to verl's
    ``run_ppo`` (ray.init with verl's runtime env, then the task runner)."""
    import ray
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    from aepo.backends.verl.cluster import record_driver
    from aepo.backends.verl.data_files import check_data_files
    from aepo.backends.verl.dry_run import run_summary
    from aepo.backends.verl.startup import check_config, check_resume, make_local_paths_absolute
    from aepo.backends.verl.task_runner import AEPOTaskRunner

    auto_set_device(config)
    make_local_paths_absolute(config)
    aepo_config = check_config(config)
    check_resume(config, aepo_config)
    train_rows = check_data_files(config)
    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    if os.environ.get(DRY_RUN_VARIABLE, "") not in ("", "0"):
        print(run_summary(config, aepo_config, train_rows))
        return
    # The task runner, wherever Ray places it, compares every node's aepo with the driver's.
    record_driver(config)
    run_ppo(config, task_runner_class=ray.remote(num_cpus=1)(AEPOTaskRunner))


@hydra.main(config_path="config", config_name="aepo_trainer", version_base=None)
def main(config) -> None:
    from aepo.core import ConfigError

    try:
        launch(config)
    except ConfigError as err:  # a user's mistake: the message names the key, no traceback
        print(f"aepo: {user_message(err)}", file=sys.stderr)
        sys.exit(2)


def user_message(err: Exception) -> str:
    """Raised in the task runner, a ConfigError reaches the driver as Ray's RayTaskError
    subclass of it, whose text is the remote traceback; the message is its cause's."""
    cause = getattr(err, "cause", None)
    return str(cause if isinstance(cause, Exception) else err)


if __name__ == "__main__":
    main()
