"""Symbolic answer checks in worker processes that are killed at a deadline.

sympy can spend minutes or gigabytes on a short answer (``(x+1)^{999999}``, eighteen nested
braces), and no pattern list catches every such form. A thread cannot be stopped while it runs
a C-level big-integer power, so the check runs in a separate process instead: a call that is
not answered by its deadline kills the worker and scores 0, and every worker runs under an
address-space limit (``RLIMIT_AS``), so a memory bomb ends in a ``MemoryError`` inside the
worker rather than in the kernel's OOM killer.

Workers are forked from a *template* process started with ``subprocess`` (fork + exec, safe in
a process that runs threads, unlike ``os.fork``), which imports sympy and math-verify once: a
replacement for a killed worker is a ``fork`` of an already-loaded, single-threaded process
(milliseconds) rather than a fresh interpreter (a second or more). The template passes each
new worker's socket back with ``SCM_RIGHTS`` (:func:`socket.send_fds`), the mechanism
:mod:`multiprocessing.forkserver` uses; we do not use ``multiprocessing`` itself because its
children re-import the caller's ``__main__`` (a training script) and cannot be started from a
daemonic process (a ``multiprocessing.Pool`` worker). Workers and the template exit when the
caller's end of their socket closes, so nothing outlives the caller.

Each worker is single-threaded and handles one call at a time, so mpmath's process-wide
precision (which sympy raises and restores around numeric evaluation, and which concurrent
threads leave raised) cannot leak between callers; it is also reset before every call.
The template runs with ``PYTHONHASHSEED=0`` so that set and dict orders inside sympy are the
same in every run.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 0.7
"""Wall-clock seconds a call may take, waiting for a free worker included. Below one second so
that a caller's slowest call, kill and bookkeeping included, stays under a second."""

DEFAULT_MEMORY_LIMIT_BYTES = 1 << 30
"""Address space a worker may add to what the loaded template already maps."""

DEFAULT_MAX_WORKERS = 4
WORKER_NICENESS = 5
CALLS_PER_WORKER = 2000
"""A worker is replaced after this many calls, so caches inside sympy cannot grow for ever."""

TIMED_OUT = "no verdict within the time limit"
OUT_OF_MEMORY = "no verdict within the memory limit"
WORKER_DIED = "the checking process died"
UNREADABLE = "answer unreadable"

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


def _recv(sock: socket.socket, deadline: float | None = None):
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))
    return json.loads(_recv_exact(sock, size, deadline))


def _env_number(name: str, default: float, kind=float):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        logger.warning("ignoring %s=%r (not a number); using %s", name, raw, default)
        return default
    return value


# --- inside the template and the workers -----------------------------------------------------


def _address_space_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _limit_memory(extra_bytes: int) -> None:
    if extra_bytes <= 0:
        return
    current = _address_space_bytes()
    if not current:
        return  # no /proc: the deadline still bounds the call
    limit = current + extra_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _serve(sock: socket.socket, memory_limit: int) -> None:
    """A worker's loop: one (answer, ground truth) in, one [correct, problem, retiring] out."""
    from aepo.rewards.math_reward import symbolic_verdict

    _limit_memory(memory_limit)
    # A worker past its deadline burns a core until the caller's kill arrives; below the
    # caller's priority it cannot delay that kill on a busy machine.
    os.nice(WORKER_NICENESS)
    for served in range(1, CALLS_PER_WORKER + 1):
        try:
            answer, truth = _recv(sock)
        except (EOFError, OSError, ValueError):
            return
        retiring = served == CALLS_PER_WORKER
        try:
            correct, problem = symbolic_verdict(answer, truth)
        except MemoryError:
            # the heap may be fragmented or half-built objects left behind: start afresh
            correct, problem, retiring = False, OUT_OF_MEMORY, True
        except BaseException:  # RecursionError and anything sympy raises: score 0, carry on
            correct, problem = False, UNREADABLE
        try:
            _send(sock, [bool(correct), problem, retiring])
        except OSError:
            return
        if retiring:
            return


