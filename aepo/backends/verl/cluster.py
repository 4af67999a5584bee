"""What every node of the Ray cluster must have, checked by the task runner before any
worker starts, in one zero-CPU task per node: verl loads our ``verl.plugins`` entry point
and registers our agent loop there (looked up the way verl's agent-loop workers look it
up), the aepo sources are the driver's (a hash of the files, not the version string),
flash-attn's kernels import where it is installed (verl's default attention and our
``use_remove_padding: true`` need it), no TRL that verl's FSDP workers cannot use, and, on
a cluster of several nodes, ``trainer.default_local_dir`` is the same storage everywhere
(a marker file the task runner writes and every node reads back)."""

from __future__ import annotations

import contextlib
import logging
import os
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
    """flash-attn's kernels import there (False: not installed, or a broken build)"""
    trl_problem: str | None = None
    """why the TRL installed there breaks verl's FSDP workers (None: no TRL, or a usable one)"""
    flash_attn_error: str | None = None
    """flash-attn is installed there but its kernels do not import (a build for another torch
    or CUDA): every FSDP worker would die in ``init_model``"""
    sources: SourceTree | None = None
    """the aepo sources a worker there imports (None: not probed)"""
    plugin_problem: str | None = None
    """why verl there does not register our agent loop (None: it does, or not probed)"""
    verl_error: str | None = None
    """verl, or its agent-loop module, does not import there"""
    storage: StorageView | None = None
    """what ``trainer.default_local_dir`` holds there (None: not probed)"""
    node_id: str = ""
    """Ray's node id: tells apart nodes that share an address (several raylets on a host)"""

    @property
    def where(self) -> str:
        named = f"{self.host}, id {self.node_id[:12]}" if self.node_id else self.host
        return f"Ray node {self.address} ({named})"


@dataclass(frozen=True)
class SourceTree:
    """The aepo package a process imports: where, and a hash of each source file."""

    path: str
    files: dict[str, str]

    @property
    def digest(self) -> str:
        return _digest(self.files)


@dataclass(frozen=True)
class StorageView:
    """``trainer.default_local_dir`` as one node resolves and reads it."""

    path: str
    marker: str | None  # the marker's content there; None: absent or unreadable
    error: str | None = None


def _digest(files: dict[str, str]) -> str:
    import hashlib

    joined = "\n".join(f"{name} {files[name]}" for name in sorted(files))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


STORAGE_MARKER = ".aepo_shared_storage_check"
"""written by the task runner in ``trainer.default_local_dir``, read back on every node"""


