"""GPU smoke check: AEPO steps with verl 0.9.1's real FSDP actor, one process, no Ray/vLLM.

What is real: verl's ``ActorRolloutRefWorker`` (role ``actor``: FSDP engine, optimizer,
``ppo_loss``), its ``compute_log_prob`` / ``update_actor``, and every driver-side step of
``AEPORayTrainer`` (old log-probs and entropy monitor, extra rows, merge, actor update).
What is stood in: the Ray worker group (calls go straight to the in-process worker) and
vLLM (responses are random tokens, rewards from a fixed rule), so this checks the update
path and the shapes/metrics, not generation.

    python scripts/gpu_smoke_fsdp_update.py                       # tiny random Llama
    python scripts/gpu_smoke_fsdp_update.py --model-path Qwen/Qwen2.5-0.5B --steps 3
    python scripts/gpu_smoke_fsdp_update.py --save-dir /tmp/smoke  # + checkpoint -> HF model

``--save-dir`` also checks the hand-over to evaluation that docs/eval.md describes: the actor
checkpoint is saved as fit() saves it, merged into a Hugging Face model with verl's own
``python -m verl.model_merger merge``, and the merged weights must be the trained ones.

Exit status 0 and a JSON line per step on stdout mean the checks passed.

verl 0.9.1 has no CPU platform (its FSDP engine builds a CUDA device mesh), so without a GPU
only ``--check-setup`` runs: the tiny model, the composed config, the start-up checks and
the trainer shell, i.e. everything up to the worker. tests/verl/test_verl_smoke_script.py runs
the whole script on a CPU stand-in for CUDA (FSDP2, sdpa); what only a GPU shows is FSDP1
(the default ``actor.strategy=fsdp``), CUDA kernels, bf16 autocast and flash-attn.

Without flash-attn installed the tiny model uses ``sdpa`` (verl asks for flash_attention_2
by default); with ``use_remove_padding=true`` install flash-attn.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import torch

PROMPTS, N = 4, 4  # 16 rows per step: 2 mini-batches of 2 prompts x 4 responses
PROMPT_LEN, RESPONSE_LEN = 8, 16


def write_tiny_model(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = ["<pad>", "<eos>", "user", "assistant"] + [f"w{i}" for i in range(60)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    fast.chat_template = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    fast.save_pretrained(path)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)


class InProcessWorkerGroup:
    """What ``RayWorkerGroup`` does for one rank: call the worker's method."""

    def __init__(self, worker):
        self.worker = worker
        self._dispatch_info = {"actor": [0]}

    def compute_log_prob(self, td):
        return self.worker.compute_log_prob(td)

    def update_actor(self, td):
        self.updates = getattr(self, "updates", 0) + 1
        self.last_update_rows = td.batch_size[0]
        return self.worker.update_actor(td)


