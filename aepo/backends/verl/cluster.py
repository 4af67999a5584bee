"""What every node of the Ray cluster must have, checked by the task runner before any
worker starts: this package at the driver's version (verl's agent-loop workers, placed on
any node, import it at the first extra samples), flash-attn, which verl's default
attention and our ``use_remove_padding: true`` need, and no TRL that verl's FSDP workers
cannot use."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import open_dict

from aepo.core import ConfigError

logger = logging.getLogger(__name__)

NODE_PROBE_TIMEOUT_S = 300.0
INSTALL_REMEDY = (
    'install this repository there, in the Python environment Ray runs (pip install -e ".[gpu]" '
    "at the same path on every node)"
)


@dataclass(frozen=True)
class NodeReport:
    address: str
    host: str
    aepo_version: str | None  # None: aepo is not importable there
    import_error: str | None
    flash_attn: bool
    trl_problem: str | None = None
    """why the TRL installed there breaks verl's FSDP workers (None: no TRL, or a usable one)"""


def _probe(module: str) -> dict:
    # Defined inside a function so that Ray pickles it by value: it must run on a node
    # where ``aepo`` itself cannot be imported, to say so.
    def probe() -> dict:
        import importlib
        import importlib.util
        import socket

        report = {
            "host": socket.gethostname(),
            "flash_attn": importlib.util.find_spec("flash_attn") is not None,
            "version": None,
            "error": None,
        }
        try:
            report["version"] = importlib.import_module(module).__version__
        except Exception as err:  # any import failure is the node's problem
            report["error"] = f"{type(err).__name__}: {err}"
        report["trl_problem"] = None
        if importlib.util.find_spec("trl") is not None:
            # verl 0.9.1's FSDP worker imports TRL's value-head model whenever TRL is
            # importable (verl/models/transformers/monkey_patch.py, apply_monkey_patch), from
            # trl.experimental.ppo or trl; TRL 1.x has it in neither, and every actor worker
            # then dies building its model, deep inside Ray.
            found = False
            for where in ("trl.experimental.ppo", "trl"):
                try:
                    found = hasattr(
                        importlib.import_module(where), "AutoModelForCausalLMWithValueHead"
                    )
                except Exception:  # an unimportable TRL fails verl's import the same way
                    found = False
                if found:
                    break
            if not found:
                try:
                    version = importlib.import_module("trl").__version__
                except Exception as err:
                    version = f"(unimportable: {type(err).__name__})"
                report["trl_problem"] = (
                    f"TRL {version} is installed, and it has no AutoModelForCausalLMWithValueHead, "
                    "which verl 0.9.1's FSDP workers import whenever TRL is importable"
                )
        return report

    return probe


def probe_nodes(module: str = "aepo", timeout_s: float = NODE_PROBE_TIMEOUT_S) -> list[NodeReport]:
    """One zero-CPU Ray task pinned to each alive node of the connected cluster."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_probe(module))
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    pending = {
        probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(): node
        for node in nodes
    }
    done, late = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
    reports = []
    for ref in done:
        address = pending[ref]["NodeManagerAddress"]
        try:
            found = ray.get(ref)
        except Exception as err:  # a worker that cannot start there
            found = {"host": "?", "flash_attn": False, "version": None, "error": repr(err)}
        reports.append(
            NodeReport(
                address,
                found["host"],
                found["version"],
                found["error"],
                found["flash_attn"],
                found.get("trl_problem"),
            )
        )
    for ref in late:
        ray.cancel(ref, force=True)
        address = pending[ref]["NodeManagerAddress"]
        reports.append(NodeReport(address, "?", None, f"no answer within {timeout_s:.0f} s", False))
    return sorted(reports, key=lambda report: report.address)


def node_problems(reports: list[NodeReport], expected_version: str) -> list[str]:
    problems = []
    for node in reports:
        where = f"Ray node {node.address} ({node.host})"
        if node.import_error is not None:
            problems.append(f"{where}: cannot import aepo ({node.import_error}): {INSTALL_REMEDY}")
        elif node.aepo_version != expected_version:
            problems.append(
                f"{where} has aepo {node.aepo_version}, the driver {expected_version}: "
                f"{INSTALL_REMEDY}"
            )
        if node.trl_problem is not None:
            problems.append(
                f"{where}: {node.trl_problem}: uninstall it there (pip uninstall trl); "
                "scripts/bench_vs_trl.py runs TRL from its own environment (make bench-trl)"
            )
    return problems


def check_nodes(module: str = "aepo") -> list[NodeReport]:
    """Every node imports aepo at the driver's version; raises ConfigError naming each node
    that does not. Returns the reports (their flash-attn field feeds :func:`choose_attention`)."""
    from aepo import __version__

    reports = probe_nodes(module)
    problems = node_problems(reports, __version__)
    if problems:
        raise ConfigError("cannot start AEPO training:\n  " + "\n  ".join(problems))
    return reports


def choose_attention(config, flash_attn_everywhere: bool) -> str | None:
    """Without flash-attn on every node, verl's default attention (``flash_attention_2``,
    verl 0.9.1 ``workers/config/model.py:185``) makes ``init_model`` fail after the GPUs
    are allocated. If the config did not ask for an attention implementation, switch to
    PyTorch's ``sdpa`` and turn remove-padding off (it packs the rows of a micro-batch into
    one sequence that only flash-attn's varlen kernels keep apart). Returns the message it
    logged, None when nothing changed. Raises ConfigError when the config explicitly asks
    for flash-attn, or needs remove-padding (Ulysses sequence parallelism)."""
    if flash_attn_everywhere:
        return None
    model = config.actor_rollout_ref.model
    asked = (model.get("override_config") or {}).get("attn_implementation")
    remedy = (
        'install flash-attn on every node (pip install --no-build-isolation -e ".[flash-attn]"),'
        " or run with +actor_rollout_ref.model.override_config.attn_implementation=sdpa "
        "actor_rollout_ref.model.use_remove_padding=false"
    )
    if asked is not None and str(asked).startswith("flash_attention"):
        raise ConfigError(
            f"actor_rollout_ref.model.override_config.attn_implementation={asked} but "
            f"flash-attn is not installed on every Ray node: {remedy}"
        )
    if asked is not None:
        return None
    parallel = int(config.actor_rollout_ref.actor.get("ulysses_sequence_parallel_size", 1) or 1)
    if parallel > 1:
        raise ConfigError(
            f"actor_rollout_ref.actor.ulysses_sequence_parallel_size={parallel} needs "
            f"flash-attn (remove-padding), which is not installed on every Ray node: {remedy}"
        )
    with open_dict(model):
        if model.get("override_config") is None:
            model.override_config = {}
        model.override_config.attn_implementation = "sdpa"
        model.use_remove_padding = False
    # The actor's copy interpolates the model's, but the task runner has resolved it by now.
    actor = config.actor_rollout_ref.actor
    if "use_remove_padding" in actor:
        actor.use_remove_padding = False
    message = (
        "flash-attn is not installed on every Ray node: training with "
        "attn_implementation=sdpa and use_remove_padding=false (same attention, more memory "
        "and time per step on padded rows). For flash-attn: pip install --no-build-isolation "
        '-e ".[flash-attn]" on every node'
    )
    logger.warning(message)
    return message