def _template_main(control_fd: int, memory_limit: int) -> None:
    control = socket.socket(fileno=control_fd)
    import aepo.rewards.math_reward as math_reward

    # Load the parser's grammar and sympy's lazily imported modules once, here, rather than
    # in every worker forked from this process.
    for answer, truth in [("1", "1"), ("(3, \\frac{\\pi}{2})", "[2, 5)"), ("x^2+1", "\\{1,2\\}")]:
        math_reward.symbolic_verdict(answer, truth)
    # Workers are never waited for one by one: let the kernel reap them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    _send(control, {"ready": os.getpid()})
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
                _serve(theirs, memory_limit)
            finally:
                os._exit(0)
        theirs.close()
        socket.send_fds(control, [_HEADER.pack(pid)], [ours.fileno()])
        ours.close()


# --- in the caller ---------------------------------------------------------------------------


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
    """The template process could not be started (the caller then checks in-process)."""


class WorkerPool:
    """Up to ``max_workers`` checking processes shared by all threads of one process."""

    def __init__(
        self,
        max_workers: int = DEFAULT_MAX_WORKERS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
    ):
        self.max_workers = max(1, int(max_workers))
        self.timeout_s = float(timeout_s)
        self.memory_limit_bytes = int(memory_limit_bytes)
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
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
                    "_template_main(int(sys.argv[1]), int(sys.argv[2]))",
                    str(theirs.fileno()),
                    str(self.memory_limit_bytes),
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
                f"the answer-checking process did not start ({type(err).__name__})"
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
                        raise SandboxUnavailable("the answer-checking process stopped") from None
        raise AssertionError("unreachable")

    # Workers ------------------------------------------------------------------------------

    def _acquire(self, deadline: float) -> _Worker | None:
        """An idle worker, or None if none is free by the deadline. New workers are forked in
        the background: on a busy machine a fork can take longer than a call may."""
        with self._cond:
            while True:
                if self._idle:
                    return self._idle.pop()
                if self._failure is not None:
                    raise SandboxUnavailable(self._failure)
                if self._count < self.max_workers:
                    self._count += 1
                    self._wanted += 1
                    self._cond.notify_all()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

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
                    self._failure = f"cannot start an answer-checking worker: {err}"
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

    def verdict(self, answer: str, truth: str) -> tuple[bool, str | None, bool]:
        """(correct, why it could not be compared, timed out or out of memory)."""
        if not self._started:
            # once per process, not counted against the deadline; a template that dies later
            # is restarted by the background fork, while callers wait no longer than a call may
            self.start()
        deadline = time.monotonic() + self.timeout_s
        worker = self._acquire(deadline)
        if worker is None:
            return False, TIMED_OUT, True
        try:
            _send(worker.sock, [answer, truth])
            correct, problem, retiring = _recv(worker.sock, deadline)
        except TimeoutError:
            self.kills += 1
            worker.kill()
            self._release(None, replace=True)
            return False, TIMED_OUT, True
        except (EOFError, OSError, ValueError):
            # killed by the kernel, or a crash in C code: no verdict, no retry
            worker.kill()
            self._release(None, replace=True)
            return False, WORKER_DIED, True
        if retiring:
            worker.sock.close()  # it exits by itself; its pid may soon be another process's
            self._release(None, replace=True)
        else:
            self._release(worker)
        return bool(correct), problem, problem == OUT_OF_MEMORY

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


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def pool() -> WorkerPool:
    """This process's pool (a forked child gets its own: it must not share the parent's
    sockets). Settings come from ``AEPO_REWARD_TIMEOUT`` (seconds), ``AEPO_REWARD_WORKERS``
    and ``AEPO_REWARD_MEMORY_MB`` when set."""
    global _POOL
    current = _POOL
    if current is not None and current._pid == os.getpid():
        return current
    with _POOL_LOCK:
        if _POOL is None or _POOL._pid != os.getpid():
            _POOL = WorkerPool(
                max_workers=_env_number("AEPO_REWARD_WORKERS", DEFAULT_MAX_WORKERS, int),
                timeout_s=_env_number("AEPO_REWARD_TIMEOUT", DEFAULT_TIMEOUT_S),
                memory_limit_bytes=int(
                    _env_number("AEPO_REWARD_MEMORY_MB", DEFAULT_MEMORY_LIMIT_BYTES >> 20) * 2**20
                ),
            )
        return _POOL


@atexit.register
def _close_pool() -> None:
    if _POOL is not None and _POOL._pid == os.getpid():
        _POOL.close()
