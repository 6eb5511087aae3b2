"""Quality gates: a step's minimum score per benchmark (conf/eval `gates:`), checked against its scores.

A step that falls short still publishes and records its scores; it then fails with one message listing
every benchmark below its minimum, its score and its minimum (evaluation.run).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class GateFailure:
    benchmark: str
    score: float
    minimum: float


def check_gate(scores: Mapping[str, float], minimums: Mapping[str, float]) -> list[GateFailure]:
    """The benchmarks of `minimums` whose score is below their minimum, in `minimums`' order. Every gated
    benchmark must have a score (the job checks the gate against the suite before generating)."""
    missing = [name for name in minimums if name not in scores]
    if missing:
        raise KeyError(f"gate on benchmark(s) {missing} that have no score (scored: {sorted(scores)})")
    return [GateFailure(name, scores[name], minimum) for name, minimum in minimums.items() if scores[name] < minimum]


def gate_message(step: str, failures: list[GateFailure]) -> str:
    """One message naming every failing benchmark with its score and its minimum."""
    listed = "; ".join(f"{f.benchmark} {f.score:.4f} < minimum {f.minimum:.4f}" for f in failures)
    return f"quality gate of step {step} failed on {len(failures)} benchmark(s): {listed}"
