"""A pool of worker processes that runs one named function under a CPU-time budget.

The pool knows nothing of what it runs: :class:`WorkerPool` takes the function as
``"module:name"`` (its arguments and result travel as JSON). The math reward runs
:func:`aepo.rewards.verdict.symbolic_verdict` in it, because sympy can spend minutes or
gigabytes on a short answer (``(x+1)^{999999}``, eighteen nested braces), no pattern list
catches every such form, and a thread cannot be stopped while it runs a C-level big-integer
power. Each call may use ``cpu_budget_s`` of CPU time: the worker's profiling timer (``ITIMER_PROF``) stops it
there, and the caller, which reads the worker's CPU time from ``/proc``, kills a worker that
went past it inside one C call. CPU time rather than the wall clock decides, so which answers
are too costly does not depend on the machine's load. A wall-clock limit on the call in its worker
(the wait for a free worker not counted) remains as the last resort; a call it stops before
the worker used its budget is reported as
:data:`MACHINE_BUSY`, which the caller neither caches nor mistakes for a verdict. Every worker
runs under an address-space limit (``RLIMIT_AS``), so a memory bomb ends inside the worker
rather than in the kernel's OOM killer.

Workers are forked from a *template* process started with ``subprocess`` (fork + exec, safe in
a process that runs threads, unlike ``os.fork``), which imports the function's module and runs
the pool's ``warm_up`` function once (for the reward: sympy, math-verify, their caches): a
replacement for a killed worker is a ``fork`` of an already-loaded, single-threaded process
(milliseconds) rather than a fresh interpreter (a second or more). The template passes each
new worker's socket back with ``SCM_RIGHTS`` (:func:`socket.send_fds`), the mechanism
:mod:`multiprocessing.forkserver` uses; we do not use ``multiprocessing`` itself because its
children re-import the caller's ``__main__`` (a training script) and cannot be started from a
daemonic process (a ``multiprocessing.Pool`` worker). Workers and the template exit when the
caller's end of their socket closes, so nothing outlives the caller.

A library pool on ``multiprocessing`` has the same two limits: pebble 5.2.3's ``ProcessPool``
on a forkserver keeps the CPU budget, the memory limit and every verdict of
``scripts/bench_reward_fuzz.py`` (0 of 10,000 differ), but starts no worker in a daemonic
process (``AssertionError``, the reward then checks in-process without a time limit) and
re-runs a caller's script that lacks ``if __name__ == "__main__":`` in every worker
(bootstrapping errors, every worker dead). ``tests/rewards/test_reward_bounds.py`` holds both cases.

Each worker is single-threaded and handles one call at a time, so process-wide state (such as
the mpmath precision that sympy raises and restores, and which concurrent threads leave raised)
cannot leak between callers. The template runs with ``PYTHONHASHSEED=0`` so that set and dict orders inside sympy are the
same in every run.
"""

from __future__ import annotations

import atexit
import collections
import importlib
import json
import logging
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_CPU_BUDGET_S = 0.5
"""CPU seconds one call may use. This, not the wall clock, decides which answers are
too costly to check: a process's CPU time does not depend on what else the machine runs, so
the same answer gets the same verdict on an idle and on a loaded machine."""

DEFAULT_TIMEOUT_S = 5.0
"""Wall-clock seconds a call may run in its worker, counted from when a worker takes it: the
last resort, for a worker that makes no progress at all. It is not what bounds an ordinary
call: the CPU budget stops any answer within ``cpu_budget_s`` of the worker's CPU time, at
most 2.4 s of wall time where four workers share one core. The wait for a free worker is not
counted: 32 threads queued behind answers that each use the whole budget wait longer than 5 s
on one core, and a wall clock that counted the queue scored correct answers 0 there
(``docs/reward.md``, the load table). A call stopped by this limit before its worker used the
CPU budget scored 0 only because the machine was busy (:data:`MACHINE_BUSY`, counted, never
cached)."""

_CPU_GRACE_S = 0.05
"""CPU time past the budget after which the caller kills a worker that did not stop itself
(it is inside one long C call, such as a big-integer power, where no signal is handled)."""
_CPU_POLL_S = 0.02

DEFAULT_MEMORY_LIMIT_BYTES = 1 << 30
"""Address space a worker may add to what the loaded template already maps."""

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

_HEADER = struct.Struct("!I")
_START_TIMEOUT_S = 120.0  # importing sympy on a busy machine can take many seconds


