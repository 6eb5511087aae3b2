"""A pool of Math-Verify worker processes with a hard per-item timeout.

Workers are forked by a zygote process (rewards.math_worker) that has Math-Verify imported and warm,
and talk to the pool over a Unix socket in a private temporary folder. Jobs go to a worker in chunks
(fewer messages) and the worker answers each job as soon as it is done; its clock restarts at every
answer, so the timeout applies to one item, not to a chunk. A worker that exceeds it is killed (SIGKILL)
and replaced: the item in progress scores 0 with reason "timeout" and the rest of its chunk goes back to
the queue. A worker that dies scores its item "error" the same way. Never threads: Math-Verify's own
timeouts rely on signals in a main thread.

One batch runs at a time (a lock); `submit` returns while the workers compute, so the caller can score
other tasks meanwhile, then `MathBatch.collect()` waits for the rest.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
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
from rewards.math_worker import FORK
from rewards.result import ERROR, TIMEOUT

log = logging.getLogger(__name__)

# (reward, reason, latency_ms) for one job
MathOutcome = tuple[float, str, float]


class MathWorkerStartError(RuntimeError):
    """The zygote or a math worker did not report ready within math.startup_timeout_s."""


class _Worker:
    __slots__ = ("pid", "conn", "inflight", "deadline")

    def __init__(self, pid: int, conn: Connection) -> None:
        self.pid = pid
        self.conn = conn
        self.inflight: deque[int] = deque()  # batch positions sent and not yet answered, in order
        self.deadline = 0.0


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class _Processes:
    """What must be cleaned up even if the pool is never closed (weakref.finalize holds this, not the pool)."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s  # how long the zygote may take to exit once its control connection closes
        self.folder: str | None = None
        self.listener: socket.socket | None = None
        self.zygote: subprocess.Popen[bytes] | None = None
        self.control: Connection | None = None
        self.worker_pids: set[int] = set()

    def cleanup(self) -> None:
        for pid in list(self.worker_pids):
            _kill(pid)
        self.worker_pids.clear()
        if self.control is not None:
            self.control.close()  # the zygote exits on end of file
            self.control = None
        if self.zygote is not None:
            try:
                self.zygote.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                self.zygote.kill()
                self.zygote.wait()
            self.zygote = None
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class MathVerifierPool:
    """`cfg.workers` Math-Verify worker processes; started on first use or by start()."""

    def __init__(self, cfg: MathConfig) -> None:
        self._cfg = cfg
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
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
        for worker in list(self._workers):
            if worker.conn.poll():  # between batches a worker only becomes readable by dying (end of file)
                log.warning("math worker pid %s died while idle; replacing it", worker.pid)
                self._workers.remove(worker)
                self._kill_worker(worker)
                self.replaced += 1
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
        procs.cleanup()
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

    def _fork_worker(self) -> _Worker:
        procs = self._procs
        if procs.zygote is None or procs.zygote.poll() is not None or procs.control is None:
            if procs.zygote is not None:
                log.warning("math zygote is gone (exit code %s); starting a new one", procs.zygote.poll())
            self._start_zygote()
        assert procs.control is not None
        try:
            procs.control.send(FORK)
            if not procs.control.poll(self._cfg.startup_timeout_s):
                raise MathWorkerStartError("the math zygote did not answer a fork request")
            pid = procs.control.recv()
        except (EOFError, OSError) as exc:
            procs.control.close()
            procs.control = None
            raise MathWorkerStartError("the math zygote went away during a fork request") from exc
        procs.worker_pids.add(pid)
        while True:  # skip a late connection from a worker abandoned after a start timeout
            conn = self._accept("math worker")
            hello = conn.recv() if conn.poll(self._cfg.startup_timeout_s) else None
            if hello == ("ready", pid):
                return _Worker(pid, conn)
            conn.close()
            if hello is None:
                _kill(pid)
                procs.worker_pids.discard(pid)
                raise MathWorkerStartError(f"math worker pid {pid} connected but did not report ready")

    def _kill_worker(self, worker: _Worker) -> None:
        _kill(worker.pid)
        self._procs.worker_pids.discard(worker.pid)
        worker.conn.close()

    def _replace(self, worker: _Worker) -> _Worker:
        self._workers.remove(worker)
        self._kill_worker(worker)
        self.replaced += 1
        fresh = self._fork_worker()
        self._workers.append(fresh)
        return fresh

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for worker in self._workers:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
                worker.conn.close()
            self._workers.clear()
            self._finalizer()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    # ------------------------------------------------------------------------------------------ work
    def verify(self, jobs: Sequence[tuple[str, str]]) -> list[MathOutcome]:
        """Check (response, gold answer) pairs; blocks until every one has an outcome."""
        return self.submit(jobs).collect()

    def submit(self, jobs: Sequence[tuple[str, str]]) -> MathBatch:
        """Send the first chunks to the workers and return; collect() on the result finishes the batch."""
        self._lock.acquire()
        try:
            self._ensure_started()
            batch = MathBatch(self, jobs)
            for worker in list(self._workers):
                batch.dispatch(worker)
        except BaseException:
            self._lock.release()
            raise
        return batch


