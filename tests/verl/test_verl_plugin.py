"""``import verl`` alone registers our agent loop, in a fresh process, through the
``verl.plugins`` entry point declared in pyproject.toml."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("verl")

PROBE = textwrap.dedent(
    """
    import json, sys
    import verl  # nothing of aepo is imported explicitly
    light = "verl.experimental.agent_loop.agent_loop" not in sys.modules
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
    from aepo.backends.verl._verl_internals import agent_loop_registry
    print(json.dumps({
        "plugin_loaded": "aepo.backends.verl.plugin" in sys.modules,
        "light": light,
        "registry": {k: v["_target_"] for k, v in _agent_loop_registry.items()},
        "same_registry": agent_loop_registry() is _agent_loop_registry,
    }))
    """
)


def test_import_verl_alone_registers_the_agent_loop():
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["plugin_loaded"], "verl did not load the aepo entry point (pip install -e .?)"
    assert report["light"], "the plug-in must not import verl's agent-loop stack eagerly"
    assert (
        report["registry"]["aepo_temperature_agent"]
        == "aepo.backends.verl.agent_loop.TemperatureAgentLoop"
    )
    assert "single_turn_agent" in report["registry"]
    assert report["same_registry"]