def _source_files(module: str):
    """A function, pickled by value, that hashes the source files of the package ``module``
    the calling process would import (the package is found, not imported)."""

    def source_files() -> dict | None:
        import hashlib
        import importlib.util
        import os

        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        root = os.path.realpath(list(spec.submodule_search_locations)[0])
        files = {}
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            for name in names:
                # The code and the configs Hydra reads from the package.
                if name.endswith((".py", ".yaml")):
                    path = os.path.join(folder, name)
                    with open(path, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()[:16]
                    files[os.path.relpath(path, root)] = digest
        return {"path": root, "files": files}

    return source_files


def _probe(
    module: str,
    agent_loop: tuple[str, str, str] | None = None,
    storage: tuple[str, str] | None = None,
) -> dict:
    """The per-node probe. ``agent_loop``: (verl's agent-loop module, our agent's name, our
    entry point's name) to look up as verl's workers do; ``storage``: (the configured
    ``default_local_dir``, the marker file name) to read back."""
    source_files = _source_files(module)

    # Defined inside a function so that Ray pickles it by value: it must run on a node
    # where ``aepo`` itself cannot be imported, to say so.
    def probe() -> dict:
        import importlib
        import importlib.util
        import os
        import socket

        report = {"host": socket.gethostname(), "version": None, "error": None}
        if agent_loop is not None:
            # First, before anything here imports aepo: verl's own plug-in loading
            # (``import verl`` loads every ``verl.plugins`` entry point and logs a failure
            # at DEBUG only), then the registry verl's agent-loop worker asserts on.
            registry_module, agent_name, entry_point = agent_loop
            report["plugin_problem"], report["verl_error"] = None, None
            registry = None
            for name in ("verl", registry_module):
                try:
                    registry = getattr(importlib.import_module(name), "_agent_loop_registry", None)
                except Exception as err:
                    report["verl_error"] = f"{name} does not import ({type(err).__name__}: {err})"
                    break
            if registry is not None and agent_name not in registry:
                from importlib.metadata import entry_points

                found = [ep for ep in entry_points(group="verl.plugins") if ep.name == entry_point]
                policy = os.environ.get("VERL_USE_EXTERNAL_PLUGINS", "auto")
                if not found:
                    why = (
                        f"no '{entry_point}' entry point in the 'verl.plugins' group (aepo is "
                        "not pip-installed in the environment Ray runs there)"
                    )
                elif policy.strip().lower() != "auto" and entry_point not in {
                    name.strip() for name in policy.split(",")
                }:
                    why = f"VERL_USE_EXTERNAL_PLUGINS={policy} there skips it"
                else:
                    try:
                        found[0].load()
                        why = "its entry point loads, yet registers nothing"
                    except Exception as err:
                        why = f"its entry point {found[0].value} fails: {type(err).__name__}: {err}"
                report["plugin_problem"] = (
                    f"verl does not register the agent loop {agent_name!r}: {why}"
                )
        try:
            report["version"] = importlib.import_module(module).__version__
        except Exception as err:  # any import failure is the node's problem
            report["error"] = f"{type(err).__name__}: {err}"
        report["sources"] = source_files() if report["error"] is None else None
        report["flash_attn"], report["flash_attn_error"] = False, None
        if importlib.util.find_spec("flash_attn") is not None:
            # What transformers' flash_attention_2 and verl's remove-padding import: the
            # functions load the compiled kernel (flash_attn_2_cuda), which a build for
            # another torch or CUDA fails with an undefined symbol.
            try:
                importlib.import_module("flash_attn").flash_attn_varlen_func  # noqa: B018
                importlib.import_module("flash_attn.bert_padding").unpad_input  # noqa: B018
                report["flash_attn"] = True
            except Exception as err:
                report["flash_attn_error"] = f"{type(err).__name__}: {err}"
        if storage is not None:
            configured, marker_name = storage
            folder = os.path.abspath(os.path.expanduser(configured))
            view = {"path": folder, "marker": None, "error": None}
            try:
                with open(os.path.join(folder, marker_name)) as f:
                    view["marker"] = f.read()
            except OSError as err:
                view["error"] = f"{type(err).__name__}: {err.strerror or err}"
            report["storage"] = view
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


def probe_nodes(
    module: str = "aepo",
    timeout_s: float = NODE_PROBE_TIMEOUT_S,
    *,
    agent_loop: tuple[str, str, str] | None = None,
    storage: tuple[str, str] | None = None,
) -> list[NodeReport]:
    """One zero-CPU Ray task pinned to each alive node of the connected cluster (see
    :func:`_probe` for ``agent_loop`` and ``storage``)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_probe(module, agent_loop, storage))
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
        sources, view = found.get("sources"), found.get("storage")
        reports.append(
            NodeReport(
                address,
                found["host"],
                found["version"],
                found["error"],
                found["flash_attn"],
                found.get("trl_problem"),
                flash_attn_error=found.get("flash_attn_error"),
                sources=None if sources is None else SourceTree(**sources),
                plugin_problem=found.get("plugin_problem"),
                verl_error=found.get("verl_error"),
                storage=None if view is None else StorageView(**view),
                node_id=pending[ref]["NodeID"],
            )
        )
    for ref in late:
        ray.cancel(ref, force=True)
        address = pending[ref]["NodeManagerAddress"]
        reports.append(
            NodeReport(
                address,
                "?",
                None,
                f"no answer within {timeout_s:.0f} s",
                False,
                node_id=pending[ref]["NodeID"],
            )
        )
    return sorted(reports, key=lambda report: (report.address, report.node_id))


SOURCES_REMEDY = (
    "check out the driver's commit at the same path on every node (Ray workers import aepo "
    "from the driver's working directory where that path exists on their node, else from "
    "the environment's install)"
)
FLASH_ATTN_REMEDY = (
    "reinstall it against that node's torch (pip install --no-build-isolation "
    '--force-reinstall -e ".[flash-attn]"), or uninstall it there (pip uninstall flash-attn) '
    "to train with sdpa"
)
STORAGE_REMEDY = (
    "verl's ranks write their model shards on their own nodes while the task runner writes "
    "latest_checkpointed_iteration.txt and aepo_state.json on its node, so a resume would "
    "find missing or mixed states; point trainer.default_local_dir at a filesystem every node "
    "mounts at the same absolute path (NFS, Lustre, a mounted bucket)"
)


@dataclass(frozen=True)
class StorageMarker:
    """The marker the task runner wrote: where (as it resolved the path), on which host,
    and its content (unique to this start)."""

    configured: str
    path: str
    host: str
    token: str


def node_problems(
    reports: list[NodeReport],
    expected_version: str,
    *,
    expected_sources: SourceTree | None = None,
    driver: str = "the driver",
    marker: StorageMarker | None = None,
) -> list[str]:
    problems = []
    for node in reports:
        where = node.where
        if node.import_error is not None:
            problems.append(f"{where}: cannot import aepo ({node.import_error}): {INSTALL_REMEDY}")
        elif node.aepo_version != expected_version:
            problems.append(
                f"{where} has aepo {node.aepo_version}, the driver {expected_version}: "
                f"{INSTALL_REMEDY}"
            )
        elif (
            expected_sources is not None
            and node.sources is not None
            and node.sources.digest != expected_sources.digest
        ):
            problems.append(
                f"{where} runs other aepo sources than {driver}: {node.sources.path} there "
                f"(hash {node.sources.digest}), {expected_sources.path} on {driver} (hash "
                f"{expected_sources.digest}){_differing(node.sources, expected_sources)}: "
                f"{SOURCES_REMEDY}"
            )
        if node.plugin_problem is not None:
            problems.append(
                f"{where}: {node.plugin_problem}; verl's agent-loop workers there would stop "
                f"at the first step: {INSTALL_REMEDY}"
            )
        if node.flash_attn_error is not None:
            # transformers imports flash-attn to see whether it is available, so a broken
            # build also stops verl's agent-loop module from importing: one problem, one line.
            also = "" if node.verl_error is None else f", and {node.verl_error}"
            problems.append(
                f"{where}: flash-attn is installed but its kernels do not import "
                f"({node.flash_attn_error}){also}; every FSDP worker there would die in "
                f"init_model: {FLASH_ATTN_REMEDY}"
            )
        elif node.verl_error is not None:
            problems.append(
                f"{where}: {node.verl_error}; verl's workers there cannot start: {INSTALL_REMEDY}"
            )
        if node.trl_problem is not None:
            problems.append(
                f"{where}: {node.trl_problem}: uninstall it there (pip uninstall trl); "
                "scripts/bench_vs_trl.py runs TRL from its own environment (make bench-trl)"
            )
        if marker is not None and node.storage is not None and node.storage.marker != marker.token:
            seen = node.storage.error or "it holds another start's marker"
            problems.append(
                f"{where}: trainer.default_local_dir={marker.configured} is "
                f"{node.storage.path} there, and the marker the task runner wrote in "
                f"{marker.path} on {marker.host} is not in it ({seen}): {STORAGE_REMEDY}"
            )
    return problems


def _differing(found: SourceTree, expected: SourceTree, most: int = 5) -> str:
    names = sorted(
        name
        for name in set(found.files) | set(expected.files)
        if found.files.get(name) != expected.files.get(name)
    )
    if not names or not expected.files:
        return ""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return f"; files that differ: {', '.join(names[:most])}{more}"


def local_sources(module: str = "aepo") -> SourceTree:
    """The sources this process imports ``module`` from (hashed, not imported)."""
    found = _source_files(module)()
    if found is None:
        raise ModuleNotFoundError(f"No module named {module!r}")
    return SourceTree(**found)


def record_driver(config) -> None:
    """The driver's aepo sources, in the config the task runner receives (``aepo_launch``):
    the task runner may run on another node, whose checkout is not the driver's."""
    import socket

    sources = local_sources()
    with open_dict(config):
        config.aepo_launch = {
            "host": socket.gethostname(),
            "path": sources.path,
            "digest": sources.digest,
        }


def driver_sources(config) -> tuple[SourceTree, str]:
    """What :func:`record_driver` recorded (per-file hashes: this process's when it has the
    same digest, else none), and who; this process's sources when nothing was recorded."""
    own = local_sources()
    launch = config.get("aepo_launch") if hasattr(config, "get") else None
    if not launch:
        return own, "the task runner"
    if launch["digest"] == own.digest:
        return SourceTree(str(launch["path"]), own.files), f"the driver ({launch['host']})"
    return _Recorded(str(launch["path"]), {}, str(launch["digest"])), (
        f"the driver ({launch['host']})"
    )


@dataclass(frozen=True)
class _Recorded(SourceTree):
    """A source tree known by its digest only."""

    recorded_digest: str = ""

    @property
    def digest(self) -> str:
        return self.recorded_digest


def write_storage_marker(configured: str) -> StorageMarker:
    """The marker file, written as the task runner (which writes ``aepo_state.json``) would
    write a checkpoint: relative paths against this process's directory."""
    import socket
    import uuid

    folder = os.path.abspath(os.path.expanduser(configured))
    host = socket.gethostname()
    token = f"{host} {os.getpid()} {uuid.uuid4().hex}"
    try:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, STORAGE_MARKER), "w") as f:
            f.write(token)
    except OSError as err:
        raise ConfigError(
            f"cannot start AEPO training:\n  trainer.default_local_dir={configured}: cannot "
            f"write {os.path.join(folder, STORAGE_MARKER)} on {host} ({err})"
        ) from err
    return StorageMarker(configured, folder, host, token)


