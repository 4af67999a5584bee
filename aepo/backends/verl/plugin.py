"""Loaded by ``import verl`` in every process (our ``verl.plugins`` entry point).

It must be cheap and safe to run twice: ``import verl`` happens in the driver, the task
runner, every FSDP worker and every agent-loop worker, and most of them never run an agent
loop. So instead of importing verl's agent-loop stack here (about 2 s), we register our
agent loop the moment that stack is imported, in whichever process imports it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys

from aepo.backends.verl._verl_internals import AGENT_LOOP_MODULE

logger = logging.getLogger(__name__)

OUR_AGENT_LOOP_MODULE = "aepo.backends.verl.agent_loop"


def register_agent_loops() -> None:
    """Import our agent-loop module; its ``@register`` decorator fills verl's registry."""
    try:
        importlib.import_module(OUR_AGENT_LOOP_MODULE)
    except Exception:
        # verl swallows plug-in errors at DEBUG level; say it loudly instead, because the
        # symptom otherwise is a far-away "Agent loop aepo_temperature_agent not registered".
        logger.warning("aepo: could not register the AEPO agent loop", exc_info=True)


class _LoaderThenRegister(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        self.inner.exec_module(module)
        register_agent_loops()


class _RegisterWhenAgentLoopImported(importlib.abc.MetaPathFinder):
    """One-shot import hook on verl's agent-loop module."""

    def find_spec(self, fullname, path, target=None):
        if fullname != AGENT_LOOP_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _LoaderThenRegister(spec.loader)
        return spec


def install() -> None:
    if OUR_AGENT_LOOP_MODULE in sys.modules:
        return
    if AGENT_LOOP_MODULE in sys.modules:
        register_agent_loops()
        return
    if not any(isinstance(f, _RegisterWhenAgentLoopImported) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenAgentLoopImported())


install()