class RandomRollout:
    """Stands in for vLLM behind AgentLoopManager: random tokens, reward 1 for every
    other response of a GRPO group and for every other extra sample."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.agent_loop_workers = [object()]
        self.temperatures = []

    def generate_sequences(self, prompts):
        from verl import DataProto

        bsz = len(prompts)
        temps = prompts.non_tensor_batch.get("aepo_temperature")
        # NaN: no per-row override (fit's own rows), as the proxy tags them
        self.temperatures.append(
            [float(t) for t in temps] if temps is not None else [math.nan] * bsz
        )
        gen = torch.Generator().manual_seed(len(self.temperatures))
        prompt_ids = torch.randint(4, self.vocab_size, (bsz, PROMPT_LEN), generator=gen)
        response_ids = torch.randint(4, self.vocab_size, (bsz, RESPONSE_LEN), generator=gen)
        resp_len = 4 + torch.arange(bsz) % (RESPONSE_LEN - 4)
        response_mask = (torch.arange(RESPONSE_LEN)[None] < resp_len[:, None]).long()
        attention_mask = torch.cat(
            [torch.ones(bsz, PROMPT_LEN, dtype=torch.long), response_mask], 1
        )
        index = prompts.non_tensor_batch["index"]
        rewards = torch.tensor([float((int(index[i]) + i) % 2) for i in range(bsz)])
        rm_scores = torch.zeros(bsz, RESPONSE_LEN)
        rm_scores[torch.arange(bsz), resp_len - 1] = rewards
        return DataProto.from_dict(
            tensors={
                "prompts": prompt_ids,
                "responses": response_ids,
                "response_mask": response_mask,
                "input_ids": torch.cat([prompt_ids, response_ids], 1),
                "attention_mask": attention_mask,
                "position_ids": torch.clamp(attention_mask.cumsum(-1) - 1, min=0),
                "rm_scores": rm_scores,
            },
            meta_info={"timing": {}, "reward_extra_keys": []},
        )


class NoReplicas:
    def update_weights(self, step):
        pass

    def sleep_replicas(self):
        pass


def flash_attn_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def compose_config(model_path: str, device: str, extra: list[str]):
    from hydra import compose, initialize_config_module

    overrides = [
        f"actor_rollout_ref.model.path={model_path}",
        "data.train_files=unused",
        "data.val_files=unused",
        f"data.train_batch_size={PROMPTS}",
        f"data.max_prompt_length={PROMPT_LEN}",
        f"data.max_response_length={RESPONSE_LEN}",
        f"actor_rollout_ref.rollout.n={N}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.actor.use_dynamic_bsz=false",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "trainer.n_gpus_per_node=1",
        # Remove-padding packs the rows into one sequence, which only flash-attn keeps
        # apart; pass actor_rollout_ref.model.use_remove_padding=true to test that path too.
        "actor_rollout_ref.model.use_remove_padding=false",
    ]
    if not any("attn_implementation" in o for o in extra) and not flash_attn_installed():
        # HFModelConfig asks for flash_attention_2 unless told otherwise (verl
        # workers/config/model.py); transformers then refuses to load the model.
        overrides.append("+actor_rollout_ref.model.override_config.attn_implementation=sdpa")
    from aepo.core.config import READS

    algorithm = next((o.split("=", 1)[1] for o in extra if o.startswith("aepo.algorithm=")), "aepo")
    if "samples_up" in READS[algorithm]:  # the extra pass's knobs, for the algorithms with one
        overrides += [
            "aepo.samples_up=6",
            "aepo.samples_down=3",
            "aepo.extra_rollout.min_samples=4",
        ]
    del device  # same config on every device; verl picks the platform itself
    with initialize_config_module("aepo.backends.verl.config", version_base=None):
        return compose("aepo_trainer", overrides=overrides + extra)


def fit_step(trainer, rollout, step: int):
    """RayPPOTrainer.fit()'s order of calls for one step (see tests/verl/test_verl_trainer.py)."""
    from verl import DataProto
    from verl.trainer.ppo.core_algos import AdvantageEstimator
    from verl.trainer.ppo.ray_trainer import compute_advantage
    from verl.trainer.ppo.reward import extract_reward

    trainer.global_steps = step
    idx = np.arange(PROMPTS) + step * PROMPTS
    batch = DataProto.from_single_dict(
        {
            "dummy_tensor": torch.zeros(PROMPTS, 1),
            "raw_prompt": np.array(
                [[{"role": "user", "content": f"w{i % 60}"}] for i in idx], dtype=object
            ),
            "data_source": np.array(["smoke"] * PROMPTS, dtype=object),
            "reward_model": np.array([{"ground_truth": "1"}] * PROMPTS, dtype=object),
            "index": idx,
        }
    )
    batch.meta_info["temperature"] = 1.0
    batch.non_tensor_batch["uid"] = np.array(
        [str(uuid.uuid4()) for _ in range(PROMPTS)], dtype=object
    )
    gen_batch = trainer._get_gen_batch(batch)
    gen_output = trainer.async_rollout_manager.generate_sequences(
        gen_batch.repeat(N, interleave=True)
    )
    gen_output.meta_info.pop("timing", None)
    batch = batch.repeat(N, interleave=True).union(gen_output)
    batch.meta_info["global_token_num"] = batch.batch["attention_mask"].sum(-1).tolist()
    reward, _ = extract_reward(batch)
    old_log_prob, _ = trainer._compute_old_log_prob(batch)
    entropys = old_log_prob.batch.pop("entropys")
    mask = batch.batch["response_mask"].float()
    entropy = float((entropys * mask).sum() / mask.sum())  # token mean, as the controller's
    batch = batch.union(old_log_prob)
    batch.batch["token_level_scores"] = reward
    batch.batch["token_level_rewards"] = reward
    batch = compute_advantage(
        batch, adv_estimator=AdvantageEstimator.GRPO, num_repeat=N, config=trainer.config.algorithm
    )
    output = trainer._update_actor(batch)
    return entropy, output.meta_info["metrics"]


