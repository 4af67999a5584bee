"""The per-row temperature reaches the LLM server through verl 0.9.1's AgentLoopWorker.

Only the LLM server is a stand-in (it records the sampling params it is sent); the rows
are built by our rollout code, and the worker, registry lookup, agent-loop instantiation,
tokenisation and post-processing are verl's.
"""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from hydra import compose, initialize_config_module  # noqa: E402
from verl import DataProto  # noqa: E402

from aepo.backends.verl.agent_loop import AGENT_NAME, TEMPERATURE_FIELD  # noqa: E402
from aepo.backends.verl.extra_rollout import build_extra_requests, tag_default_rows  # noqa: E402
from aepo.core import Decision, ExtraRolloutPlan, StepPlan  # noqa: E402

VOCAB = ["<pad>", "<eos>", "user", "assistant", "q0", "q1", "q2", "a", "b"]


def write_tiny_model(path):
    """A Llama config and a word-level tokenizer with a chat template: enough for verl's
    HFModelConfig and the agent loop's prompt building, no weights needed."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
    fast.chat_template = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}assistant {% endif %}"
    fast.save_pretrained(path)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": len(VOCAB),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "num_hidden_layers": 1,
        "max_position_embeddings": 64,
        "bos_token_id": 1,
        "eos_token_id": 1,
        "pad_token_id": 0,
    }
    (path / "config.json").write_text(json.dumps(config))


class RecordingServer:
    """Stand-in for verl's LLMServerClient: answers every request with two tokens."""

    def __init__(self):
        self.requests = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.requests.append((list(prompt_ids), dict(sampling_params)))
        return TokenOutput(
            token_ids=[7, 1],
            log_probs=[-0.5, -0.1],
            stop_reason="completed",
            extra_fields={"global_steps": 0},
        )


def tiny_trainer_config(tmp_path):
    """aepo_trainer composed around a tiny model written to ``tmp_path``: enough for verl's
    agent-loop worker, no data files."""
    write_tiny_model(tmp_path)
    with initialize_config_module("aepo.backends.verl.config", version_base=None):
        return compose(
            "aepo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={tmp_path}",
                "data.train_files=unused",
                "data.val_files=unused",
                "data.max_prompt_length=16",
                "data.max_response_length=8",
            ],
        )


def test_per_row_temperature_reaches_the_server(tmp_path):
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    config = tiny_trainer_config(tmp_path)
    # fit()'s generation batch: 3 prompts x n=2, interleaved, after _get_gen_batch.
    prompts = [f"q{i}" for i in range(3)]
    rows = [p for p in prompts for _ in range(2)]
    gen_batch = DataProto.from_single_dict(
        {
            "raw_prompt": np.array([[{"role": "user", "content": p}] for p in rows], dtype=object),
            "uid": np.array([f"uid-{p}" for p in rows], dtype=object),
            "data_source": np.array(["math"] * len(rows), dtype=object),
            "dummy_tensor": torch.zeros(len(rows), 1),
        }
    )
    decision = Decision(
        step=1, entropy=0.1, target=0.5, direction=1, temperature=1.2, budget=6, strength=1.0
    )
    rollout = ExtraRolloutPlan(num_prompts=2, samples_per_prompt=3, temperature=1.2)
    extra = build_extra_requests(gen_batch, StepPlan(decision, rollout, (0, 2)))
    combined = DataProto.concat(
        [
            tag_default_rows(gen_batch, config.actor_rollout_ref.rollout.agent.default_agent_loop),
            extra.requests,
        ]
    )
    server = RecordingServer()

    async def run():
        worker = AgentLoopWorker(config, server, None, None)
        return await worker.generate_sequences(combined)

    output = asyncio.run(run())

    assert len(server.requests) == len(combined) == 6 + 6
    sent = [params["temperature"] for _, params in server.requests]
    assert sorted(sent) == [1.0] * 6 + [1.2] * 6
    # Requests run concurrently; match them to rows by prompt: every prompt has its 2
    # GRPO samples at T=1 and, for the 2 chosen prompts, 3 extra samples at T=1.2.
    vocab = {i: w for i, w in enumerate(VOCAB)}
    by_prompt = {}
    for prompt_ids, params in server.requests:
        text = [vocab[t] for t in prompt_ids]
        by_prompt.setdefault(next(w for w in text if w.startswith("q")), []).append(
            params["temperature"]
        )
    chosen = {s.removeprefix("uid-") for s in extra.source_uids}
    assert len(chosen) == 2
    for p in prompts:
        expected = [1.0, 1.0] + ([1.2] * 3 if p in chosen else [])
        assert sorted(by_prompt[p]) == expected
    # Other sampling params are the rollout's own, untouched.
    assert {params["top_p"] for _, params in server.requests} == {1.0}
    # Output rows follow input order, with the response tokens padded verl's way.
    assert len(output) == len(combined)
    assert output.batch["responses"].shape[1] == 8
    assert list(output.non_tensor_batch["agent_name"][6:]) == [AGENT_NAME] * 6
    assert all(math.isnan(float(t)) for t in output.non_tensor_batch[TEMPERATURE_FIELD][:6])
