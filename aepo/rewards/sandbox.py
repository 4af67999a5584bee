"""A pool of worker processes that runs one named function under a CPU-time budget.

The pool knows nothing of what it runs: :class:`WorkerPool` takes the function as
``"module:name"``. The math reward runs :func:`aepo.rewards.verdict.symbolic_verdict` in it,
because sympy can spend minutes or gigabytes on a short answer (``(x+1)^{999999}``, eighteen
nested braces), no pattern list catches every such form, and a thread cannot be stopped while
it runs a C-level big-integer power.

The processes are pebble's :class:`pebble.ProcessPool` (per-task timeouts, a worker replaced
when it dies or is stopped, an initializer per worker), started through ``multiprocessing``'s
*forkserver*: a process with the function's module already imported forks each worker, which is
safe in a caller that runs threads (unlike ``fork``) and costs milliseconds rather than the
second or more of a fresh interpreter. What this module adds is the budget:

* **CPU time, not the wall clock, decides.** Each call may use ``cpu_budget_s`` of its worker's
  CPU time: a profiling timer (``ITIMER_PROF``) raises inside Python code there, and a second
  timer (``ITIMER_VIRTUAL``, its signal left at the default action) ends a worker that went
  ``_CPU_GRACE_S`` past it inside one C call, where no Python handler runs. A process's CPU time
  does not depend on what else the machine runs, so the same call gets the same outcome on an
  idle and on a loaded machine.
* **Memory.** Each worker runs under an address-space limit (``RLIMIT_AS``) of
  ``memory_limit_bytes`` over what it maps once warmed up, so a memory bomb ends inside the
  worker rather than in the kernel's OOM killer.
* **The wall clock is the last resort**, for a worker that gets no CPU at all: a call it stops
  is reported as :data:`MACHINE_BUSY` (the worker used less than its budget, or its own timers
  would have stopped it first), which the caller must neither cache nor take for a result.

Each worker handles one call at a time, so process-wide state (such as the mpmath precision
that sympy raises and restores, and which concurrent threads leave raised) cannot leak between
callers. The forkserver starts with ``PYTHONHASHSEED=0``, so set and dict orders inside sympy
are the same in every run. A daemonic process (a ``multiprocessing.Pool`` worker) may not start
processes: there :class:`SandboxUnavailable` is raised and the caller runs the function itself.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import importlib
import multiprocessing
import multiprocessing.util
import os
import resource
import signal
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pebble

DEFAULT_CPU_BUDGET_S = 0.5
"""CPU seconds one call may use. This, not the wall clock, decides which calls are too
costly: a process's CPU time does not depend on what else the machine runs, so the same call
gets the same outcome on an idle and on a loaded machine."""

DEFAULT_TIMEOUT_S = 5.0
"""Wall-clock seconds a call may take, waiting for a free worker included: the last resort,
for a worker that makes no progress at all. It is not what bounds an ordinary call: on a
machine that gives each worker a quarter of a core the CPU budget stops any call within
about a second. A call stopped by this limit is :data:`MACHINE_BUSY` (counted, never cached)."""

_CPU_GRACE_S = 0.05
"""CPU time past the budget after which a worker inside one long C call (such as a big-integer
power, where no Python signal handler runs) is ended by the kernel."""

DEFAULT_MEMORY_LIMIT_BYTES = 1 << 30
"""Address space a worker may add to what it maps once warmed up."""

DEFAULT_MAX_WORKERS = 4
CALLS_PER_WORKER = 2000
"""A worker is replaced after this many calls, so caches inside sympy cannot grow for ever."""

OVER_CPU_BUDGET = "no verdict within the CPU-time budget"
OUT_OF_MEMORY = "no verdict within the memory limit"
MACHINE_BUSY = "no verdict within the wall-clock limit, the CPU-time budget unused (busy machine)"
WORKER_DIED = "the checking process died"
RAISED = "the function raised"

LOAD_DEPENDENT = frozenset({MACHINE_BUSY, WORKER_DIED})
"""Problems that say nothing about the arguments: the same call on a less busy machine (or in
a worker that was not killed from outside) could have returned. Not to be cached."""
STOPPED = frozenset({OVER_CPU_BUDGET, OUT_OF_MEMORY}) | LOAD_DEPENDENT
"""Problems of a call that a limit (or the machine) stopped, rather than one that raised."""

_START_TIMEOUT_S = 120.0  # importing sympy on a busy machine can take many seconds
_RETIRED = 75
"""Exit status of a worker that retires at its next call (it ran out of memory): that call did
not run, and is sent again."""


class SandboxUnavailable(RuntimeError):
    """No worker could be started (the caller then runs the function itself)."""


# --- inside the workers ----------------------------------------------------------------------


def _named(target: str) -> Callable:
    """The function ``"module:name"`` names."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _address_space_bytes(field: str = "VmSize") -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _limit_memory(extra_bytes: int) -> int | None:
    """Set the address-space limit; returns it (None when there is none)."""
    if extra_bytes <= 0:
        return None
    current = _address_space_bytes()
    if not current:
        return None  # no /proc: the CPU budget still bounds the call
    limit = current + extra_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return limit