def expected_generate_calls(temps, steps: int, extra_rollout: bool, source: str) -> bool:
    """Per generate call, the rows' temperatures (NaN: fit's own rows, no override)."""
    rows = PROMPTS * N

    def fit_only(t):
        return len(t) == rows and all(map(math.isnan, t))

    def extras_only(t):
        return len(t) > 0 and not any(map(math.isnan, t))

    def fit_and_extras(t):
        return sum(map(math.isnan, t)) == rows < len(t)

    if not extra_rollout:
        return len(temps) == steps and all(map(fit_only, temps))
    if source == "current_batch":  # every step: fit's call, then the extras after measuring
        return len(temps) == 2 * steps and all(
            fit_only(t) if i % 2 == 0 else extras_only(t) for i, t in enumerate(temps)
        )
    # previous_step: step 1 as current_batch, then the extras ride in fit's own call
    return (
        len(temps) == steps + 1
        and fit_only(temps[0])
        and extras_only(temps[1])
        and all(map(fit_and_extras, temps[2:]))
    )


def merge_command(actor_dir: Path, target_dir: Path) -> list[str]:
    """The command in docs/eval.md that turns a verl actor checkpoint into a Hugging Face model."""
    return [
        sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp",
        "--local_dir", str(actor_dir), "--target_dir", str(target_dir),
    ]  # fmt: skip


