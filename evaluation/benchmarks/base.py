"""What every benchmark adapter is: items read from the benchmark's own files, one score per response.

An adapter (one module per benchmark under evaluation/benchmarks/) reads the folder layout the public
benchmark ships, turns each scored unit into an Item (its id is the id predictions use), and scores one raw
model response against an item. Aggregation is shared (mean of item scores, per subset in `by`), except
where an official rule scores groups of rows together (MMBench's CircularEval) or reports more than the
mean (Charades-STA's R@1 thresholds): those adapters override `aggregate`.

No torch, no model: `python -m evaluation.score` scores any model's outputs with these alone.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

# An image of a prompt: the encoded file bytes (parquet/TSV embedded images) or a path to the file.
ImageRef = bytes | Path


class BenchmarkDataError(ValueError):
    """A benchmark folder that does not hold the layout its adapter reads; the message names the file/field."""


@dataclass(frozen=True)
class Item:
    """One scored unit of a benchmark.

    id       the prediction id: the benchmark's own id field, `<file stem>:<record index>`, or the row index
    prompt   the user turn as content parts: {"type": "image", "image": ImageRef} and {"type": "text", "text": str}
             in order (the eval job renders them with the chat template; images are decoded there)
    gold     whatever this adapter's `score` compares against (a letter, answers, a box, a span, ...)
    subset   the key under `by` this item counts towards (category, platform, human/augmented); None: none
    group    items sharing a group are scored together (MMBench circular copies share index % 1e6)
    image_size  (width, height) in pixels of the image as stored, for localisation benchmarks
    meta     anything else the adapter keeps for scoring or reports (options, precision, ...)
    """

    id: str
    prompt: list[dict[str, Any]]
    gold: Any
    subset: str | None = None
    group: str | None = None
    image_size: tuple[int, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemScore:
    """A response's score in [0, 1] and the answer read from it (None: nothing parseable)."""

    score: float
    parsed: Any = None


@dataclass
class Report:
    """What `python -m evaluation.score` prints (see evaluation.score)."""

    benchmark: str
    metric: str
    score: float
    n: int
    ci95: tuple[float, float]
    by: dict[str, float] = field(default_factory=dict)
    unknown_ids: list[str] = field(default_factory=list)  # predictions naming no item: reported, not counted
    missing: int = 0                                     # items with no prediction: scored 0

    def as_json(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "metric": self.metric, "score": self.score, "n": self.n,
                "ci95": list(self.ci95), "by": self.by, "missing": self.missing,
                "unknown_ids": self.unknown_ids}


class Benchmark(ABC):
    """One public benchmark: its folder layout (the class docstring documents it), its items, its rule."""

    name: ClassVar[str]          # the --benchmark name
    metric: ClassVar[str]        # accuracy | circular_accuracy | acc@0.5 | centre_accuracy | relaxed_accuracy | anls | miou
    binary: ClassVar[bool] = True  # item scores are 0/1 (Wilson interval) rather than continuous

    def __init__(self, scoring) -> None:
        self.scoring = scoring  # evaluation.scoring_config.ScoringConfig: the official rules' numbers

    @abstractmethod
    def load(self, root: Path) -> list[Item]:
        """Every item of the benchmark in `root`, in file order; BenchmarkDataError naming the file otherwise."""

    @abstractmethod
    def score(self, item: Item, response: str) -> ItemScore:
        """Score one raw model response; never raises on any response text (empty, huge, malformed)."""

    def aggregate(self, items: Sequence[Item], scores: Sequence[float]) -> tuple[float, int, dict[str, float], list[float]]:
        """(score, n, by, unit scores) from per-item scores in item order; unit scores feed the interval.

        Default: the mean over items, `by` the mean per subset. Overridden where the official rule differs.
        """
        by_lists: dict[str, list[float]] = {}
        for item, s in zip(items, scores):
            if item.subset is not None:
                by_lists.setdefault(item.subset, []).append(s)
        by = {k: sum(v) / len(v) for k, v in sorted(by_lists.items())}
        mean = sum(scores) / len(scores) if scores else 0.0
        return mean, len(scores), by, list(scores)