_NEAR_LIMIT_BYTES = 4 << 20
"""A worker whose peak address space came this close to its limit ran out of memory, though an
``except Exception`` in the function (math-verify has one) may have turned the MemoryError into
an ordinary result (Python maps memory in arenas of at most 1 MiB, so a failed one leaves the
peak this close)."""


class _OverCpuBudget(BaseException):
    """Raised by the profiling timer: a BaseException, so that an ``except Exception`` in the
    function (math-verify and sympy have many) cannot swallow it."""


class _Worker:
    """What a worker process keeps between calls (one per process, set by the initializer)."""

    function: Callable | None = None
    target = ""
    cpu_budget_s = DEFAULT_CPU_BUDGET_S
    memory_limit: int | None = None
    warmed_peak = 0
    retiring = False
    armed = False


def _stop_at_cpu_budget(signum, frame) -> None:
    if _Worker.armed:
        raise _OverCpuBudget


def _start_worker(
    target: str, preload: tuple[str, ...], memory_limit: int, cpu_budget_s: float
) -> None:
    """pebble's initializer: find the function and import the preload modules (no cost when
    the forkserver imported them; it did not when another pool of this process started it),
    then set the limits."""
    for module in preload:
        importlib.import_module(module)
    _Worker.function, _Worker.target = _named(target), target
    _Worker.cpu_budget_s = cpu_budget_s
    _Worker.memory_limit = _limit_memory(memory_limit)
    _Worker.warmed_peak = _address_space_bytes("VmPeak")
    signal.signal(signal.SIGPROF, _stop_at_cpu_budget)
    # the default action of SIGVTALRM ends the process, inside a C call too
    signal.signal(signal.SIGVTALRM, signal.SIG_DFL)


def _call(target: str, arguments: tuple) -> tuple[Any, str | None, float]:
    """One call in a worker: (result, problem, CPU seconds)."""
    if _Worker.retiring or target != _Worker.target:
        os._exit(_RETIRED)
    started = time.process_time()
    result, problem = None, None
    try:
        _Worker.armed = True
        signal.setitimer(signal.ITIMER_PROF, _Worker.cpu_budget_s)
        signal.setitimer(signal.ITIMER_VIRTUAL, _Worker.cpu_budget_s + _CPU_GRACE_S)
        try:
            result = _Worker.function(*arguments)
        finally:
            _Worker.armed = False
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    except _OverCpuBudget:
        # the worker and its warm caches stay: a function run here must keep only finished
        # results in its caches (functools.lru_cache does) and reset process-wide state it
        # depends on at the start of a call
        problem = OVER_CPU_BUDGET
    except MemoryError:
        # the heap may be fragmented or half-built objects left behind: start afresh
        problem, _Worker.retiring = OUT_OF_MEMORY, True
    except BaseException:  # RecursionError and anything the function raises: carry on
        problem = RAISED
    peak = _address_space_bytes("VmPeak")
    limit = _Worker.memory_limit
    if limit is not None and peak > _Worker.warmed_peak and peak >= limit - _NEAR_LIMIT_BYTES:
        # the peak never falls again: the next call would look out of memory too
        result, problem, _Worker.retiring = None, OUT_OF_MEMORY, True
    return result, problem, time.process_time() - started


# --- in the caller ---------------------------------------------------------------------------

_OPEN_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


_FORKSERVER_LOCK = threading.Lock()