def check_checkpoint_merge(worker, save_dir: Path, step: int, initial: dict) -> list[str]:
    """Save the actor as fit() does (``global_step_N/actor``), merge it with verl's merger,
    and compare the merged tensors with the worker's live weights, cast to the merged
    dtype (verl saves the Hugging Face copy in bf16)."""
    from safetensors.torch import load_file

    actor_dir = save_dir / f"global_step_{step}" / "actor"
    worker.save_checkpoint(local_path=str(actor_dir), global_step=step)
    merged_dir = save_dir / "hf"
    proc = subprocess.run(
        merge_command(actor_dir, merged_dir), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return [f"verl.model_merger failed:\n{proc.stderr[-3000:]}"]
    merged = {}
    for shard in sorted(merged_dir.glob("*.safetensors")):
        merged |= load_file(shard)
    live, _ = worker.actor.engine.get_per_tensor_param()
    live = {name: tensor.detach().cpu() for name, tensor in live}
    differ = sorted(
        name
        for name, tensor in live.items()
        if name not in merged or not torch.equal(merged[name], tensor.to(merged[name].dtype))
    )
    trained = sum(
        not torch.equal(merged[name], initial[name].to(merged[name].dtype))
        for name in merged
        if name in initial
    )
    print(
        json.dumps(
            {
                "merged": str(merged_dir),
                "tensors": len(merged),
                "equal_to_live_weights": len(live) - len(differ),
                "changed_by_training": trained,
            }
        ),
        flush=True,
    )
    if differ:
        return [f"merged model differs from the trained weights in {differ[:5]}"]
    return []


def main(argv: list[str] | None = None, *, device: str | None = None) -> int:
    """``device`` forces the platform check (aepo/backends/verl/cpu_harness/cpu_platform.py runs the worker
    on a CPU stand-in for CUDA)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-path", help="HF model dir or id (default: a tiny random Llama)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument(
        "--check-setup",
        action="store_true",
        help="stop before building verl's worker (what runs without a GPU)",
    )
    parser.add_argument(
        "--save-dir",
        type=Path,
        help="after the steps, save the actor checkpoint here, merge it into DIR/hf with "
        "verl.model_merger and check the merged weights are the trained ones",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args(argv)

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    for key, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": os.environ.get("MASTER_PORT", "29533"),
    }.items():
        os.environ.setdefault(key, value)

    from verl.workers.engine_workers import ActorRolloutRefWorker

    from aepo.backends.verl.trainer import AEPORayTrainer, aepo_config_from

    model_dir = args.model_path
    if model_dir is None:
        model_dir = tempfile.mkdtemp(prefix="aepo_smoke_model_")
        write_tiny_model(Path(model_dir))
    config = compose_config(model_dir, device, args.overrides)

    from aepo.backends.verl.startup import check_config

    check_config(config)
    if args.check_setup or device != "cuda":
        trainer = object.__new__(AEPORayTrainer)
        trainer.config = config
        trainer.setup_aepo(aepo_config_from(config))
        print(
            json.dumps({"setup": "ok", "model": model_dir, "algorithm": trainer.aepo_cfg.algorithm})
        )
        if device != "cuda" and not args.check_setup:
            print(
                "no GPU: verl 0.9.1's FSDP worker needs CUDA; ran --check-setup only",
                file=sys.stderr,
            )
            return 2
        return 0
    worker = ActorRolloutRefWorker(config=config.actor_rollout_ref, role="actor")
    worker.init_model()
    group = InProcessWorkerGroup(worker)
    initial = {}
    if args.save_dir is not None:
        weights, _ = worker.actor.engine.get_per_tensor_param()
        initial = {name: tensor.detach().cpu().clone() for name, tensor in weights}

    from transformers import AutoConfig

    rollout = RandomRollout(AutoConfig.from_pretrained(model_dir).vocab_size)
    trainer = object.__new__(AEPORayTrainer)
    trainer.config = config
    trainer.use_critic = trainer.use_reference_policy = trainer.use_rm = False
    trainer.actor_rollout_wg = group
    trainer.checkpoint_manager = NoReplicas()
    trainer.setup_aepo(aepo_config_from(config))
    extra_rollout = trainer.recipe.extra_rollout
    # As AEPORayTrainer.init_workers: every step begins at fit()'s generate call.
    trainer.async_rollout_manager = trainer.wrap_rollout_manager(rollout)

    failures = []
    for step in range(1, args.steps + 1):
        entropy, metrics = fit_step(trainer, rollout, step)
        report = {
            "step": step,
            "device": device,
            "entropy": entropy,
            "update_rows": group.last_update_rows,
        }
        report |= {
            k: float(np.mean(v)) for k, v in metrics.items() if k.startswith(("aepo/", "actor/"))
        }
        print(json.dumps(report), flush=True)
        if not all(math.isfinite(v) for v in report.values() if isinstance(v, float)):
            failures.append(f"step {step}: non-finite metric")
        if group.last_update_rows != PROMPTS * N:
            failures.append(
                f"step {step}: actor got {group.last_update_rows} rows, expected {PROMPTS * N}"
            )
        if extra_rollout and metrics.get("aepo/reinforce_samples", 0) <= 0:
            failures.append(f"step {step}: no AEPO rows were merged")
    if not expected_generate_calls(
        rollout.temperatures, args.steps, extra_rollout, trainer.aepo_cfg.entropy_source
    ):
        temps = rollout.temperatures
        failures.append(f"unexpected generate calls: {[sorted(set(t)) for t in temps]}")
    if args.save_dir is not None:
        failures += check_checkpoint_merge(worker, args.save_dir, args.steps, initial)
    for failure in failures:
        print("FAIL:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
