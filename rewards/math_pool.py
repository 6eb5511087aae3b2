"""A pool of Math-Verify worker processes with a hard per-item timeout.

Workers are forked by a zygote process (rewards.math_worker) that has Math-Verify imported and warm,
and talk to the pool over a Unix socket in a private temporary folder. Jobs go to a worker in chunks
(fewer messages) and the worker answers each job as soon as it is done; its clock restarts at every
answer, so the timeout applies to one item, not to a chunk. A worker that exceeds it is killed and
replaced: the item in progress scores 0 with reason "timeout" and the rest of its chunk goes back to
the queue. A worker that dies scores its item "error" the same way. Never threads: Math-Verify's own
timeouts rely on signals in a main thread.

This process never signals a worker. Workers are the zygote's children, so the zygote kills them, at
the pool's request, by the serial number it gave each one; it signals only a child it has not reaped
(whose pid cannot have been reused) and answers "not signalled" for one that is gone. The only process
this one signals is its own child, the zygote, through subprocess.Popen (which does not signal a child
it has reaped).

Several batches may be in flight at once, from any threads: `submit` queues a batch's jobs, hands
them to idle workers and returns (no lock is held until collect), so the caller can score other tasks
meanwhile; `MathBatch.collect()` waits for that batch's outcomes. Jobs run in submission order. One
collecting thread at a time reads the workers' answers for every batch (the pump) and routes each by
its ticket to its batch; the others wait for their batch to finish or for the pump to be free. A batch
whose MathBatch is dropped without collect() is abandoned: its jobs not yet sent are skipped.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path

import rewards
from rewards.config import MathConfig
from rewards.math_worker import FORK, FORKED, KILL, KILLED, READY
from rewards.result import ERROR, TIMEOUT

log = logging.getLogger(__name__)

# (reward, reason, latency_ms) for one job
MathOutcome = tuple[float, str, float]


class MathWorkerStartError(RuntimeError):
    """The zygote or a math worker did not report ready within math.startup_timeout_s."""


class _BatchState:
    """The pool's side of one submitted batch: its jobs and the outcomes received so far."""

    __slots__ = ("jobs", "outcomes", "remaining", "abandoned")

    def __init__(self, jobs: Sequence[tuple[str, str]]) -> None:
        self.jobs = jobs
        self.outcomes: list[MathOutcome | None] = [None] * len(jobs)
        self.remaining = len(jobs)
        self.abandoned = False  # its MathBatch is gone, or its collect() failed: nobody wants the rest

    def record(self, position: int, outcome: MathOutcome) -> None:
        if self.outcomes[position] is None:
            self.outcomes[position] = outcome
            self.remaining -= 1

    @property
    def finished(self) -> bool:
        return self.remaining == 0

    def abandon(self) -> None:
        self.abandoned = True

    def results(self) -> list[MathOutcome]:
        return [outcome if outcome is not None else (0.0, ERROR, 0.0) for outcome in self.outcomes]


class _Worker:
    __slots__ = ("serial", "pid", "zygote_pid", "conn", "inflight", "deadline")

    def __init__(self, serial: int, pid: int, zygote_pid: int, conn: Connection) -> None:
        self.serial = serial  # the zygote's name for it; kill requests use this, never the pid
        self.pid = pid
        self.zygote_pid = zygote_pid  # which zygote forked it (a restarted zygote does not own it)
        self.conn = conn
        # (ticket, batch, position) of each job sent and not yet answered, in order
        self.inflight: deque[tuple[int, _BatchState, int]] = deque()
        self.deadline = 0.0


