"""The per-sample-temperature agent loop.

verl 0.9.1 samples every row of a rollout at ``rollout.temperature``; its only per-row
switch is greedy on/off. Every non-tensor field of a row reaches the agent loop's ``run``
as a keyword argument, and vLLM honours any ``SamplingParams`` field per request, so a
single-turn loop that reads ``aepo_temperature`` lets the AEPO samples at T_high / T_low
travel in the same generate call as the GRPO samples at T = 1.

The same loop reads ``aepo_seed``: vLLM's sampling seed of the request (see
:func:`request_seeds`), so that a training sample depends on the weights and on the request,
never on which replica serves it (docs/scale_out.md, "Sampling that does not depend on the
replica").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from verl.experimental.agent_loop.agent_loop import register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

AGENT_NAME = "aepo_temperature_agent"
TEMPERATURE_FIELD = "aepo_temperature"
"""non-tensor batch field with the sampling temperature of each row (NaN: keep the default)"""
SEED_FIELD = "aepo_seed"
"""non-tensor batch field with vLLM's sampling seed of each row (None: the server's own)"""
SEEDABLE_AGENT_LOOP = "single_turn_agent"
"""verl's default agent loop; ``aepo_temperature_agent`` is it plus the two fields above, so
its rows can be sent through ours to carry a seed"""
FIT_CALL, SECOND_CALL = 0, 1
"""which generate call of a step: fit()'s own, or the extra pass after the measurement"""


def request_seeds(base_seed: int, step: int, call: int, num_rows: int) -> np.ndarray:
    """vLLM sampling seeds of the rows of one generate call, one per row position.

    Derived from ``(base_seed, step, call, row)`` alone by numpy's ``SeedSequence`` (a fixed,
    documented hash, the same in every process and Python version), so two runs, or two
    replicas, give a request the same seed; the rows of a call, the n samples of one prompt
    among them, get distinct ones. 63 bits: vLLM carries the seed as a signed 64-bit int
    and reads -1 as "no seed".
    """
    if base_seed < 0 or step < 0 or call < 0:
        raise ValueError(
            f"request seeds need non-negative base seed, step and call, got "
            f"seed={base_seed}, step={step}, call={call}"
        )
    seeds = [
        int(np.random.SeedSequence([base_seed, step, call, row]).generate_state(1, np.uint64)[0])
        >> 1
        for row in range(num_rows)
    ]
    return np.asarray(seeds, dtype=object)


def session_seeds(base_seed: int, step: int, call: int, sessions: list[int]) -> list[str]:
    """The same seeds as :func:`request_seeds` for a call whose prompt ``p`` asks for
    ``sessions[p]`` samples, grouped per prompt (the legacy trainer's row ``r`` is the V1
    trainer's prompt-major sample ``r``), each prompt's as the text :func:`session_seed`
    reads."""
    seeds = request_seeds(base_seed, step, call, sum(sessions))
    grouped, row = [], 0
    for count in sessions:
        grouped.append(" ".join(str(int(s)) for s in seeds[row : row + count]))
        row += count
    return grouped


def requested_temperature(value: Any) -> float | None:
    """The row's temperature override, or None for rows that keep the batch default."""
    if value is None:
        return None
    temperature = float(value)
    if math.isnan(temperature):
        return None
    if not temperature > 0:
        raise ValueError(f"{TEMPERATURE_FIELD} must be > 0 (or NaN for no override), got {value!r}")
    return temperature


def session_seed(value: Any, session_id: int) -> int | None:
    """The seed of one sample. verl's legacy trainer sends each sample as a row of its own
    (an int per row); its V1 trainer sends a prompt once with ``__rollout_n__`` sessions, all
    with the same fields, so there the field holds the sessions' seeds, space-separated, and
    session ``session_id`` takes its own (the n samples of a prompt must differ)."""
    if value is None:
        return None
    if isinstance(value, str):
        seeds = value.split()
        if not 0 <= session_id < len(seeds):
            raise ValueError(f"{SEED_FIELD}: no seed for session {session_id} in {value!r}")
        return int(seeds[session_id])
    return int(value)


@register(AGENT_NAME)
class TemperatureAgentLoop(SingleTurnAgentLoop):
    """``single_turn_agent`` sampling at the row's ``aepo_temperature`` with the row's
    ``aepo_seed``."""

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        temperature = requested_temperature(kwargs.pop(TEMPERATURE_FIELD, None))
        if temperature is not None:
            sampling_params = {**sampling_params, "temperature": temperature}
        seed = session_seed(kwargs.pop(SEED_FIELD, None), kwargs.get("session_id", 0))
        if seed is not None:
            # verl's server only sets its replica-wide seed when the request has none
            # (vllm_async_server.py, setdefault).
            sampling_params = {**sampling_params, "seed": int(seed)}
        return await super().run(sampling_params, **kwargs)
