"""Encode and pack the next batches on a background thread while the current step computes."""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_DONE = object()


class Prefetcher:
    """Calls `produce()` ahead of the consumer, keeping at most `depth` results in hand.

    An exception in the producer is re-raised in the consumer at the point it would have been produced.
    """

    def __init__(self, produce: Callable[[], Any], depth: int):
        self._produce = produce
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = (self._produce(), None)
            except BaseException as exc:  # handed to the consumer
                item = (_DONE, exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[1] is not None:
                return

    def next(self) -> Any:
        value, error = self._queue.get()
        if error is not None:
            raise error
        return value

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
