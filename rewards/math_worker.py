"""Math-Verify checking, and the processes that run it (rewards.math_pool drives them).

`python -m rewards.math_worker --socket PATH --settings JSON` starts a zygote: it imports and warms up
Math-Verify once, connects to the pool's Unix socket, and forks a worker each time the pool asks. A
worker connects to the same socket and checks the jobs it is sent. Forking from the zygote makes a
replacement ready in milliseconds without re-importing the caller's main module (as multiprocessing's
spawn and forkserver do) and without forking a caller that holds threads or a model.

Math-Verify arms signal.alarm for its own timeouts, which only works in a main thread; a worker runs it
in its main thread. Those soft timeouts end most slow items gracefully; the pool's hard per-item timeout
(SIGKILL and replace the worker) covers what they cannot interrupt.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from functools import lru_cache
from multiprocessing.connection import Connection
from typing import Any

from math_verify import parse, verify
from math_verify.errors import TimeoutException

from rewards.extract import answer_region, last_boxed
from rewards.result import ERROR, OK, TIMEOUT, UNPARSEABLE, Score

# A chunk sent to a worker is a list of (position in the batch, response, gold answer); the worker
# answers each with (position, reward, reason, latency_ms). None asks it to exit.
MathJob = tuple[int, str, str]
MathReply = tuple[int, float, str, float]
FORK = "fork"


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
        for position, response, gold in chunk:
            start = time.perf_counter()
            try:
                score = check_math(response, gold, parsing_timeout_s, verify_timeout_s)
            except Exception:
                score = Score(0.0, ERROR)
            try:
                conn.send((position, score.reward, score.reason, (time.perf_counter() - start) * 1e3))
            except OSError:
                return


def zygote_main(socket_path: str, parsing_timeout_s: int | None, verify_timeout_s: int | None,
                gold_cache_size: int) -> None:
    """Warm up, then fork a worker for each FORK request on the control connection, answering its pid.
    Exits when the pool closes the control connection (or dies)."""
    global _parse_gold
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the pool's process, which stops us
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    check_math("\\boxed{1}", "1", parsing_timeout_s, verify_timeout_s)  # the first call pays lazy set-up
    _parse_gold = lru_cache(maxsize=gold_cache_size)(_parse_gold_uncached)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps workers the pool kills
    control = connect(socket_path)
    control.send(("zygote", os.getpid()))
    children: set[int] = set()
    while True:
        try:
            request = control.recv()
        except (EOFError, OSError):
            request = None
        if request != FORK:
            _end_children(children)
            return
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                control.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                conn = connect(socket_path)
                conn.send(("ready", os.getpid()))
                serve(conn, parsing_timeout_s, verify_timeout_s)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children.add(pid)
        control.send(pid)


def _end_children(children: set[int]) -> None:
    """Kill the workers (the pool has asked them to exit, or is gone) and wait until all have ended, so
    none is left to an init process that may not reap."""
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        while True:
            os.wait()  # with SIGCHLD ignored: blocks until every child has ended, then raises ECHILD
    except ChildProcessError:
        pass


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
