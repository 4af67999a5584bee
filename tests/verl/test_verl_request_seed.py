"""Per-request vLLM seeds (``actor_rollout_ref.rollout.custom.per_request_seed``): their derivation, and their way
through verl 0.9.1's AgentLoopWorker to the LLM server.

The server is the stand-in of test_verl_agent_loop.py (it records the sampling params it is
sent); the worker, the registry lookup, the agent loop and verl's chunking are real. That
the same seed gives the same sample on two real vLLM engines is
tests/e2e/test_e2e_vllm_request_seed.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from verl import DataProto  # noqa: E402

from aepo.backends.verl.agent_loop import (  # noqa: E402
    AGENT_NAME,
    FIT_CALL,
    SECOND_CALL,
    SEED_FIELD,
    request_seeds,
)
from aepo.backends.verl.extra_rollout import (  # noqa: E402
    SeedKey,
    build_extra_requests,
    tag_default_rows,
    with_seeds,
)
from aepo.core import Decision, ExtraRolloutPlan, StepPlan  # noqa: E402
from tests.conftest import PROJECT_ROOT  # noqa: E402
from tests.verl.test_verl_agent_loop import (  # noqa: E402
    VOCAB,
    RecordingServer,
    tiny_trainer_config,
)

# ---- the derivation -------------------------------------------------------------------------


def test_the_rows_of_a_call_get_distinct_seeds():
    seeds = request_seeds(42, step=3, call=FIT_CALL, num_rows=512)
    assert len(set(seeds.tolist())) == 512
    assert all(isinstance(s, int) and 0 <= s < 2**63 for s in seeds)


def test_seeds_repeat_for_the_same_step_call_and_row():
    assert (
        request_seeds(42, 3, FIT_CALL, 16).tolist() == request_seeds(42, 3, FIT_CALL, 16).tolist()
    )
    # a row's seed is its position's, whatever the size of the call
    assert (
        request_seeds(42, 3, FIT_CALL, 32)[:16].tolist()
        == request_seeds(42, 3, FIT_CALL, 16).tolist()
    )


def test_base_seed_step_and_call_each_change_every_seed():
    base = set(request_seeds(42, 3, FIT_CALL, 64).tolist())
    for other in (
        request_seeds(43, 3, FIT_CALL, 64),
        request_seeds(42, 4, FIT_CALL, 64),
        request_seeds(42, 3, SECOND_CALL, 64),
    ):
        assert not base & set(other.tolist())


def test_seeds_are_the_same_in_another_process_with_another_hash_seed():
    """Nothing process-, host- or time-dependent enters: a fresh interpreter with a
    different PYTHONHASHSEED (as each Ray worker has) derives the same seeds."""
    code = (
        "from aepo.backends.verl.agent_loop import request_seeds;"
        "print(request_seeds(42, 7, 1, 8).tolist())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(PROJECT_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(request_seeds(42, 7, 1, 8).tolist())


def test_negative_inputs_are_refused():
    with pytest.raises(ValueError, match="seed=-1"):
        request_seeds(-1, 1, FIT_CALL, 4)


# ---- through verl's agent-loop worker -------------------------------------------------------


def _generation_call(seed_key: SeedKey) -> DataProto:
    """fit()'s batch (3 prompts x n=2, interleaved) plus 2 prompts x 3 extra samples, as
    one seeded generate call of the trainer."""
    rows = [p for p in ("q0", "q1", "q2") for _ in range(2)]
    gen_batch = DataProto.from_single_dict(
        {
            "raw_prompt": np.array([[{"role": "user", "content": p}] for p in rows], dtype=object),
            "uid": np.array([f"uid-{p}" for p in rows], dtype=object),
            "dummy_tensor": torch.zeros(len(rows), 1),
        }
    )
    decision = Decision(
        step=1, entropy=0.1, target=0.5, direction=1, temperature=1.2, budget=6, strength=1.0
    )
    plan = StepPlan(decision, ExtraRolloutPlan(2, 3, 1.2), (0, 2))
    default_rows = tag_default_rows(gen_batch, "single_turn_agent", seeded=True)
    combined = DataProto.concat([default_rows, build_extra_requests(gen_batch, plan).requests])
    return with_seeds(combined, seed_key)


def _sent(servers) -> list[tuple[str, int, float]]:
    """(prompt word, seed, temperature) of every request the servers received, sorted."""
    vocab = dict(enumerate(VOCAB))
    sent = []
    for server in servers:
        for prompt_ids, params in server.requests:
            prompt = next(vocab[t] for t in prompt_ids if vocab[t].startswith("q"))
            sent.append((prompt, params["seed"], params["temperature"]))
    return sorted(sent)


def test_every_row_reaches_the_server_with_its_seed_whichever_worker_serves_it(tmp_path):
    """One worker and one server, or the call chunked over two workers with a server each
    (verl's AgentLoopManager chunks the call over its workers; each talks to the replicas
    its load balancer picks): the same (prompt, seed, temperature) requests, each row's seed
    the one of its position in the call. GRPO rows go through our agent loop to carry it."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    config = tiny_trainer_config(tmp_path)
    key = SeedKey(base_seed=42, step=5, call=FIT_CALL)
    combined = _generation_call(key)
    assert set(combined.non_tensor_batch["agent_name"]) == {AGENT_NAME}
    seeds = request_seeds(42, 5, FIT_CALL, len(combined)).tolist()
    prompts = [m[0]["content"] for m in combined.non_tensor_batch["raw_prompt"]]
    temperatures = [1.0] * 6 + [1.2] * 6
    expected = sorted(zip(prompts, seeds, temperatures, strict=True))

    async def serve(chunks):
        servers = [RecordingServer() for _ in chunks]
        workers = [AgentLoopWorker(config, server, None, None) for server in servers]
        await asyncio.gather(
            *[w.generate_sequences(c) for w, c in zip(workers, chunks, strict=True)]
        )
        return servers

    one = asyncio.run(serve([combined]))
    two = asyncio.run(serve(combined.chunk(2)))
    assert _sent(one) == _sent(two) == expected
    # distinct seeds for the n samples of one prompt
    for prompt in set(prompts):
        sent = [seed for p, seed, _ in expected if p == prompt]
        assert len(set(sent)) == len(sent)


def test_a_row_of_another_agent_loop_is_refused_naming_row_and_loop():
    batch = DataProto.from_single_dict(
        {
            "agent_name": np.array(["single_turn_agent", "tool_agent"], dtype=object),
            "dummy_tensor": torch.zeros(2, 1),
        }
    )
    with pytest.raises(
        ValueError, match="row 1 .*'tool_agent'.*rollout.custom.per_request_seed=false"
    ):
        tag_default_rows(batch, "single_turn_agent", seeded=True)
    unseeded = tag_default_rows(batch, "single_turn_agent")
    assert SEED_FIELD not in unseeded.non_tensor_batch
    assert list(unseeded.non_tensor_batch["agent_name"]) == ["single_turn_agent", "tool_agent"]