def needs_shared_storage(config, alive_nodes: int) -> bool:
    """Several nodes, and checkpoints that will be written or read."""
    trainer = config.trainer
    saves = int(trainer.get("save_freq", -1) or -1) > 0
    return alive_nodes > 1 and (saves or trainer.get("resume_mode", "auto") != "disable")


def check_nodes(module: str = "aepo", config=None) -> list[NodeReport]:
    """Every node imports the driver's aepo sources, registers our agent loop through verl's
    plug-in loading, has a working flash-attn or none, and (several nodes, with ``config``)
    sees the same ``trainer.default_local_dir``; raises ConfigError naming each node that
    does not. Returns the reports (their flash-attn field feeds :func:`choose_attention`)."""
    import ray

    from aepo import __version__
    from aepo.backends.verl._verl_internals import AGENT_LOOP_MODULE
    from aepo.backends.verl.agent_loop import AGENT_NAME

    expected, driver = (local_sources(module), "the task runner")
    if config is not None:
        expected, driver = driver_sources(config)
    marker = None
    alive = sum(1 for node in ray.nodes() if node.get("Alive")) if ray.is_initialized() else 0
    if config is not None and needs_shared_storage(config, alive):
        marker = write_storage_marker(str(config.trainer.default_local_dir))
    try:
        reports = probe_nodes(
            module,
            agent_loop=(AGENT_LOOP_MODULE, AGENT_NAME, "aepo"),
            storage=None if marker is None else (marker.configured, STORAGE_MARKER),
        )
    finally:
        if marker is not None:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(marker.path, STORAGE_MARKER))
    problems = node_problems(
        reports, __version__, expected_sources=expected, driver=driver, marker=marker
    )
    if problems:
        raise ConfigError("cannot start AEPO training:\n  " + "\n  ".join(problems))
    return reports


def choose_attention(config, flash_attn_everywhere: bool) -> str | None:
    """Without flash-attn on every node, verl's default attention (``flash_attention_2``,
    verl 0.9.1 ``workers/config/model.py``) makes ``init_model`` fail after the GPUs
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