class MathBatch:
    """One batch in flight on a MathVerifierPool, which stays locked until collect() returns."""

    def __init__(self, pool: MathVerifierPool, jobs: Sequence[tuple[str, str]]) -> None:
        self._pool = pool
        self._jobs = jobs
        self._queue: deque[int] = deque(range(len(jobs)))
        self._outcomes: list[MathOutcome | None] = [None] * len(jobs)
        self._done = False

    def dispatch(self, worker: _Worker) -> None:
        chunk = []
        while self._queue and len(chunk) < self._pool._cfg.chunk_items:
            position = self._queue.popleft()
            response, gold = self._jobs[position]
            chunk.append((position, response, gold))
        if not chunk:
            return
        worker.inflight.extend(job[0] for job in chunk)
        worker.deadline = time.monotonic() + self._pool._cfg.item_timeout_s
        try:
            worker.conn.send(chunk)
        except OSError:
            pass  # a dead worker shows up as end of file in collect() and is replaced there

    def _fail_current(self, worker: _Worker, reason: str, latency_ms: float) -> None:
        """Give the worker's current item `reason`, requeue the rest of its chunk, replace the worker."""
        position = -1
        if worker.inflight:
            position = worker.inflight.popleft()
            self._outcomes[position] = (0.0, reason, latency_ms)
        self._queue.extendleft(reversed(worker.inflight))
        worker.inflight.clear()
        log.warning("math worker pid %s %s on batch item %d; replacing it", worker.pid,
                    "timed out" if reason == TIMEOUT else "died", position)
        self.dispatch(self._pool._replace(worker))

    def _receive(self, worker: _Worker) -> bool:
        """Read every answer waiting from `worker`; False if it died."""
        try:
            while worker.conn.poll():
                position, reward, reason, latency_ms = worker.conn.recv()
                expected = worker.inflight.popleft()
                if position != expected:
                    raise RuntimeError(f"math worker answered item {position}, expected {expected}")
                self._outcomes[position] = (reward, reason, latency_ms)
                worker.deadline = time.monotonic() + self._pool._cfg.item_timeout_s
        except (EOFError, OSError):
            return False
        if not worker.inflight:
            self.dispatch(worker)
        return True

    def collect(self) -> list[MathOutcome]:
        if self._done:
            raise RuntimeError("MathBatch.collect() called twice")
        timeout_ms = self._pool._cfg.item_timeout_s * 1e3
        try:
            while True:
                busy = [w for w in self._pool._workers if w.inflight]
                if not busy:
                    break
                wait([w.conn for w in busy], timeout=max(0.0, min(w.deadline for w in busy) - time.monotonic()))
                for worker in busy:
                    if not self._receive(worker):
                        self._fail_current(worker, ERROR, 0.0)
                    elif worker.inflight and time.monotonic() >= worker.deadline and not worker.conn.poll():
                        self._fail_current(worker, TIMEOUT, timeout_ms)
        finally:
            self._done = True
            # After an exception, a worker still busy with this batch would answer into the next one.
            for worker in [w for w in self._pool._workers if w.inflight]:
                self._pool._workers.remove(worker)
                self._pool._kill_worker(worker)
            self._pool._lock.release()
        return [outcome if outcome is not None else (0.0, ERROR, 0.0) for outcome in self._outcomes]
