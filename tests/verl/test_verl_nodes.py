"""The task runner's per-node check on a real Ray cluster of several nodes on this machine
(``ray.cluster_utils.Cluster``: one raylet per node, each with its own environment).

Real: Ray, the per-node probe tasks, verl's own plug-in loading (``import verl`` reads the
``verl.plugins`` entry points of this environment) and its agent-loop registry, the aepo
sources each node's workers import, the marker file on disk. Simulated, because this is one
machine: a "node" is a raylet whose environment differs from the head's:

- ``copy``: PYTHONPATH points at a copy of aepo with one source line changed (a node with
  another checkout of the repository);
- ``plugin``: PYTHONPATH points at a copy whose verl plug-in module fails to import (the
  entry point cannot load there; verl logs that at DEBUG and goes on);
- ``no_plugins``: the same sources, with ``VERL_USE_EXTERNAL_PLUGINS=none``;
- ``flash``: a stand-in ``flash_attn`` package on its PYTHONPATH whose kernel import raises
  as a build for another torch does (flash-attn is not installed here: the package is fake);
- ``storage``: its raylet started in another directory, so that a relative
  ``trainer.default_local_dir`` is another folder there, as on a node whose disk is not the
  task runner's (what matters is that the folder the node reads is not the one written).

The driver runs from an empty directory: Ray puts the driver's working directory first on
every worker's ``sys.path``, which on one machine would hand every node the driver's aepo.
The test process plays the task runner (it writes the marker and compares the sources).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("verl")

from omegaconf import OmegaConf  # noqa: E402

from aepo.core import ConfigError  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHANGED_FILE = os.path.join("core", "losses.py")


def aepo_copy(folder: Path, edit: str) -> Path:
    shutil.copytree(
        PROJECT_ROOT / "aepo", folder / "aepo", ignore=shutil.ignore_patterns("__pycache__")
    )
    if edit == "source":
        with open(folder / "aepo" / CHANGED_FILE, "a") as f:
            f.write("\n# an older checkout\n")
    elif edit == "plugin":
        (folder / "aepo" / "backends" / "verl" / "plugin.py").write_text(
            'raise ImportError("simulated: a dependency of the plug-in is missing here")\n'
        )
    return folder


def broken_flash_attn(folder: Path) -> Path:
    package = folder / "flash_attn"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "raise ImportError('/site-packages/flash_attn_2_cuda.cpython-311-x86_64-linux-gnu.so: "
        "undefined symbol: _ZN3c104cuda9SetDeviceEi')\n"
    )
    return folder


@pytest.fixture(scope="class")
def cluster_check(tmp_path_factory):
    """Head plus one node per defect; the check runs once, every test reads its result."""
    from ray.cluster_utils import Cluster

    from aepo.backends.verl.cluster import check_nodes, record_driver

    root = tmp_path_factory.mktemp("nodes")
    ours = str(PROJECT_ROOT)
    environments = {
        "copy": {"PYTHONPATH": str(aepo_copy(root / "copy", "source"))},
        "plugin": {"PYTHONPATH": str(aepo_copy(root / "plugin", "plugin"))},
        "no_plugins": {"PYTHONPATH": ours, "VERL_USE_EXTERNAL_PLUGINS": "none"},
        "flash": {"PYTHONPATH": os.pathsep.join([str(broken_flash_attn(root / "fa")), ours])},
        "storage": {"PYTHONPATH": ours},
    }
    for name in ("driver", "head", "elsewhere"):
        (root / name).mkdir()
    here = os.getcwd()
    env_before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ours
    try:
        os.chdir(root / "head")
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        node_ids = {"head": cluster.head_node.node_id}
        for name, env in environments.items():
            os.chdir(root / ("elsewhere" if name == "storage" else "head"))
            node = cluster.add_node(num_cpus=1, env_vars={**env, "AEPO_TEST_NODE": name})
            node_ids[name] = node.node_id
        cluster.wait_for_nodes()
        os.chdir(root / "driver")
        ray.init(address=cluster.address, log_to_driver=False)
        config = OmegaConf.create(
            {
                "trainer": {
                    "default_local_dir": "checkpoints",
                    "save_freq": 10,
                    "resume_mode": "auto",
                }
            }
        )
        record_driver(config)
        # The task runner's working directory is the head raylet's.
        os.chdir(root / "head")
        try:
            reports = check_nodes(config=config)
            error = None
        except ConfigError as err:
            reports, error = None, str(err)
        yield {"error": error, "reports": reports, "ids": node_ids, "root": root}
    finally:
        os.chdir(here)
        if env_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_before
        ray.shutdown()
        cluster.shutdown()


def problem_of(check, node: str) -> str:
    assert check["error"] is not None, "the check passed a cluster with bad nodes"
    lines = [line for line in check["error"].splitlines() if check["ids"][node][:12] in line]
    assert lines, f"no problem names node {node}:\n{check['error']}"
    return "\n".join(lines)


def check_ids_named(check, node: str) -> list[str]:
    return [line for line in check["error"].splitlines() if check["ids"][node][:12] in line]


class TestOneCheckOfACluster:
    """Head plus one node per defect, checked once (the class's fixture)."""

    def test_the_head_node_is_not_named(self, cluster_check):
        assert check_ids_named(cluster_check, "head") == []

    def test_a_node_with_other_aepo_sources_is_named_with_the_files(self, cluster_check):
        problem = problem_of(cluster_check, "copy")
        assert "runs other aepo sources than the driver" in problem
        assert str(cluster_check["root"] / "copy" / "aepo") in problem
        assert f"files that differ: {CHANGED_FILE}" in problem
        # same version string: the check it replaces passed this node
        assert "has aepo" not in problem

    def test_a_node_whose_plugin_cannot_load_is_named(self, cluster_check):
        problem = problem_of(cluster_check, "plugin")
        assert "verl does not register the agent loop 'aepo_temperature_agent'" in problem
        assert "its entry point aepo.backends.verl.plugin fails: ImportError: simulated" in problem

    def test_a_node_where_verl_skips_plugins_is_named(self, cluster_check):
        (problem,) = check_ids_named(cluster_check, "no_plugins")
        assert "VERL_USE_EXTERNAL_PLUGINS=none there skips it" in problem
        assert "other aepo sources" not in problem

    def test_a_broken_flash_attn_is_named_per_node(self, cluster_check):
        (problem,) = check_ids_named(cluster_check, "flash")
        assert "flash-attn is installed but its kernels do not import (ImportError:" in problem
        assert "undefined symbol" in problem and "pip uninstall flash-attn" in problem
        # transformers imports flash-attn to test its availability: verl's agent-loop module
        # fails there too, said on the same line
        assert "verl.experimental.agent_loop.agent_loop does not import" in problem

    def test_a_node_that_sees_another_checkpoint_folder_is_named(self, cluster_check):
        (problem,) = check_ids_named(cluster_check, "storage")
        elsewhere = cluster_check["root"] / "elsewhere"
        assert (
            f"trainer.default_local_dir=checkpoints is {elsewhere / 'checkpoints'} there" in problem
        )
        assert "FileNotFoundError" in problem and "NFS" in problem
        # the marker is removed after the check
        assert not list((cluster_check["root"] / "head" / "checkpoints").iterdir())

    def test_only_the_bad_nodes_are_named(self, cluster_check):
        named = {
            node
            for node in cluster_check["ids"]
            if any(
                cluster_check["ids"][node][:12] in line
                for line in cluster_check["error"].splitlines()
            )
        }
        assert named == {"copy", "plugin", "no_plugins", "flash", "storage"}


@pytest.fixture
def healthy_two_nodes(tmp_path):
    from ray.cluster_utils import Cluster

    here, env_before = os.getcwd(), os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(PROJECT_ROOT)
    os.chdir(tmp_path)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield tmp_path
    finally:
        ray.shutdown()
        cluster.shutdown()
        os.chdir(here)
        if env_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_before


def test_two_healthy_nodes_on_shared_storage_pass(healthy_two_nodes):
    from aepo.backends.verl.cluster import check_nodes, record_driver

    folder = healthy_two_nodes / "checkpoints"
    config = OmegaConf.create(
        {"trainer": {"default_local_dir": str(folder), "save_freq": 10, "resume_mode": "auto"}}
    )
    record_driver(config)
    reports = check_nodes(config=config)
    assert len(reports) == 2
    assert all(r.storage is not None and r.storage.path == str(folder) for r in reports)
    assert all(r.plugin_problem is None and r.sources is not None for r in reports)
    assert os.listdir(folder) == []
    assert sys.modules.get("flash_attn") is None
