"""The types every reward function and transport shares: an item to score and its result.

A reward is a float in [0, 1] and a reason:
- ok: the response was understood (the reward may still be 0 for a wrong answer);
- unparseable: no answer of the expected form could be read from the response;
- timeout: checking took longer than the hard per-item limit;
- error: the item itself is bad (unknown task, malformed target) or the scorer failed.
NamedTuples keep the per-item cost small: the in-process path scores >100k boxes per second.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

Reason = Literal["ok", "unparseable", "timeout", "error"]

OK: Final = "ok"
UNPARSEABLE: Final = "unparseable"
TIMEOUT: Final = "timeout"
ERROR: Final = "error"
REASONS: Final[tuple[str, ...]] = (OK, UNPARSEABLE, TIMEOUT, ERROR)


class Score(NamedTuple):
    """What a reward function returns for one response."""

    reward: float
    reason: str


class RewardResult(NamedTuple):
    """The scored item as the router and the service report it."""

    id: str | int
    reward: float
    reason: str
    latency_ms: float


@dataclass(slots=True)
class RewardItem:
    """One response to score. `target` holds the gold answer in the task's format (see rewards.functions)."""

    id: str | int
    task: str
    response: str
    target: Any


class TargetError(ValueError):
    """The gold target of an item does not have the form its reward function needs."""


UNPARSEABLE_SCORE: Final = Score(0.0, UNPARSEABLE)
ERROR_SCORE: Final = Score(0.0, ERROR)
TIMEOUT_SCORE: Final = Score(0.0, TIMEOUT)