class _Processes:
    """What must be cleaned up even if the pool is never closed (weakref.finalize holds this, not the pool)."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s  # how long the zygote may take to exit once its control connection closes
        self.folder: str | None = None
        self.listener: socket.socket | None = None
        self.zygote: subprocess.Popen[bytes] | None = None
        self.control: Connection | None = None
        # submit() and close() write a byte here to wake a pump waiting on the workers' connections
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)

    def stop_zygote(self) -> None:
        """End the zygote; it kills and reaps its workers when its control connection closes."""
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.zygote is not None:
            try:
                self.zygote.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                self.zygote.kill()  # Popen signals only a child it has not reaped
                self.zygote.wait()
            self.zygote = None
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def cleanup(self) -> None:
        self.stop_zygote()
        for fd in (self.wake_read, self.wake_write):
            if fd >= 0:
                os.close(fd)
        self.wake_read = self.wake_write = -1


class MathVerifierPool:
    """`cfg.workers` Math-Verify worker processes; started on first use or by start()."""

    def __init__(self, cfg: MathConfig) -> None:
        self._cfg = cfg
        self._workers: list[_Worker] = []
        self._queue: deque[tuple[_BatchState, int]] = deque()  # jobs not sent yet, in submission order
        self._tickets = itertools.count()
        self._lock = threading.Lock()  # guards everything above; never held while waiting for answers
        self._changed = threading.Condition(self._lock)  # a batch progressed or the pump became free
        self._pumping = False
        self._closed = False
        self._procs = _Processes(grace_s=cfg.startup_timeout_s)
        self._finalizer = weakref.finalize(self, self._procs.cleanup)
        self.replaced = 0  # workers killed (timeout) or found dead, and replaced

    # ------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> None:
        if self._closed:
            raise RuntimeError("the math worker pool is closed")
        while len(self._workers) < self._cfg.workers:
            self._workers.append(self._fork_worker())

    def _accept(self, expected: str) -> Connection:
        assert self._procs.listener is not None
        try:
            sock, _ = self._procs.listener.accept()
        except TimeoutError as exc:
            raise MathWorkerStartError(
                f"no {expected} connected within math.startup_timeout_s={self._cfg.startup_timeout_s}") from exc
        sock.setblocking(True)
        return Connection(sock.detach())

    def _start_zygote(self) -> None:
        procs = self._procs
        procs.stop_zygote()
        procs.folder = tempfile.mkdtemp(prefix="mimovl-math-")  # mode 0700: only this user can connect
        path = str(Path(procs.folder) / "pool.sock")
        procs.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        procs.listener.bind(path)
        procs.listener.listen()
        procs.listener.settimeout(self._cfg.startup_timeout_s)
        settings = {
            "parsing_timeout_s": self._cfg.parsing_timeout_s,
            "verify_timeout_s": self._cfg.verify_timeout_s,
            "gold_cache_size": self._cfg.gold_cache_size,
        }
        package_root = str(Path(rewards.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        procs.zygote = subprocess.Popen(
            [sys.executable, "-m", "rewards.math_worker", "--socket", path, "--settings", json.dumps(settings)],
            env=env, stdin=subprocess.DEVNULL,
        )
        control = self._accept("math zygote")
        if not control.poll(self._cfg.startup_timeout_s):
            control.close()
            raise MathWorkerStartError("the math zygote connected but did not introduce itself")
        kind, pid = control.recv()
        if kind != "zygote" or pid != procs.zygote.pid:
            control.close()
            raise MathWorkerStartError(f"unexpected first message from the math zygote: {(kind, pid)}")
        procs.control = control

    def _ask_zygote(self, request: object, answer: str) -> tuple:
        procs = self._procs
        assert procs.control is not None
        try:
            procs.control.send(request)
            if not procs.control.poll(self._cfg.startup_timeout_s):
                raise MathWorkerStartError(f"the math zygote did not answer {request!r} within "
                                           f"math.startup_timeout_s={self._cfg.startup_timeout_s}")
            reply = procs.control.recv()
        except (EOFError, OSError) as exc:
            procs.control.close()
            procs.control = None
            raise MathWorkerStartError(f"the math zygote went away during {request!r}") from exc
        if not (isinstance(reply, tuple) and reply and reply[0] == answer):
            raise MathWorkerStartError(f"the math zygote answered {reply!r} to {request!r}")
        return reply

    def _zygote_alive(self) -> bool:
        procs = self._procs
        return procs.zygote is not None and procs.zygote.poll() is None and procs.control is not None

    def _fork_worker(self) -> _Worker:
        procs = self._procs
        if not self._zygote_alive():
            if procs.zygote is not None:
                log.warning("math zygote is gone (exit code %s); starting a new one", procs.zygote.poll())
            self._start_zygote()
        assert procs.zygote is not None
        _, serial, pid = self._ask_zygote(FORK, FORKED)
        while True:  # skip a late connection from a worker abandoned after a start timeout
            conn = self._accept("math worker")
            hello = conn.recv() if conn.poll(self._cfg.startup_timeout_s) else None
            if hello == (READY, serial, pid):
                return _Worker(serial, pid, procs.zygote.pid, conn)
            conn.close()
            if hello is None:
                self._ask_zygote((KILL, serial), KILLED)
                raise MathWorkerStartError(f"math worker pid {pid} connected but did not report ready")

    def _retire(self, worker: _Worker) -> None:
        """Close a worker's connection and have its zygote kill it if it still runs."""
        worker.conn.close()
        procs = self._procs
        if procs.zygote is None or worker.zygote_pid != procs.zygote.pid or not self._zygote_alive():
            return  # its zygote is gone, and PR_SET_PDEATHSIG ended it with the zygote
        try:
            self._ask_zygote((KILL, worker.serial), KILLED)
        except MathWorkerStartError as exc:
            log.warning("%s; restarting the math zygote (its workers end with it)", exc)
            procs.stop_zygote()

    def _replace(self, worker: _Worker) -> None:
        self._workers.remove(worker)
        self._retire(worker)
        self.replaced += 1
        self._workers.append(self._fork_worker())

    def close(self) -> None:
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._wake_pump()
            while self._pumping:  # the pump reads the workers' connections: let it leave first
                self._changed.wait()
            for worker in self._workers:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
                worker.conn.close()
            self._workers.clear()
            self._queue.clear()
            self._changed.notify_all()  # collectors still waiting see the pool closed
        self._finalizer()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    # ------------------------------------------------------------------------------------------ work
    def verify(self, jobs: Sequence[tuple[str, str]]) -> list[MathOutcome]:
        """Check (response, gold answer) pairs; blocks until every one has an outcome."""
        return self.submit(jobs).collect()

    def submit(self, jobs: Sequence[tuple[str, str]]) -> MathBatch:
        """Queue the jobs, send the first chunks to idle workers and return; collect() on the result
        waits for the batch's outcomes. Holds no lock after it returns."""
        state = _BatchState(jobs)
        with self._lock:
            self._ensure_started()
            self._queue.extend((state, position) for position in range(len(jobs)))
            try:
                self._dispatch_idle()
            except BaseException:
                state.abandon()  # the caller gets no MathBatch to collect
                raise
            self._wake_pump()
        return MathBatch(self, state)

    def _wake_pump(self) -> None:
        try:
            os.write(self._procs.wake_write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the pump will wake anyway

    def _next_chunk(self) -> list[tuple[int, _BatchState, int]]:
        chunk: list[tuple[int, _BatchState, int]] = []
        while self._queue and len(chunk) < self._cfg.chunk_items:
            state, position = self._queue.popleft()
            if not state.abandoned and state.outcomes[position] is None:
                chunk.append((next(self._tickets), state, position))
        return chunk

    def _dispatch_idle(self) -> None:
        """Give a chunk to every idle worker while jobs are queued; replace one found dead."""
        for worker in list(self._workers):
            if not self._queue:
                return
            if worker.inflight:
                continue
            if worker.conn.poll():  # an idle worker only becomes readable by dying (end of file)
                log.warning("math worker pid %s died while idle; replacing it", worker.pid)
                self._replace(worker)
                worker = self._workers[-1]
            chunk = self._next_chunk()
            if not chunk:
                return
            worker.inflight.extend(chunk)
            worker.deadline = time.monotonic() + self._cfg.item_timeout_s
            try:
                worker.conn.send([(ticket, *state.jobs[position]) for ticket, state, position in chunk])
            except OSError:
                pass  # a dead worker shows up as end of file in the pump and is replaced there

    def _collect(self, state: _BatchState) -> list[MathOutcome]:
        with self._changed:
            while self._pumping and not state.finished and not self._closed:
                self._changed.wait()  # another collector pumps; it may well finish this batch too
            if state.finished:
                return state.results()
            if self._closed:
                raise RuntimeError("the math worker pool was closed while a batch was in flight")
            self._pumping = True
        try:
            self._pump_until(state)
        except BaseException:
            with self._lock:
                state.abandon()
            raise
        finally:
            with self._changed:
                self._pumping = False
                self._changed.notify_all()
        with self._lock:
            if not state.finished:
                raise RuntimeError("the math worker pool was closed while a batch was in flight")
            return state.results()

    def _pump_until(self, state: _BatchState) -> None:
        """Read every worker's answers, for all batches, until `state` is finished (or the pool closes)."""
        timeout_ms = self._cfg.item_timeout_s * 1e3
        while True:
            with self._lock:
                if state.finished or self._closed:
                    return
                self._ensure_started()  # a replacement that failed to start earlier
                self._dispatch_idle()
                busy = [w for w in self._workers if w.inflight]
                if not busy:
                    raise RuntimeError("math pool: a batch has jobs left but no worker has any")  # a bug
                timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            wait([w.conn for w in busy] + [self._procs.wake_read], timeout=timeout)
            with self._changed:
                self._drain_wake()
                for worker in busy:
                    if worker not in self._workers:
                        continue
                    if not self._receive(worker):
                        self._fail_current(worker, ERROR, 0.0)
                    elif worker.inflight and time.monotonic() >= worker.deadline and not worker.conn.poll():
                        self._fail_current(worker, TIMEOUT, timeout_ms)
                self._dispatch_idle()
                self._changed.notify_all()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._procs.wake_read, 4096):
                pass
        except BlockingIOError:
            pass

    def _receive(self, worker: _Worker) -> bool:
        """Record every answer waiting from `worker`; False if it died or broke the protocol."""
        try:
            while worker.conn.poll():
                ticket, reward, reason, latency_ms = worker.conn.recv()
                expected, state, position = worker.inflight[0]
                if ticket != expected:
                    log.error("math worker pid %s answered ticket %s, expected %s", worker.pid, ticket, expected)
                    return False
                worker.inflight.popleft()
                state.record(position, (reward, reason, latency_ms))
                worker.deadline = time.monotonic() + self._cfg.item_timeout_s
        except (EOFError, OSError):
            return False
        return True

    def _fail_current(self, worker: _Worker, reason: str, latency_ms: float) -> None:
        """Give the worker's current job `reason`, requeue the rest of its chunk, replace the worker."""
        position = -1
        if worker.inflight:
            _, state, position = worker.inflight.popleft()
            state.record(position, (0.0, reason, latency_ms))
        self._queue.extendleft(reversed([(state, p) for _, state, p in worker.inflight]))
        worker.inflight.clear()
        log.warning("math worker pid %s %s on batch item %d; replacing it", worker.pid,
                    "timed out" if reason == TIMEOUT else "died", position)
        self._replace(worker)


class MathBatch:
    """One batch submitted to a MathVerifierPool; collect() once for its outcomes, in job order."""

    def __init__(self, pool: MathVerifierPool, state: _BatchState) -> None:
        self._pool = pool
        self._state = state
        self._collected = False
        weakref.finalize(self, state.abandon)  # dropped without collect(): skip its jobs not sent yet

    def collect(self) -> list[MathOutcome]:
        if self._collected:
            raise RuntimeError("MathBatch.collect() called twice")
        self._collected = True
        return self._pool._collect(self._state)
