"""Service metrics in the Prometheus text exposition format (version 0.0.4), kept in process.

mimovl_reward_items_total{task,reason}            scored items
mimovl_reward_item_latency_seconds{task}          histogram of per-item scoring time
mimovl_reward_request_latency_seconds             histogram of POST /v1/rewards handling time
mimovl_reward_requests_total{code}                requests answered, by HTTP status
mimovl_reward_math_workers_replaced_total         math workers killed on timeout or found dead
Tasks without a route are counted under task="unrouted" so a client cannot grow the label set.
"""
from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence

from rewards.result import REASONS, RewardItem, RewardResult

UNROUTED = "unrouted"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Histogram:
    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last slot is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def render(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        lines, cumulative = [], 0
        for bound, count in zip([*map(repr, self.bounds), "+Inf"], self.counts):
            cumulative += count
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {cumulative}')
        braces = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{braces} {self.total!r}")
        lines.append(f"{name}_count{braces} {self.count}")
        return lines


class RewardMetrics:
    def __init__(self, tasks: Sequence[str], item_buckets_s: Sequence[float], request_buckets_s: Sequence[float],
                 replaced_workers: Callable[[], int]) -> None:
        self._tasks = sorted(set(tasks))
        self._label = {task: _escape(task) for task in self._tasks}
        labels = [*self._label.values(), UNROUTED]
        self._items = {(label, reason): 0 for label in labels for reason in REASONS}
        self._item_latency = {label: _Histogram(item_buckets_s) for label in labels}
        self._request_latency = _Histogram(request_buckets_s)
        self._requests: dict[int, int] = {}
        self._replaced_workers = replaced_workers
        self._lock = threading.Lock()

    def observe_items(self, items: Sequence[RewardItem], results: Sequence[RewardResult]) -> None:
        with self._lock:
            for item, result in zip(items, results):
                task = self._label.get(item.task, UNROUTED)
                self._items[(task, result.reason)] += 1
                self._item_latency[task].observe(result.latency_ms * 1e-3)

    def observe_request(self, status_code: int, seconds: float) -> None:
        with self._lock:
            self._requests[status_code] = self._requests.get(status_code, 0) + 1
            if status_code == 200:
                self._request_latency.observe(seconds)

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP mimovl_reward_items_total Scored items by task and reason.",
                "# TYPE mimovl_reward_items_total counter",
            ]
            lines += [f'mimovl_reward_items_total{{task="{t}",reason="{r}"}} {n}' for (t, r), n in self._items.items()]
            lines += [
                "# HELP mimovl_reward_item_latency_seconds Time to score one item, by task.",
                "# TYPE mimovl_reward_item_latency_seconds histogram",
            ]
            for task, histogram in self._item_latency.items():
                lines += histogram.render("mimovl_reward_item_latency_seconds", f'task="{task}"')
            lines += [
                "# HELP mimovl_reward_request_latency_seconds Time to answer a successful POST /v1/rewards.",
                "# TYPE mimovl_reward_request_latency_seconds histogram",
                *self._request_latency.render("mimovl_reward_request_latency_seconds", ""),
                "# HELP mimovl_reward_requests_total Requests to POST /v1/rewards by HTTP status.",
                "# TYPE mimovl_reward_requests_total counter",
            ]
            lines += [f'mimovl_reward_requests_total{{code="{c}"}} {n}' for c, n in sorted(self._requests.items())]
            lines += [
                "# HELP mimovl_reward_math_workers_replaced_total Math workers killed on timeout or found dead.",
                "# TYPE mimovl_reward_math_workers_replaced_total counter",
                f"mimovl_reward_math_workers_replaced_total {self._replaced_workers()}",
            ]
        return "\n".join(lines) + "\n"
