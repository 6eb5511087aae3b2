"""The reward router: a sample's task picks its reward function and weight (conf/rl/*.yaml rewards.routes).

    router = RewardRouter.from_config(load_rewards_config("morl"), tasks=mixture_tasks)
    results = router.score([RewardItem(id, task, response, target), ...])

from_config fails (ConfigError) when a task the RL mixture uses has no route, so a missing mapping
stops a run before training, never in the middle. score() groups a batch by task: math items go to the
worker processes first and are checked in parallel while the other tasks are scored here; preference
items go through the Bradley-Terry model in batches. A bad item scores 0 with a reason and never fails
its batch. Safe to call from several threads (the math pool and the preference model each take a lock).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conf import ConfigError
from rewards.config import RewardsConfig, rewards_config
from rewards.functions import MATH, PREFERENCE, RewardFn, in_process_functions
from rewards.math_pool import MathBatch, MathVerifierPool
from rewards.result import ERROR, OK, RewardItem, RewardResult, TargetError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    task: str
    fn: str
    weight: float
    function: RewardFn | None  # None for math and preference, which run outside this process' loop


def _math_gold(target: Any) -> str:
    if not isinstance(target, Mapping) or "answer" not in target:
        raise TargetError("math target must be a JSON object with 'answer'")
    answer = target["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise TargetError(f"target.answer must be a string or a number, got {type(answer).__name__}")
    return answer if isinstance(answer, str) else repr(answer) if isinstance(answer, float) else str(answer)


def _preference_prompt(target: Any) -> str:
    if not isinstance(target, Mapping) or not isinstance(target.get("prompt"), str):
        raise TargetError("preference target must be a JSON object with a string 'prompt'")
    return target["prompt"]


class RewardRouter:
    def __init__(self, cfg: RewardsConfig) -> None:
        self.cfg = cfg
        functions = in_process_functions(cfg.chart.relative_tolerance)
        self.routes: dict[str, Route] = {
            task: Route(task, route.fn, route.weight, functions.get(route.fn)) for task, route in cfg.routes.items()
        }
        uses = {route.fn for route in self.routes.values()}
        self.math_pool = MathVerifierPool(cfg.math) if MATH in uses else None
        self._uses_preference = PREFERENCE in uses
        self._preference: Any = None
        self._preference_lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Any, tasks: Iterable[str] = ()) -> RewardRouter:
        """Validate a rewards config (RewardsConfig, DictConfig or dict) and check that every task in
        `tasks` (those of the RL mixture) has a route."""
        config = rewards_config(cfg)
        missing = sorted(set(tasks) - set(config.routes))
        if missing:
            raise ConfigError(
                f"rewards.routes: no reward for task(s) {missing} used by the RL mixture; add "
                f"'<task>: {{fn: <function>, weight: <w>}}' under rewards.routes (routed: {sorted(config.routes)})"
            )
        return cls(config)

    @property
    def tasks(self) -> list[str]:
        return sorted(self.routes)

    # ------------------------------------------------------------------------------------- lifecycle
    def warm_up(self) -> None:
        """Start the math workers and load the preference model now rather than on first use."""
        if self.math_pool is not None:
            self.math_pool.start()
        if self._uses_preference:
            self._preference_scorer()

    def close(self) -> None:
        if self.math_pool is not None:
            self.math_pool.close()

    def __enter__(self) -> RewardRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _preference_scorer(self) -> Any:
        with self._preference_lock:
            if self._preference is None:
                from rewards.preference import PreferenceScorer  # imports torch: only when routed and used

                self._preference = PreferenceScorer.from_config(self.cfg.preference)
            return self._preference

    # ---------------------------------------------------------------------------------------- scoring
    def score(self, items: Sequence[RewardItem]) -> list[RewardResult]:
        """Score a batch; results come back in the order of `items`."""
        results: list[RewardResult | None] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for position, item in enumerate(items):
            groups.setdefault(item.task, []).append(position)

        math_positions: list[int] = []
        math_jobs: list[tuple[str, str]] = []
        in_process: list[tuple[Route, list[int]]] = []
        preference: list[tuple[Route, list[int]]] = []
        for task, positions in groups.items():
            route = self.routes.get(task)
            if route is None:
                log.warning("no reward route for task %r (%d items scored 0, reason error); routed: %s",
                            task, len(positions), self.tasks)
                for position in positions:
                    results[position] = RewardResult(items[position].id, 0.0, ERROR, 0.0)
            elif route.fn == MATH:
                for position in positions:
                    item = items[position]
                    try:
                        if not isinstance(item.response, str):
                            raise TargetError(f"response must be a string, got {type(item.response).__name__}")
                        math_jobs.append((item.response, _math_gold(item.target)))
                        math_positions.append(position)
                    except TargetError as exc:
                        log.warning("item %r (task %s): %s", item.id, task, exc)
                        results[position] = RewardResult(item.id, 0.0, ERROR, 0.0)
            elif route.fn == PREFERENCE:
                preference.append((route, positions))
            else:
                in_process.append((route, positions))

        math_batch = self._submit_math(math_jobs)
        try:
            for route, positions in in_process:
                self._score_in_process(route, items, positions, results)
            for route, positions in preference:
                self._score_preference(route, items, positions, results)
        finally:
            if math_jobs:
                self._collect_math(math_batch, items, math_positions, results)
        return results  # type: ignore[return-value]

    @staticmethod
    def _score_in_process(route: Route, items: Sequence[RewardItem], positions: list[int],
                          results: list[RewardResult | None]) -> None:
        function = route.function
        weight = route.weight
        assert function is not None
        clock = time.perf_counter
        for position in positions:
            item = items[position]
            start = clock()
            try:
                if not isinstance(item.response, str):
                    raise TargetError(f"response must be a string, got {type(item.response).__name__}")
                reward, reason = function(item.response, item.target)
                reward *= weight
                if not 0.0 <= reward <= 1.0:  # also catches NaN
                    raise ValueError(f"reward {reward} outside [0, 1]")
            except TargetError as exc:
                log.warning("item %r (task %s): %s", item.id, route.task, exc)
                reward, reason = 0.0, ERROR
            except Exception:
                log.exception("item %r (task %s): reward function %s failed", item.id, route.task, route.fn)
                reward, reason = 0.0, ERROR
            results[position] = RewardResult(item.id, reward, reason, (clock() - start) * 1e3)

    def _submit_math(self, jobs: list[tuple[str, str]]) -> MathBatch | None:
        if not jobs:
            return None
        assert self.math_pool is not None
        try:
            return self.math_pool.submit(jobs)
        except Exception:
            log.exception("math worker pool failed to take %d items; they score 0 (error)", len(jobs))
            return None

    def _collect_math(self, batch: MathBatch | None, items: Sequence[RewardItem], positions: list[int],
                      results: list[RewardResult | None]) -> None:
        outcomes = None
        if batch is not None:
            try:
                outcomes = batch.collect()
            except Exception:
                log.exception("math worker pool failed during a batch of %d items; they score 0 (error)",
                              len(positions))
        for index, position in enumerate(positions):
            item = items[position]
            route = self.routes[item.task]
            if outcomes is None:
                results[position] = RewardResult(item.id, 0.0, ERROR, 0.0)
            else:
                reward, reason, latency_ms = outcomes[index]
                results[position] = RewardResult(item.id, reward * route.weight, reason, latency_ms)

    def _score_preference(self, route: Route, items: Sequence[RewardItem], positions: list[int],
                          results: list[RewardResult | None]) -> None:
        valid: list[int] = []
        pairs: list[tuple[str, str]] = []
        for position in positions:
            item = items[position]
            try:
                if not isinstance(item.response, str):
                    raise TargetError(f"response must be a string, got {type(item.response).__name__}")
                pairs.append((_preference_prompt(item.target), item.response))
                valid.append(position)
            except TargetError as exc:
                log.warning("item %r (task %s): %s", item.id, route.task, exc)
                results[position] = RewardResult(item.id, 0.0, ERROR, 0.0)
        if not pairs:
            return
        start = time.perf_counter()
        try:
            scorer = self._preference_scorer()
            rewards = scorer.score(pairs)
            reason = OK
        except Exception:
            log.exception("preference scorer failed on %d items; they score 0 (error)", len(pairs))
            rewards, reason = [0.0] * len(pairs), ERROR
        latency_ms = (time.perf_counter() - start) * 1e3 / len(pairs)
        for position, reward in zip(valid, rewards):
            results[position] = RewardResult(items[position].id, reward * route.weight, reason, latency_ms)


def reason_counts(items: Sequence[RewardItem], results: Sequence[RewardResult]) -> dict[str, dict[str, int]]:
    """{task: {reason: count}} for a scored batch (what a trainer logs per task)."""
    counts: dict[str, dict[str, int]] = {}
    for item, result in zip(items, results):
        per_task = counts.setdefault(item.task, {})
        per_task[result.reason] = per_task.get(result.reason, 0) + 1
    return counts
