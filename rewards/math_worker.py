"""Math-Verify checking, and the processes that run it (rewards.math_pool drives them).

`python -m rewards.math_worker --socket PATH --settings JSON` starts a zygote: it imports and warms up
Math-Verify once, connects to the pool's Unix socket, and forks a worker each time the pool asks. A
worker connects to the same socket and checks the jobs it is sent. Forking from the zygote makes a
replacement ready in milliseconds without re-importing the caller's main module (as multiprocessing's
spawn and forkserver do) and without forking a caller that holds threads or a model.

Math-Verify arms signal.alarm for its own timeouts, which only works in a main thread; a worker runs it
in its main thread. Those soft timeouts end most slow items gracefully; the pool's hard per-item timeout
(kill and replace the worker) covers what they cannot interrupt.

The zygote is the only process that signals a worker, and only one it forked and has not reaped yet: it
reaps in its own loop (never in a signal handler), so a pid it holds cannot have been reused. The pool
names a worker by the serial number the zygote gave it, never by pid. A worker dies with the zygote
(PR_SET_PDEATHSIG), so none outlives it.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from typing import Any

from math_verify import parse, verify
from math_verify.errors import TimeoutException

from rewards.extract import answer_region, last_boxed
from rewards.result import ERROR, OK, TIMEOUT, UNPARSEABLE, Score

# A chunk sent to a worker is a list of (ticket, response, gold answer); the worker answers each with
# (ticket, reward, reason, latency_ms). None asks it to exit. A ticket is the pool's id of one job.
MathJob = tuple[int, str, str]
MathReply = tuple[int, float, str, float]
# Requests on the zygote's control connection and their answers:
#   FORK           -> (FORKED, serial, pid); the worker then connects and sends (READY, serial, pid)
#   (KILL, serial) -> (KILLED, serial, signalled): signalled is False if that worker had already exited
#                     and been reaped (nothing is signalled then)
#   None or end of file: the zygote kills its workers, reaps them and exits
FORK = "fork"
FORKED = "forked"
READY = "ready"
KILL = "kill"
KILLED = "killed"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _parse(text: str, timeout_s: int | None) -> list[Any]:
    return parse(text, parsing_timeout=timeout_s, raise_on_error=True)  # type: ignore[arg-type]


def _parse_gold_uncached(gold: str, timeout_s: int | None) -> tuple[Any, ...]:
    """Gold may be LaTeX without delimiters ("\\frac{1}{2}", "x^2+1"), a number, or delimited text."""
    if "$" in gold or "\\boxed" in gold or "\\(" in gold or "\\[" in gold:
        return tuple(_parse(gold, timeout_s))
    return tuple(_parse(f"${gold}$", timeout_s) or _parse(gold, timeout_s))


# A zygote memoises gold answers (a GRPO group shares one across its G responses); see zygote_main().
_parse_gold: Callable[[str, int | None], tuple[Any, ...]] = _parse_gold_uncached


def check_math(response: str, gold: str, parsing_timeout_s: int | None, verify_timeout_s: int | None) -> Score:
    """Math-Verify the last \\boxed{} of the response (else its final answer) against the gold answer.

    Must run in a main thread (Math-Verify's alarms); the pool calls it inside worker processes."""
    try:
        gold_parsed = _parse_gold(gold, parsing_timeout_s)
    except TimeoutException:
        return Score(0.0, TIMEOUT)
    except Exception:
        return Score(0.0, ERROR)
    if not gold_parsed:
        return Score(0.0, ERROR)
    region = answer_region(response)
    boxed = last_boxed(region)
    try:
        pred = _parse(region if boxed is None else f"\\boxed{{{boxed}}}", parsing_timeout_s)
    except TimeoutException:
        return Score(0.0, TIMEOUT)
    except Exception:
        return Score(0.0, UNPARSEABLE)
    if not pred:
        return Score(0.0, UNPARSEABLE)
    try:
        correct = verify(list(gold_parsed), pred, timeout_seconds=verify_timeout_s, raise_on_error=True)
    except TimeoutException:
        return Score(0.0, TIMEOUT)
    except Exception:
        return Score(0.0, ERROR)
    return Score(1.0 if correct else 0.0, OK)


def connect(socket_path: str) -> Connection:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    return Connection(sock.detach())


def serve(conn: Connection, parsing_timeout_s: int | None, verify_timeout_s: int | None) -> None:
    """Worker loop: answer each job of each chunk as soon as it is done; stop on None or end of file."""
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for ticket, response, gold in chunk:
            start = time.perf_counter()
            try:
                score = check_math(response, gold, parsing_timeout_s, verify_timeout_s)
            except Exception:
                score = Score(0.0, ERROR)
            try:
                conn.send((ticket, score.reward, score.reason, (time.perf_counter() - start) * 1e3))
            except OSError:
                return


def zygote_main(socket_path: str, parsing_timeout_s: int | None, verify_timeout_s: int | None,
                gold_cache_size: int) -> None:
    """Warm up, then serve the pool's requests on the control connection (see FORK, KILL above).
    Exits when the pool closes the control connection (or dies)."""
    global _parse_gold
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the pool's process, which stops us
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    check_math("\\boxed{1}", "1", parsing_timeout_s, verify_timeout_s)  # the first call pays lazy set-up
    _parse_gold = lru_cache(maxsize=gold_cache_size)(_parse_gold_uncached)
    control = connect(socket_path)
    control.send(("zygote", os.getpid()))
    _Zygote(control, socket_path, parsing_timeout_s, verify_timeout_s).run()


class _Zygote:
    """The workers' parent: forks them, signals only those it has not reaped, reaps them in its loop."""

    def __init__(self, control: Connection, socket_path: str, parsing_timeout_s: int | None,
                 verify_timeout_s: int | None) -> None:
        self.control = control
        self.socket_path = socket_path
        self.timeouts = (parsing_timeout_s, verify_timeout_s)
        self.children: dict[int, int] = {}  # serial -> pid of each forked worker not reaped yet
        self.next_serial = 0
        self.pid = os.getpid()
        self.libc = ctypes.CDLL(None, use_errno=True)

    def run(self) -> None:
        # A child's exit wakes the loop through this pipe; the handler itself does nothing, so reaping
        # (and with it the end of a pid's ownership) only ever happens between two requests.
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        try:
            while True:
                ready = wait([self.control, self.wake_read])
                if self.wake_read in ready:
                    while True:
                        try:
                            if not os.read(self.wake_read, 4096):
                                break
                        except BlockingIOError:
                            break
                self._reap()
                if self.control in ready and not self._answer():
                    return
        finally:
            self._end_children()

    def _answer(self) -> bool:
        """Serve one request; False when the pool asks the zygote to exit (or is gone)."""
        try:
            request = self.control.recv()
        except (EOFError, OSError):
            return False
        if request == FORK:
            serial = self.next_serial
            self.next_serial += 1
            pid = os.fork()
            if pid == 0:
                self._worker_main(serial)
            self.children[serial] = pid
            reply: tuple[Any, ...] = (FORKED, serial, pid)
        elif isinstance(request, tuple) and len(request) == 2 and request[0] == KILL:
            reply = (KILLED, request[1], self._kill(request[1]))
        else:
            return False
        try:
            self.control.send(reply)
        except OSError:
            return False
        return True

    def _kill(self, serial: int) -> bool:
        pid = self.children.pop(serial, None)
        if pid is None:
            return False  # exited and reaped already: its pid may belong to anyone now
        os.kill(pid, signal.SIGKILL)  # our unreaped child (perhaps a zombie): the pid is still its own
        os.waitpid(pid, 0)
        return True

    def _reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for serial, child in list(self.children.items()):
                if child == pid:
                    del self.children[serial]

    def _end_children(self) -> None:
        """Kill the workers (the pool has asked them to exit, or is gone) and reap every one, so none is
        left to an init process that may not reap."""
        for serial in list(self.children):
            self._kill(serial)
        self._reap()

    def _worker_main(self, serial: int) -> None:
        """In the forked child: become a worker and never return."""
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (self.wake_read, self.wake_write):
                os.close(fd)
            self.control.close()
            self.libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the zygote, whatever kills it
            if os.getppid() != self.pid:  # the zygote died before prctl took effect
                os._exit(1)
            conn = connect(self.socket_path)
            conn.send((READY, serial, os.getpid()))
            serve(conn, *self.timeouts)
        except BaseException:
            code = 1
        finally:
            os._exit(code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="the pool's Unix socket")
    parser.add_argument("--settings", required=True,
                        help='JSON: {"parsing_timeout_s", "verify_timeout_s", "gold_cache_size"}')
    args = parser.parse_args(argv)
    settings = json.loads(args.settings)
    zygote_main(args.socket, settings["parsing_timeout_s"], settings["verify_timeout_s"],
                settings["gold_cache_size"])


if __name__ == "__main__":
    main(sys.argv[1:])
