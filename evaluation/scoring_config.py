"""Typed schema of conf/scoring/*.yaml: the numbers of the benchmarks' official scoring rules.

Every adapter (evaluation/benchmarks/) gets one ScoringConfig and reads its own section; nothing in the
scorers has a numeric default. `load_scoring_config("official")` reads and validates
conf/scoring/official.yaml; an unknown key, a wrong type or an out-of-range value fails naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from conf import ConfigError, load_group, validated


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where}: {message}")


def _check_fraction(value: float, where: str, *, open_low: bool) -> None:
    ok = (0.0 < value <= 1.0) if open_low else (0.0 <= value <= 1.0)
    _require(ok, where, f"must be in {'(0' if open_low else '[0'}, 1], got {value}")


@dataclass
class MMMUScoring:
    long_response_words: int = MISSING  # MC: option text is matched only in responses of more words than this
    float_decimals: int = MISSING       # open answers: numbers compare after rounding to this many decimals


@dataclass
class MMBenchScoring:
    circular_offset: int = MISSING  # a row with index >= this is a rotated copy of row index % this


@dataclass
class RefCOCOScoring:
    iou_threshold: float = MISSING  # Acc@t: IoU >= t is right


@dataclass
class ChartQAScoring:
    relative_tolerance: float = MISSING  # relaxed accuracy: |pred - gold| <= tol * |gold|


@dataclass
class DocVQAScoring:
    anls_threshold: float = MISSING  # a similarity below this scores 0


@dataclass
class CharadesScoring:
    recall_iou_thresholds: list[float] = MISSING  # R@1 at IoU >= each


@dataclass
class MathVerifyScoring:
    parsing_timeout_s: int | None = MISSING  # Math-Verify's own alarms (whole seconds; None = off)
    verify_timeout_s: int | None = MISSING


@dataclass
class ScoringConfig:
    name: str = MISSING
    confidence: float = MISSING  # level of the reported intervals
    mmmu: MMMUScoring = field(default_factory=MMMUScoring)
    mmbench: MMBenchScoring = field(default_factory=MMBenchScoring)
    refcoco: RefCOCOScoring = field(default_factory=RefCOCOScoring)
    chartqa: ChartQAScoring = field(default_factory=ChartQAScoring)
    docvqa: DocVQAScoring = field(default_factory=DocVQAScoring)
    charades_sta: CharadesScoring = field(default_factory=CharadesScoring)
    math_verify: MathVerifyScoring = field(default_factory=MathVerifyScoring)

    def check(self, where: str) -> None:
        _require(0.0 < self.confidence < 1.0, f"{where}.confidence", f"must be in (0, 1), got {self.confidence}")
        _require(self.mmmu.long_response_words >= 0, f"{where}.mmmu.long_response_words",
                 f"must be >= 0, got {self.mmmu.long_response_words}")
        _require(self.mmmu.float_decimals >= 0, f"{where}.mmmu.float_decimals",
                 f"must be >= 0, got {self.mmmu.float_decimals}")
        _require(self.mmbench.circular_offset > 0, f"{where}.mmbench.circular_offset",
                 f"must be > 0, got {self.mmbench.circular_offset}")
        _check_fraction(self.refcoco.iou_threshold, f"{where}.refcoco.iou_threshold", open_low=True)
        _require(self.chartqa.relative_tolerance >= 0.0, f"{where}.chartqa.relative_tolerance",
                 f"must be >= 0, got {self.chartqa.relative_tolerance}")
        _check_fraction(self.docvqa.anls_threshold, f"{where}.docvqa.anls_threshold", open_low=False)
        thresholds = list(self.charades_sta.recall_iou_thresholds)
        _require(len(thresholds) > 0, f"{where}.charades_sta.recall_iou_thresholds", "must not be empty")
        for i, t in enumerate(thresholds):
            _check_fraction(t, f"{where}.charades_sta.recall_iou_thresholds[{i}]", open_low=True)
        for key in ("parsing_timeout_s", "verify_timeout_s"):
            value = getattr(self.math_verify, key)
            _require(value is None or value > 0, f"{where}.math_verify.{key}", f"must be > 0 or null, got {value}")


def scoring_config_from(cfg: Any, where: str = "scoring") -> ScoringConfig:
    """Validate a `scoring:` config section (a DictConfig or dict) into a ScoringConfig."""
    return validated(ScoringConfig, cfg, where)


def load_scoring_config(name: str) -> ScoringConfig:
    """Read and validate conf/scoring/<name>.yaml."""
    return scoring_config_from(load_group("scoring", name), where=f"conf/scoring/{name}.yaml")
