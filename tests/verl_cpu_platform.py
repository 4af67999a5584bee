"""Run verl 0.9.1's real FSDP actor worker on CPU, for tests only.

verl has no CPU platform: ``get_platform()`` falls back to CUDA (plugin/platform/
platform_manager.py:113) and FSDP engines are registered for cuda/npu only
(workers/engine/fsdp/transformer_impl.py:1143). ``install()`` swaps in a platform whose
device is the CPU, selects the CUDA engine class through ``VERL_ENGINE_DEVICE``
(workers/engine/base.py:405) and opens a one-rank gloo process group, which
``initialize_global_process_group_ray`` then leaves alone (utils/distributed.py:90).

Use FSDP2 (``actor_rollout_ref.{actor,ref}.strategy=fsdp2``): FSDP1 wants a GPU for
``sync_module_states``. Attention must not be flash-attn (``sdpa``).
"""

from __future__ import annotations

import os
import socket
import types

import torch


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


def install() -> None:
    from verl.plugin.platform import platform_manager
    from verl.plugin.platform.platform_cuda import PlatformCUDA

    module = _CPUDeviceModule("verl_cpu_device")

    class CPUPlatform(PlatformCUDA):
        @property
        def device_name(self):
            return "cpu"

        @property
        def device_module(self):
            return module

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

    platform_manager.set_platform(CPUPlatform())
    # FSDP2 forward-only engines (the reference model) offload to pinned CPU memory
    # (workers/engine/fsdp/transformer_impl.py:459-462); pinning needs an accelerator.
    from verl.workers.engine.fsdp import transformer_impl

    policy = transformer_impl.CPUOffloadPolicy
    transformer_impl.CPUOffloadPolicy = lambda pin_memory=True: policy(pin_memory=False)
    os.environ["VERL_ENGINE_DEVICE"] = "cuda"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    os.environ.update(env)
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
