"""Stand-ins for the parts of verl 0.9.1's v0 trainer that need Ray workers or GPUs.

They speak the same protocols as the real objects (the actor worker group's TensorDict
calls, AgentLoopManager's DataProto in / DataProto out, the checkpoint engine's
sleep/wake calls), so everything between them is verl's and our code. Shared by
test_verl_trainer.py (one hand-driven step) and test_verl_fit.py (verl's real fit()).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from verl import DataProto
from verl.utils import tensordict_utils as tu

from aepo.backends.verl.agent_loop import SEED_FIELD, TEMPERATURE_FIELD

PROMPT_LEN, RESPONSE_LEN = 6, 10
AGENT_LOOP_WORKERS = 4


def fake_log_probs(input_ids: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    """pi_old's log-probs as the fake actor reports them: a function of the token id."""
    values = input_ids.values()
    return torch.nested.nested_tensor_from_jagged(
        -0.05 * (values % 11).float() - 0.1 + shift, offsets=input_ids.offsets()
    )


def fake_entropy(input_ids: torch.Tensor) -> torch.Tensor:
    """pi_old's token entropies as the fake actor reports them (mean about 0.4 < H* = 0.5,
    so the controller raises entropy)."""
    return torch.nested.nested_tensor_from_jagged(
        0.2 + 0.1 * (input_ids.values() % 5).float(), offsets=input_ids.offsets()
    )


