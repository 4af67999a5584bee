"""The Ray task runner: verl 0.9.1's ``main_ppo_v0.TaskRunner.run`` with our trainer.

verl's ``TaskRunner`` is a Ray actor class and cannot be subclassed, and its ``run``
constructs ``RayPPOTrainer`` by name, so the steps are repeated here on top of verl's
``BaseTaskRunner`` (the verl-recipe DAPO pattern).
"""

from __future__ import annotations

import os
import socket

from omegaconf import OmegaConf
from verl.trainer.main_ppo_v0 import BaseTaskRunner


class AEPOTaskRunner(BaseTaskRunner):
    def run(self, config):
        from verl.trainer.ppo.utils import (
            create_rl_dataset,
            create_rl_sampler,
            need_critic,
            need_reference_policy,
        )
        from verl.utils.config import omega_conf_to_dataclass, validate_config
        from verl.utils.dataset.rl_dataset import collate_fn

        from aepo.backends.verl.cluster import check_nodes, choose_attention
        from aepo.backends.verl.data_files import check_data_files, loader_rows_problems
        from aepo.backends.verl.startup import check_config, check_model_positions, check_resume
        from aepo.backends.verl.trainer import AEPORayTrainer
        from aepo.core import ConfigError

        print(f"AEPOTaskRunner hostname: {socket.gethostname()}, PID: {os.getpid()}")
        # The config check loads the reward function here; only verl's reward workers score,
        # so this process does not start the math reward's checking process.
        os.environ.setdefault("AEPO_REWARD_WARM_UP", "0")
        OmegaConf.resolve(config)
        aepo_config = check_config(config)
        # Again here: on a cluster this actor may run on another node than the driver. The
        # rows verl keeps are counted below, from verl's own dataset.
        check_data_files(config, count_kept_rows=False)
        check_resume(config, aepo_config)
        nodes = check_nodes(config=config)
        choose_attention(config, flash_attn_everywhere=all(node.flash_attn for node in nodes))
        model_config = omega_conf_to_dataclass(config.actor_rollout_ref.model)
        # The driver could not read a hub id that is not cached yet; verl has loaded it now.
        check_model_positions(config, model_config.hf_config)

        if config.trainer.get("use_v1", False):
            run_v1(config, aepo_config)
            return
        actor_rollout_cls, ray_worker_group_cls = self.add_actor_rollout_worker(config)
        self.add_critic_worker(config)
        self.add_reward_model_resource_pool(config)
        self.add_teacher_model_resource_pool(config)
        self.add_ref_policy_worker(config, actor_rollout_cls)
        validate_config(
            config=config,
            use_reference_policy=need_reference_policy(config),
            use_critic=need_critic(config),
        )

        tokenizer, processor = model_config.tokenizer, model_config.processor
        resource_pool_manager = self.init_resource_pool_mgr(config)
        train_dataset = create_rl_dataset(
            config.data.train_files,
            config.data,
            tokenizer,
            processor,
            is_train=True,
            max_samples=config.data.get("train_max_samples", -1),
        )
        problems = loader_rows_problems(config, len(train_dataset))
        if problems:
            raise ConfigError("cannot start AEPO training:\n  " + "\n  ".join(problems))
        val_dataset = create_rl_dataset(
            config.data.val_files,
            config.data,
            tokenizer,
            processor,
            is_train=False,
            max_samples=config.data.get("val_max_samples", -1),
        )
        trainer = AEPORayTrainer(
            config=config,
            tokenizer=tokenizer,
            processor=processor,
            role_worker_mapping=self.role_worker_mapping,
            resource_pool_manager=resource_pool_manager,
            ray_worker_group_cls=ray_worker_group_cls,
            train_dataset=train_dataset,
            val_dataset=val_dataset,
            collate_fn=collate_fn,
            train_sampler=create_rl_sampler(config.data, train_dataset),
            aepo_config=aepo_config,
        )
        trainer.init_workers()
        trainer.fit()


def run_v1(config, aepo_config) -> None:
    """verl 0.9.1's ``main_ppo.TaskRunnerV1.run`` with our V1 trainer: TransferQueue, the
    trainer (which builds its own workers and data loaders), the agent-loop manager that
    writes into TransferQueue, fit."""
    import transfer_queue as tq
    from verl.trainer.ppo.v1 import AgentLoopManagerTQ

    from aepo.backends.verl.data_files import loader_rows_problems
    from aepo.backends.verl.trainer_v1 import V1_TRAINERS
    from aepo.core import ConfigError

    config.transfer_queue.enable = True
    tq.init(config.transfer_queue)
    trainer = None
    succeeded = False
    try:
        # built directly (not through verl's registry); check_config admitted only these modes
        trainer_cls = V1_TRAINERS[config.trainer.v1.trainer_mode]
        trainer = trainer_cls(config, aepo_config=aepo_config)
        trainer.init()
        problems = loader_rows_problems(config, len(trainer.train_dataset))
        if problems:
            raise ConfigError("cannot start AEPO training:\n  " + "\n  ".join(problems))
        manager = AgentLoopManagerTQ.create(
            config=config,
            llm_client=trainer.get_llm_client(),
            teacher_client=trainer.get_teacher_client(),
            reward_loop_worker_handles=trainer.get_reward_handles(),
        )
        trainer.fit(manager)
        succeeded = True
    finally:
        try:
            tracking = getattr(trainer, "logger", None)
            if tracking is not None:
                tracking.finish(exit_code=0 if succeeded else 1)
        finally:
            tq.close()
