"""Prefetcher: results in order, at most `depth` ahead, a producer error raised where it happened, close stops it."""
from __future__ import annotations

import threading

import pytest

from training.prefetch import Prefetcher


class Counter:
    """produce() returns 0, 1, 2, ... and raises at call `fail_at`; `produced` counts the calls made."""

    def __init__(self, fail_at: int | None = None):
        self.calls = 0
        self.fail_at = fail_at
        self.produced = threading.Semaphore(0)
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            n = self.calls
            if n == self.fail_at:
                raise RuntimeError(f"producer failed at item {n}")
            self.calls += 1
        self.produced.release()
        return n


def wait_calls(counter: Counter, n: int) -> None:
    for _ in range(n):
        assert counter.produced.acquire(timeout=10), "the producer did not run"


def test_items_come_in_the_order_they_were_produced():
    counter = Counter()
    prefetch = Prefetcher(counter, depth=3)
    try:
        assert [prefetch.next() for _ in range(50)] == list(range(50))
    finally:
        prefetch.close()


def test_the_producer_runs_at_most_depth_items_ahead():
    counter = Counter()
    prefetch = Prefetcher(counter, depth=2)
    try:
        # depth items in the queue plus the one the thread holds while waiting for a free slot
        wait_calls(counter, 3)
        assert not counter.produced.acquire(timeout=0.5)
        assert counter.calls == 3
        assert prefetch.next() == 0
        wait_calls(counter, 1)                    # one slot freed: exactly one more item
        assert not counter.produced.acquire(timeout=0.5)
        assert counter.calls == 4
    finally:
        prefetch.close()


def test_a_producer_error_is_raised_after_the_items_before_it():
    prefetch = Prefetcher(Counter(fail_at=3), depth=2)
    try:
        assert [prefetch.next() for _ in range(3)] == [0, 1, 2]
        with pytest.raises(RuntimeError, match="producer failed at item 3"):
            prefetch.next()
    finally:
        prefetch.close()
    assert not prefetch._thread.is_alive()


def test_close_stops_the_thread_while_it_waits_for_a_free_slot():
    counter = Counter()
    prefetch = Prefetcher(counter, depth=1)
    wait_calls(counter, 2)                        # the queue is full and the thread is blocked on it
    prefetch.close()
    assert not prefetch._thread.is_alive()
    calls = counter.calls
    assert not counter.produced.acquire(timeout=0.3) and counter.calls == calls