class FakeActorWorkerGroup:
    """compute_log_prob / update_actor / save_checkpoint / load_checkpoint with verl 0.9.1's
    TensorDict protocol (engine_workers.py); ``_dispatch_info`` answers ``_get_dp_size``."""

    def __init__(self, dp: int, *, log_prob_micro: int | None = None, ref_micro: int | None = None):
        self._dispatch_info = {"actor": list(range(dp)), "ref": list(range(dp))}
        self.log_prob_micro, self.ref_micro = log_prob_micro, ref_micro
        self.log_prob_batches = []
        self.ref_batches = []
        self.updates = []
        self.saved, self.loaded = [], []
        self.loss_fns = []

    def _check_dispatch(self, td, micro: int | None = None, mesh: str = "actor") -> int:
        # verl's nd-dispatch splits a call's batch into one equal chunk per DP rank.
        rows, dp = len(td["response_mask"]), len(self._dispatch_info[mesh])
        assert rows % dp == 0, f"{rows} rows cannot be dispatched to {dp} DP ranks"
        if micro is not None:
            # Fixed micro-batches (no dynamic bsz): each rank's chunk must be whole
            # micro-batches (verl/workers/engine/utils.py:124-127).
            assert (rows // dp) % micro == 0, f"{rows // dp} rows per rank, micro-batch {micro}"
        return rows

    def compute_log_prob(self, td):
        self._check_dispatch(td, self.log_prob_micro)
        self.log_prob_batches.append(td)
        ids = td["input_ids"]
        # As verl's engine divides the logits by meta_info's temperature, the fake's log-probs
        # depend on it (a pass at T != 1 must be told apart).
        temperature = float(tu.get(td, "temperature", 1.0))
        return tu.get_tensordict(
            {"log_probs": fake_log_probs(ids) / temperature, "entropy": fake_entropy(ids)},
            non_tensor_dict={"metrics": {"mfu": 0.0}},
        )

    def compute_ref_log_prob(self, td):
        self._check_dispatch(td, self.ref_micro, mesh="ref")
        self.ref_batches.append(td)
        return tu.get_tensordict(
            {"log_probs": fake_log_probs(td["input_ids"], shift=-0.5)},
            non_tensor_dict={"metrics": {}},
        )

    def update_actor(self, td):
        rows = self._check_dispatch(td)
        mini = tu.get(td, "mini_batch_size")
        # Each rank iterates mini-batches of mini_batch_size / dp rows: a remainder would be
        # a short last mini-batch with a different loss scale.
        assert rows % mini == 0, f"{rows} rows are not whole mini-batches of {mini}"
        self.updates.append(td)
        # The real worker returns one "actor/pg_loss" per mini-batch. Before the first
        # optimizer step pi == pi_old (ratio 1), where the vanilla token-mean PPO loss is
        # exactly -mean(advantage) over response tokens; report that, per mini-batch.
        adv, mask = td["advantages"], td["response_mask"].float()
        pg_loss = [
            float(
                -(adv[i : i + mini] * mask[i : i + mini]).sum()
                / mask[i : i + mini].sum().clamp(min=1)
            )
            for i in range(0, len(mask), mini)
        ]
        return tu.get_tensordict(
            {}, non_tensor_dict={"metrics": {"mfu": 0.0, "actor/pg_loss": pg_loss}}
        )

    def set_loss_fn(self, loss_fn):
        """verl sends it to every rank (Dispatch.ONE_TO_ALL); the fake keeps each one."""
        self.loss_fns.append(loss_fn)

    def save_checkpoint(self, local_path, hdfs_path, global_step, max_ckpt_to_keep=None):
        Path(local_path).mkdir(parents=True, exist_ok=True)
        (Path(local_path) / "fake_model.txt").write_text(str(global_step))
        self.saved.append(local_path)

    def load_checkpoint(self, local_path, del_local_after_load=False):
        self.loaded.append(local_path)


class FakeCheckpointManager:
    """CheckpointEngineManager's two calls fit() makes. ``awake`` follows the naive
    checkpoint-engine backend's state machine in verl 0.9.1: only ``update_weights`` wakes the replicas."""

    def __init__(self):
        self.events = []
        self.awake = False

    def update_weights(self, step):
        self.events.append(("update_weights", step))
        self.awake = True

    def sleep_replicas(self):
        self.events.append(("sleep",))
        self.awake = False


class FakeRolloutManager:
    """Stands in for AgentLoopManager: deterministic responses and streamed rewards.

    GRPO rows (no temperature override): prompt index % 3 == 0 -> every response right,
    == 1 -> every response wrong (zero-advantage groups), == 2 -> alternating. Extra rows:
    every other sample right.

    The output has the fields the real ``_postprocess`` (agent_loop.py:1057) produces with
    streaming rewards, including ``multi_modal_inputs`` (one empty dict per text-only row),
    which fit() iterates over.

    With ``replicas`` (a FakeCheckpointManager), generating while the replicas sleep fails,
    as it would after vLLM's level-2 sleep. Responses are seeded by the request's step and
    the number of calls already made at that step, so a resumed run regenerates what an
    uninterrupted one did.
    """

    def __init__(self, replicas: FakeCheckpointManager | None = None):
        self.calls = []
        self.agent_loop_workers = [object()] * AGENT_LOOP_WORKERS
        self.replicas = replicas

    def generate_sequences(self, prompts: DataProto) -> DataProto:
        assert len(prompts) % len(self.agent_loop_workers) == 0, "verl would fail to chunk"
        if self.replicas is not None:
            assert self.replicas.awake, "generate_sequences on sleeping rollout replicas"
        temps = prompts.non_tensor_batch.get(TEMPERATURE_FIELD)
        temps = [float("nan")] * len(prompts) if temps is None else [float(t) for t in temps]
        step = int(prompts.meta_info.get("global_steps", 0))
        calls_this_step = sum(call["step"] == step for call in self.calls)
        index = prompts.non_tensor_batch["index"]
        self.calls.append(
            {
                "step": step,
                "temperatures": temps,
                "agents": prompts.non_tensor_batch.get("agent_name"),
                "seeds": prompts.non_tensor_batch.get(SEED_FIELD),
                "index": np.asarray(index).copy(),
            }
        )
        bsz = len(prompts)
        gen = torch.Generator().manual_seed(1000 * step + calls_this_step + 1)
        prompt_ids = torch.randint(3, 40, (bsz, PROMPT_LEN), generator=gen)
        response_ids = torch.randint(3, 40, (bsz, RESPONSE_LEN), generator=gen)
        resp_len = 3 + torch.arange(bsz) % (RESPONSE_LEN - 3)
        response_mask = (torch.arange(RESPONSE_LEN)[None] < resp_len[:, None]).long()
        prompt_mask = torch.ones(bsz, PROMPT_LEN, dtype=torch.long)
        prompt_mask[::2, :2] = 0  # left padding on some prompts
        attention_mask = torch.cat([prompt_mask, response_mask], 1)
        rewards = torch.zeros(bsz)
        for i in range(bsz):
            if math.isnan(temps[i]):
                kind = int(index[i]) % 3
                rewards[i] = 1.0 if kind == 0 else 0.0 if kind == 1 else float(i % 2)
            else:
                rewards[i] = float(i % 2 == 0)
        rm_scores = torch.zeros(bsz, RESPONSE_LEN)
        rm_scores[torch.arange(bsz), resp_len - 1] = rewards

        def per_row(value):
            column = np.empty(bsz, dtype=object)
            column[:] = [value() if callable(value) else value for _ in range(bsz)]
            return column

        out = DataProto.from_dict(
            tensors={
                "prompts": prompt_ids,
                "responses": response_ids,
                "response_mask": response_mask,
                "input_ids": torch.cat([prompt_ids, response_ids], 1),
                "attention_mask": attention_mask,
                "position_ids": torch.clamp(attention_mask.cumsum(-1) - 1, min=0),
                "rollout_log_probs": -torch.rand(bsz, RESPONSE_LEN, generator=gen),
                "rm_scores": rm_scores,
            },
            non_tensors={
                "__num_turns__": np.full(bsz, 2, dtype=np.int32),
                "multi_modal_inputs": per_row(dict),
                **{key: per_row(None) for key in ("turn_scores", "tool_rewards", "extras")},
            },
            meta_info={"timing": {"gen": 0.0}, "reward_extra_keys": []},
        )
        return out


class FakeDataloader:
    def __init__(self):
        self.state = {"pos": 0}

    def __len__(self):
        return 100

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, state):
        self.state = dict(state)
