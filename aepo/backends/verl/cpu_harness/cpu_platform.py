"""Run verl 0.9.1's real workers on a machine without a GPU: a CPU stand-in platform.

verl has no CPU platform: ``get_platform()`` falls back to CUDA (plugin/platform/
platform_manager.py) and its FSDP engines are registered for cuda/npu only
(workers/engine/fsdp/transformer_impl.py). This module registers ``cpu_standin``, a
CUDA platform whose device is the CPU, and selects the CUDA engine classes through
``VERL_ENGINE_DEVICE`` (workers/engine/base.py).

Two ways to use it:

- **Every process of a real run** (driver, Ray actors, vLLM engine and worker processes):
  ``VERL_USE_EXTERNAL_MODULES=aepo.backends.verl.cpu_harness.cpu_platform VERL_PLATFORM=cpu_standin``
  in the environment. ``import verl`` imports this module (verl/__init__.py) and the
  platform manager then picks ``cpu_standin`` by name. ``cpu_environment()`` returns these
  variables. Used by ``make e2e`` (tests/e2e/test_e2e_verl_cpu.py).
- **One process** (unit tests that build a worker directly): ``install()`` sets the platform
  and opens a one-rank gloo process group.

Use FSDP2 (``actor_rollout_ref.{actor,ref}.strategy=fsdp2``, FSDP1 wants a GPU for
``sync_module_states``) and sdpa attention without remove-padding (no flash-attn on CPU).
"""

from __future__ import annotations

import os
import socket
import sys
import types

import torch
import torch.distributed.fsdp

PLATFORM_NAME = "cpu_standin"


class _CPUDeviceModule(types.ModuleType):
    """``torch.cpu`` plus the ``torch.cuda`` calls verl makes (memory stats, names)."""

    def __getattr__(self, name):
        if hasattr(torch.cpu, name):
            return getattr(torch.cpu, name)
        if name.startswith(("max_memory", "memory_")):
            return lambda *a, **k: 0
        return lambda *a, **k: None

    @staticmethod
    def current_device():
        return 0

    @staticmethod
    def is_available():
        return True

    @staticmethod
    def mem_get_info(*args, **kwargs):
        return (16 << 30, 32 << 30)

    @staticmethod
    def get_device_name(*args, **kwargs):
        return "NVIDIA H100 80GB HBM3"  # FlopsCounter needs a known device for its MFU


_DEVICE_MODULE = _CPUDeviceModule("verl_cpu_device")


def _platform_class():
    from verl.plugin.platform.platform_cuda import PlatformCUDA
    from verl.plugin.platform.platform_manager import PlatformRegistry

    @PlatformRegistry.register(platform=PLATFORM_NAME)
    class CPUStandinPlatform(PlatformCUDA):
        @property
        def device_name(self):
            return "cpu"

        @property
        def device_module(self):
            return _DEVICE_MODULE

        def current_device(self):
            return "cpu"

        def set_device(self, device_index):
            pass

        def synchronize(self, device_index=None):
            pass

        def empty_cache(self):
            pass

        def communication_backend_name(self):
            return "gloo"

        def get_device_capability(self, device_index=0):
            return (9, 0)

        def is_available(self):
            return True

        def is_ipc_supported(self):
            # verl then syncs weights into vLLM through shared memory, not CUDA IPC.
            return False

        def set_allocator_settings(self, settings):
            pass

    return CPUStandinPlatform


class _UnpinnedCPUOffloadPolicy(torch.distributed.fsdp.CPUOffloadPolicy):
    """FSDP2 forward-only engines (the reference model) offload to pinned CPU memory
    (verl workers/engine/fsdp/transformer_impl.py); pinning needs an accelerator."""

    def __init__(self, pin_memory: bool = True):
        super().__init__(pin_memory=False)


def _patch_verl_for_cpu() -> None:
    # verl's FSDP modules import the policy from torch by name: swap it in torch for those
    # not imported yet and in those already imported (a test may import them first).
    torch.distributed.fsdp.CPUOffloadPolicy = _UnpinnedCPUOffloadPolicy
    for name in ("verl.utils.fsdp_utils", "verl.workers.engine.fsdp.transformer_impl"):
        if name in sys.modules:
            sys.modules[name].CPUOffloadPolicy = _UnpinnedCPUOffloadPolicy
    os.environ["VERL_ENGINE_DEVICE"] = "cuda"

    # verl builds "cpu:gloo,{device}:{backend}" = "cpu:gloo,cpu:gloo" for a CPU device name
    # (utils/distributed.py), which torch rejects as a duplicate; plain gloo is right.
    import verl.utils.distributed as distributed

    original = distributed.initialize_global_process_group_ray
    if getattr(original, "_aepo_cpu", False):
        return

    def initialize_with_gloo(timeout_second=None, backend=None):
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    initialize_with_gloo._aepo_cpu = True
    distributed.initialize_global_process_group_ray = initialize_with_gloo

    # In a vLLM process: vLLM's CPU backend packs each linear weight into a oneDNN handle and
    # replaces ``layer.weight`` with an empty Parameter (vllm 0.27 model_executor/layers/
    # utils.py, from linear.py), so verl's in-place weight sync has nothing to
    # load into and vLLM would keep serving the initial weights. The torch fallback reads
    # ``layer.weight`` on every call.
    if "vllm" in sys.modules:
        import vllm._custom_ops as vllm_ops

        vllm_ops._supports_onednn = False


def cpu_environment() -> dict[str, str]:
    """Environment variables that load this platform in every process of a verl run."""
    return {
        "VERL_USE_EXTERNAL_MODULES": __name__,
        "VERL_PLATFORM": PLATFORM_NAME,
        "VERL_ENGINE_DEVICE": "cuda",
    }


def install() -> None:
    """Use the CPU platform in this process only, with a one-rank gloo process group
    (which ``initialize_global_process_group_ray`` then leaves alone,
    utils/distributed.py)."""
    from verl.plugin.platform import platform_manager

    platform_manager.set_platform(CPUStandinPlatform())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    os.environ.update(env)
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)


CPUStandinPlatform = _platform_class()
_patch_verl_for_cpu()