def _forget_the_parents_forkserver() -> None:
    """In a forked child: multiprocessing (3.10-3.12) keeps the parent's forkserver as its own,
    then fails waiting for a process that is not its child; start one of its own instead. The
    inherited end of the parent's liveness pipe is closed, so the parent's server still ends
    with the parent."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is None:
        return
    if server._forkserver_alive_fd is not None:
        try:
            os.close(server._forkserver_alive_fd)
        except OSError:
            pass
    server._forkserver_alive_fd = None
    server._forkserver_address = None
    server._forkserver_pid = None
    server._lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_the_parents_forkserver)


def _forkserver(preload: list[str]) -> multiprocessing.context.BaseContext:
    """The forkserver context, its server started with ``preload`` imported and a fixed hash
    seed (one server per process: a server someone else started keeps its settings)."""
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    with _FORKSERVER_LOCK:
        if getattr(forkserver._forkserver, "_forkserver_pid", None) is None:
            context.set_forkserver_preload(preload)
            saved = os.environ.get("PYTHONHASHSEED")
            os.environ["PYTHONHASHSEED"] = "0"
            try:
                forkserver.ensure_running()
            finally:
                if saved is None:
                    del os.environ["PYTHONHASHSEED"]
                else:
                    os.environ["PYTHONHASHSEED"] = saved
    return context


class WorkerPool:
    """Up to ``max_workers`` processes that run ``function`` (``"module:name"``), shared by all
    threads of one process. The process they are forked from imports the function's module and
    the ``preload`` modules first, once: a module whose import warms caches (for the reward,
    :mod:`aepo.rewards.verdict_warm`) makes a call cost about the same CPU time in a fresh
    worker as in one that has run for hours."""

    def __init__(
        self,
        function: str,
        preload: tuple[str, ...] = (),
        max_workers: int = DEFAULT_MAX_WORKERS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
        cpu_budget_s: float = DEFAULT_CPU_BUDGET_S,
    ):
        self.function = function
        self.preload = tuple(preload)
        self.max_workers = max(1, int(max_workers))
        self.timeout_s = float(timeout_s)
        self.cpu_budget_s = float(cpu_budget_s)
        self.memory_limit_bytes = int(memory_limit_bytes)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._pool: pebble.ProcessPool | None = None
        self._closed = False
        self.kills = 0
        self.max_cpu_s = 0.0  # the most CPU time one answered call used (benchmarks read it)
        _OPEN_POOLS.add(self)
        _close_at_exit()

    def start(self) -> None:
        """Start the workers now (a second or more: they import and warm up the function)
        rather than on the first call."""
        pool = self._running_pool()
        try:
            futures = [
                pool.schedule(os.getpid, timeout=_START_TIMEOUT_S) for _ in range(self.max_workers)
            ]
            for future in futures:
                future.result(timeout=_START_TIMEOUT_S)
        except Exception as err:
            raise SandboxUnavailable(
                f"the workers for {self.function} did not start ({type(err).__name__}: {err})"
            ) from err

    def _running_pool(self) -> pebble.ProcessPool:
        with self._lock:
            if self._closed:
                raise SandboxUnavailable("the pool is closed")
            if self._pool is None or not self._pool.active:
                if multiprocessing.current_process().daemon:
                    raise SandboxUnavailable(
                        "a daemonic process (a multiprocessing.Pool worker) may not start "
                        "worker processes"
                    )
                # the forkserver imports these once; every worker is a fork of it
                context = _forkserver([self.function.partition(":")[0], *self.preload])
                try:
                    self._pool = pebble.ProcessPool(
                        max_workers=self.max_workers,
                        max_tasks=CALLS_PER_WORKER,
                        initializer=_start_worker,
                        initargs=(
                            self.function,
                            self.preload,
                            self.memory_limit_bytes,
                            self.cpu_budget_s,
                        ),
                        context=context,
                    )
                except OSError as err:
                    raise SandboxUnavailable(f"cannot start workers: {err}") from err
            return self._pool

    @property
    def template_pid(self) -> int | None:
        """The forkserver's pid (the process every worker is forked from)."""
        from multiprocessing import forkserver

        return getattr(forkserver._forkserver, "_forkserver_pid", None)

    def idle_worker_pids(self) -> list[int]:
        """The workers' pids (tests read them; pebble keeps them in its worker manager)."""
        if self._pool is None:
            return []
        manager = self._pool._pool_manager.worker_manager
        return sorted(pid for pid, process in manager.workers.items() if process.is_alive())

    def call(self, *arguments: Any) -> tuple[Any, str | None]:
        """(the function's result, None), or (None, why there is none): a limit stopped it
        (:data:`STOPPED`) or it raised (:data:`RAISED`). A problem in :data:`LOAD_DEPENDENT`
        says nothing about the arguments."""
        if self._pool is None:
            # once per process, not counted against the deadline: the workers' start
            self.start()
        pool = self._running_pool()
        deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, MACHINE_BUSY
            future = pool.schedule(_call, args=(self.function, arguments), timeout=remaining)
            try:
                result, problem, cpu_s = future.result(timeout=remaining)
            except concurrent.futures.TimeoutError:
                # pebble's own timeout (the call ran that long) or ours (it waited for a
                # worker): either way the worker did not use its budget, or its timers would
                # have ended the call first
                if future.running():
                    self.kills += 1
                future.cancel()  # a running call's worker is stopped by pebble
                return None, MACHINE_BUSY
            except pebble.ProcessExpired as err:
                if err.exitcode == _RETIRED:
                    continue  # the worker retired without running this call: send it again
                if err.exitcode == -signal.SIGVTALRM:
                    self.kills += 1
                    return None, OVER_CPU_BUDGET
                return None, WORKER_DIED  # killed by the kernel or from outside: no retry
            if problem is None and cpu_s > self.max_cpu_s:
                self.max_cpu_s = cpu_s
            return result, problem

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None and os.getpid() == self._pid:
            pool.stop()
            pool.join(timeout=5)


def _close_pools() -> None:
    for open_pool in list(_OPEN_POOLS):
        if open_pool._pid == os.getpid():
            open_pool.close()


atexit.register(_close_pools)
_FINALIZED_IN: set[int] = set()


def _close_at_exit() -> None:
    """Close this process's pools when it ends. A ``multiprocessing`` child skips atexit and
    joins its children (the workers, which wait for calls) as it ends, so there the pools must
    close in one of multiprocessing's own finalizers, which run first."""
    if os.getpid() not in _FINALIZED_IN:
        _FINALIZED_IN.add(os.getpid())
        multiprocessing.util.Finalize(None, _close_pools, exitpriority=10)