def _send(sock: socket.socket, obj) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _readable(sock: socket.socket, until: float) -> bool:
    """Whether ``sock`` has data (or was closed) before the monotonic time ``until``."""
    remaining = max(0.0, until - time.monotonic())
    return bool(select.select([sock], [], [], remaining)[0])


def _recv(sock: socket.socket, deadline: float | None = None):
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))
    return json.loads(_recv_exact(sock, size, deadline))


# --- inside the template and the workers -----------------------------------------------------


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
"""A worker whose peak address space came this close to its limit ran out of memory, though
math-verify's ``except Exception`` may have turned the MemoryError into a plain "not equal"
(Python maps memory in arenas of at most 1 MiB, so a failed one leaves the peak this close)."""


class _OverCpuBudget(BaseException):
    """Raised by the profiling timer: a BaseException, so that the ``except Exception`` of
    math-verify and sympy cannot swallow it."""


_budget_armed = False


def _stop_at_cpu_budget(signum, frame) -> None:
    if _budget_armed:
        raise _OverCpuBudget


def _named(target: str) -> Callable:
    """The function ``"module:name"`` names."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _serve(sock: socket.socket, function: Callable, memory_limit: int, cpu_budget_s: float):
    """A worker's loop: one list of arguments in, one [result, problem, retiring, CPU seconds]
    out."""
    global _budget_armed
    limit = _limit_memory(memory_limit)
    inherited_peak = _address_space_bytes("VmPeak")  # the template's, copied by fork
    # ITIMER_PROF counts this process's CPU time (user and system), whatever the load
    signal.signal(signal.SIGPROF, _stop_at_cpu_budget)
    for served in range(1, CALLS_PER_WORKER + 1):
        try:
            arguments = _recv(sock)
        except (EOFError, OSError, ValueError):
            return
        retiring = served == CALLS_PER_WORKER
        started = time.process_time()
        result, problem = None, None
        try:
            _budget_armed = True
            signal.setitimer(signal.ITIMER_PROF, cpu_budget_s)
            try:
                result = function(*arguments)
            finally:
                _budget_armed = False
                signal.setitimer(signal.ITIMER_PROF, 0)
        except _OverCpuBudget:
            # the worker and its warm caches stay: a function run here must keep only
            # finished results in its caches (functools.lru_cache does) and reset
            # process-wide state it depends on at the start of a call
            problem = OVER_CPU_BUDGET
        except MemoryError:
            # the heap may be fragmented or half-built objects left behind: start afresh
            problem, retiring = OUT_OF_MEMORY, True
        except BaseException:  # RecursionError and anything the function raises: carry on
            problem = RAISED
        peak = _address_space_bytes("VmPeak")
        if limit is not None and peak > inherited_peak and peak >= limit - _NEAR_LIMIT_BYTES:
            # the peak never falls again: the next call would look out of memory too
            result, problem, retiring = None, OUT_OF_MEMORY, True
        try:
            _send(sock, [result, problem, retiring, time.process_time() - started])
        except OSError:
            return
        if retiring:
            return


def _template_main(
    control_fd: int, target: str, warm_up: str, memory_limit: int, cpu_budget_s: float
) -> None:
    control = socket.socket(fileno=control_fd)
    function = _named(target)
    # Load and warm once, here, rather than in every worker forked from this process: every
    # fork inherits what warm_up loaded and cached, so a call costs about the same CPU time
    # in any worker, a fresh one included.
    if warm_up:
        _named(warm_up)()
    # Workers are never waited for one by one: let the kernel reap them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        _send(control, {"ready": os.getpid()})
    except OSError:
        return  # the caller went away while this process started
    while True:
        try:
            _recv(control)
        except (EOFError, OSError, ValueError):
            return
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            try:
                control.close()
                ours.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _serve(theirs, function, memory_limit, cpu_budget_s)
            finally:
                os._exit(0)
        theirs.close()
        socket.send_fds(control, [_HEADER.pack(pid)], [ours.fileno()])
        ours.close()


# --- in the caller ---------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of process ``pid`` (to 10 ms), None if it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class _Worker:
    __slots__ = ("pid", "sock")

    def __init__(self, pid: int, sock: socket.socket):
        self.pid = pid
        self.sock = sock

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        self.sock.close()


class SandboxUnavailable(RuntimeError):
    """The template process could not be started (the caller then runs the function itself)."""


_OPEN_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


class WorkerPool:
    """Up to ``max_workers`` processes that run ``function`` (``"module:name"``), shared by all
    threads of one process; ``warm_up`` (``"module:name"``, no arguments) runs once in the
    template that every worker is forked from."""

    def __init__(
        self,
        function: str,
        warm_up: str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
        cpu_budget_s: float = DEFAULT_CPU_BUDGET_S,
    ):
        self.function = function
        self.warm_up = warm_up or ""
        self.max_workers = max(1, int(max_workers))
        self.timeout_s = float(timeout_s)
        self.cpu_budget_s = float(cpu_budget_s)
        self.memory_limit_bytes = int(memory_limit_bytes)
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._waiting: collections.deque[object] = collections.deque()  # callers, oldest first
        self._count = 0  # idle + busy + being forked
        self._start_lock = threading.Lock()
        self._template: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._closed = False
        self._failure: str | None = None
        self._started = False
        self._wanted = 0  # workers the forking thread still has to start
        self._forker: threading.Thread | None = None
        self.kills = 0
        self.max_cpu_s = 0.0  # the most CPU time one answered call used (benchmarks read it)
        self.max_in_worker_s = 0.0  # the longest wall time of a call in its worker, any outcome
        _OPEN_POOLS.add(self)

    # The template -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the template process now (a second or more) rather than on the first call."""
        with self._start_lock:
            if self._forker is None:
                self._forker = threading.Thread(
                    target=self._fork_forever, name="aepo-reward-forker", daemon=True
                )
                self._forker.start()
            if self._template is not None and self._template.poll() is None:
                return
            self._start_template()

    def _start_template(self) -> None:
        if self._control is not None:
            self._control.close()
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONHASHSEED"] = "0"
        # the caller may have found aepo through a sys.path entry the environment lacks
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        try:
            template = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from aepo.rewards.sandbox import _template_main; "
                    "_template_main(int(sys.argv[1]), sys.argv[2], sys.argv[3], "
                    "int(sys.argv[4]), float(sys.argv[5]))",
                    str(theirs.fileno()),
                    self.function,
                    self.warm_up,
                    str(self.memory_limit_bytes),
                    repr(self.cpu_budget_s),
                ],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError as err:
            ours.close()
            raise SandboxUnavailable(f"cannot start {sys.executable}: {err}") from err
        finally:
            theirs.close()
        try:
            _recv(ours, time.monotonic() + _START_TIMEOUT_S)
        except (EOFError, TimeoutError, OSError, ValueError) as err:
            template.kill()
            ours.close()
            raise SandboxUnavailable(
                f"the worker template for {self.function} did not start ({type(err).__name__})"
            ) from err
        ours.settimeout(None)
        self._template, self._control = template, ours
        self._started = True

    def _fork_worker(self) -> _Worker:
        with self._start_lock:
            for attempt in range(2):
                if self._template is None or self._template.poll() is not None:
                    self._start_template()
                try:
                    _send(self._control, {"fork": True})
                    self._control.settimeout(_START_TIMEOUT_S)
                    message, fds, _, _ = socket.recv_fds(self._control, _HEADER.size, 1)
                    self._control.settimeout(None)
                    if len(message) != _HEADER.size or len(fds) != 1:
                        raise EOFError
                    (pid,) = _HEADER.unpack(message)
                    return _Worker(pid, socket.socket(fileno=fds[0]))
                except (EOFError, OSError):
                    self._template.kill()
                    self._template = None
                    if attempt:
                        raise SandboxUnavailable(
                            f"the template for {self.function} stopped"
                        ) from None
        raise AssertionError("unreachable")

    # Workers ------------------------------------------------------------------------------

    def _acquire(self) -> _Worker:
        """An idle worker, as soon as one is free, to callers in the order they came. New
        workers are forked in the background: on a busy machine a fork can take longer than a
        call may. The wait needs no limit of its own: each call ahead ends at its own limits
        (the CPU budget, the wall clock), and first come is first served, so a caller waits
        for the calls queued before it, never for ones that came later (without the order, a
        thread that had just been served took the freed worker again, and one caller waited
        for the whole batch); a template that cannot fork raises here."""
        me = object()
        with self._cond:
            self._waiting.append(me)
            try:
                while True:
                    if self._idle and self._waiting[0] is me:
                        return self._idle.pop()
                    if self._failure is not None:
                        raise SandboxUnavailable(self._failure)
                    if self._closed:
                        raise SandboxUnavailable(f"the pool for {self.function} is closed")
                    if self._count < self.max_workers:
                        self._count += 1
                        self._wanted += 1
                        self._cond.notify_all()
                    self._cond.wait()
            finally:
                self._waiting.remove(me)
                self._cond.notify_all()  # the next in line may take a worker that is idle

    def _fork_forever(self) -> None:
        """Fork the workers callers asked for, one at a time, in this one thread: starting a
        thread per fork would make the caller wait until that thread first runs."""
        while True:
            with self._cond:
                while self._wanted == 0 and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._wanted -= 1
            try:
                worker = self._fork_worker()
            except BaseException as err:  # the callers waiting fall back to checking in-process
                with self._cond:
                    self._failure = f"cannot start a worker for {self.function}: {err}"
                self._release(None)
                continue
            self._release(worker)

    def _release(self, worker: _Worker | None, replace: bool = False) -> None:
        """Return ``worker`` to the idle list, or (None) forget one that is gone; ``replace``
        forks its successor at once, so that the next caller finds it ready."""
        with self._cond:
            if worker is None or self._closed:
                self._count -= 1
                if worker is not None:
                    worker.kill()
                elif replace and not self._closed and self._failure is None:
                    self._count += 1
                    self._wanted += 1
            else:
                self._idle.append(worker)
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        """Whether the process the workers are forked from is up (started and not dead)."""
        return self._template is not None and self._template.poll() is None

    @property
    def template_pid(self) -> int | None:
        return None if self._template is None else self._template.pid

    def idle_worker_pids(self) -> list[int]:
        with self._cond:
            return [worker.pid for worker in self._idle]

    def call(self, *arguments: Any) -> tuple[Any, str | None]:
        """(the function's result, None), or (None, why there is none): a limit stopped it
        (:data:`STOPPED`) or it raised (:data:`RAISED`). A problem in :data:`LOAD_DEPENDENT`
        says nothing about the arguments."""
        if not self._started:
            # once per process, not counted against the wall clock; a template that dies
            # later is restarted by the background fork
            self.start()
        worker = self._acquire()
        # from here, not from the call: time spent queued behind other callers' answers says
        # nothing about whether this worker gets the CPU
        taken = time.monotonic()
        try:
            return self._call_in(worker, arguments, taken + self.timeout_s)
        finally:
            self.max_in_worker_s = max(self.max_in_worker_s, time.monotonic() - taken)

    def _call_in(
        self, worker: _Worker, arguments: tuple, deadline: float
    ) -> tuple[Any, str | None]:
        try:
            cpu_before = _cpu_seconds(worker.pid)
            _send(worker.sock, list(arguments))
            # a worker cannot use its budget in less wall time than that: look no earlier
            check_at = time.monotonic() + self.cpu_budget_s
            while not _readable(worker.sock, min(check_at, deadline)):
                used = None if cpu_before is None else _cpu_seconds(worker.pid)
                if used is not None:
                    used -= cpu_before
                    if used >= self.cpu_budget_s + _CPU_GRACE_S:
                        # inside one long C call, where its own timer cannot stop it
                        return self._kill(worker, OVER_CPU_BUDGET)
                if time.monotonic() >= deadline:
                    if used is not None and used >= self.cpu_budget_s:
                        return self._kill(worker, OVER_CPU_BUDGET)
                    return self._kill(worker, MACHINE_BUSY)
                check_at = time.monotonic() + _CPU_POLL_S
            # the whole reply is there (one small send): no deadline of its own to miss
            result, problem, retiring, cpu_s = _recv(worker.sock, time.monotonic() + 1.0)
        except TimeoutError:
            return self._kill(worker, MACHINE_BUSY)
        except (EOFError, OSError, ValueError):
            # killed by the kernel, or a crash in C code: no verdict, no retry
            return self._kill(worker, WORKER_DIED, counted=False)
        if problem is None and cpu_s > self.max_cpu_s:
            self.max_cpu_s = cpu_s
        if retiring:
            worker.sock.close()  # it exits by itself; its pid may soon be another process's
            self._release(None, replace=True)
        else:
            self._release(worker)
        return result, problem

    def _kill(self, worker: _Worker, problem: str, counted: bool = True) -> tuple[None, str]:
        if counted:
            self.kills += 1
        worker.kill()
        self._release(None, replace=True)
        return None, problem

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            worker.kill()
        if os.getpid() == self._pid and self._control is not None:
            self._control.close()  # the template exits on end of file
            if self._template is not None:
                try:
                    self._template.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._template.kill()


@atexit.register
def _close_pools() -> None:
    for open_pool in list(_OPEN_POOLS):
        if open_pool._pid == os.getpid():
            open_pool.close()
