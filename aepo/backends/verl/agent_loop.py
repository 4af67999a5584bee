"""The per-sample-temperature agent loop.

verl 0.9.1 samples every row of a rollout at ``rollout.temperature``; its only per-row
switch is greedy on/off. Every non-tensor field of a row reaches the agent loop's ``run``
as a keyword argument, and vLLM honours any ``SamplingParams`` field per request, so a
single-turn loop that reads ``aepo_temperature`` lets the AEPO samples at T_high / T_low
travel in the same generate call as the GRPO samples at T = 1.
"""

from __future__ import annotations

import math
from typing import Any

from verl.experimental.agent_loop.agent_loop import register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

AGENT_NAME = "aepo_temperature_agent"
TEMPERATURE_FIELD = "aepo_temperature"
"""non-tensor batch field with the sampling temperature of each row (NaN: keep the default)"""


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


@register(AGENT_NAME)
class TemperatureAgentLoop(SingleTurnAgentLoop):
    """``single_turn_agent`` sampling at the row's ``aepo_temperature``."""

    async def run(self, sampling_params: dict[str, Any], **kwargs):
        temperature = requested_temperature(kwargs.pop(TEMPERATURE_FIELD, None))
        if temperature is not None:
            sampling_params = {**sampling_params, "temperature": temperature}
        return await super().run(sampling_params, **kwargs)
