"""Score any model's outputs on a benchmark by its official rule, like the public harnesses do.

    python -m evaluation.score --benchmark NAME --data DIR --predictions PRED.jsonl [--out SCORES.json]
        [--scoring official]

PRED.jsonl holds one {"id": ..., "response": "<raw model output>"} per line; the id is the one the
benchmark's adapter gives its items (see the adapter's docstring). It prints one JSON object:
{"benchmark", "metric", "score", "n", "ci95": [lo, hi], "by", "missing", "unknown_ids"}. An item with no
prediction scores 0 (n is always the benchmark's size); a prediction whose id names no item is listed in
unknown_ids and never counted; the first line for an id wins; a line that is not a JSON object with an id
and a string response is reported on stderr with its line number and skipped. --out writes the same object
plus "items": one {"id", "benchmark", "response", "parsed", "score"} per item, in item order.
Exit status 2: the data folder is not in the benchmark's layout (the message names the file and field),
the predictions file cannot be read, or the benchmark or scoring config is unknown.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

from conf import ConfigError
from evaluation.benchmarks import benchmark
from evaluation.benchmarks.base import Benchmark, BenchmarkDataError, Item, Report
from evaluation.scoring_config import load_scoring_config

log = logging.getLogger("evaluation.score")


def read_predictions(path: Path | str) -> list[dict[str, Any]]:
    """The predictions of a JSONL file as {"id": str, "response": str}, first line per id.

    A line that is not a JSON object with an "id" (string or integer) and a string "response" is logged
    with its line number and skipped; later lines for an id already read are counted and skipped."""
    path = Path(path)
    first: dict[str, dict[str, Any]] = {}
    malformed = duplicates = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            problem = None
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                row, problem = None, f"not JSON ({exc.msg})"
            if problem is None:
                problem = _prediction_problem(row)
            if problem is not None:
                malformed += 1
                log.warning("%s:%d: %s; line skipped", path, number, problem)
                continue
            item_id = str(row["id"])
            if item_id in first:
                duplicates += 1
                continue
            first[item_id] = {"id": item_id, "response": row["response"]}
    if malformed or duplicates:
        log.warning("%s: %d malformed line(s) skipped, %d repeated id(s) skipped (the first line per id wins)",
                    path, malformed, duplicates)
    return list(first.values())


def _prediction_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return f"not a JSON object (a {type(row).__name__})"
    if "id" not in row:
        return "no 'id'"
    if isinstance(row["id"], bool) or not isinstance(row["id"], (str, int)):
        return f"'id' must be a string or an integer, got {type(row['id']).__name__}"
    if "response" not in row:
        return "no 'response'"
    if not isinstance(row["response"], str):
        return f"'response' must be a string, got {type(row['response']).__name__}"
    return None


def confidence_interval(unit_scores: Sequence[float], binary: bool, confidence: float) -> tuple[float, float]:
    """Two-sided interval of the mean at `confidence`: Wilson's for 0/1 scores, the normal approximation
    (sample standard deviation) clipped to [0, 1] for continuous ones. No scores: (0, 1), nothing known;
    a single continuous score has no spread estimate: (0, 1) as well."""
    n = len(unit_scores)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    if n == 0:
        return (0.0, 1.0)
    mean = sum(unit_scores) / n
    if binary:
        denominator = 1.0 + z * z / n
        centre = (mean + z * z / (2 * n)) / denominator
        half = z * math.sqrt(mean * (1.0 - mean) / n + z * z / (4 * n * n)) / denominator
        return (max(0.0, centre - half), min(1.0, centre + half))
    if n == 1:
        return (0.0, 1.0)
    variance = sum((s - mean) ** 2 for s in unit_scores) / (n - 1)
    half = z * math.sqrt(variance / n)
    return (max(0.0, mean - half), min(1.0, mean + half))


def score_predictions(adapter: Benchmark, root: Path | str,
                      predictions: Sequence[dict[str, Any]]) -> tuple[Report, list[dict[str, Any]]]:
    """Score `predictions` ({"id", "response"}; first per id wins) on the benchmark in `root`.

    Returns the report and one row per item in item order: {"id", "benchmark", "response", "parsed",
    "score"}; an item without a prediction has response None and score 0."""
    items = adapter.load(Path(root))
    responses: dict[str, str] = {}
    for prediction in predictions:
        responses.setdefault(str(prediction["id"]), prediction["response"])
    known = {item.id for item in items}
    unknown = [item_id for item_id in responses if item_id not in known]
    rows: list[dict[str, Any]] = []
    scores: list[float] = []
    missing = 0
    for item in items:
        response = responses.get(item.id)
        if response is None:
            missing += 1
            score, parsed = 0.0, None
        else:
            result = adapter.score(item, response)
            score, parsed = result.score, result.parsed
        scores.append(score)
        rows.append({"id": item.id, "benchmark": adapter.name, "response": response, "parsed": parsed,
                     "score": score})
    if unknown:
        log.warning("%s: %d prediction(s) name no item of the benchmark (not counted), e.g. %s",
                    adapter.name, len(unknown), unknown[:5])
    return aggregate_report(adapter, items, scores, unknown_ids=unknown, missing=missing), rows


def aggregate_report(adapter: Benchmark, items: Sequence[Item], scores: Sequence[float], *,
                     unknown_ids: Sequence[str] = (), missing: int = 0) -> Report:
    """The benchmark's score over `items` (their scores in item order) by its own rule, with the interval
    at the scoring config's confidence level."""
    mean, n, by, units = adapter.aggregate(items, scores)
    interval = confidence_interval(units, adapter.binary, adapter.scoring.confidence)
    return Report(benchmark=adapter.name, metric=adapter.metric, score=mean, n=n, ci95=interval, by=by,
                  unknown_ids=list(unknown_ids), missing=missing)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", required=True, help="benchmark name (evaluation.benchmarks.ADAPTERS)")
    parser.add_argument("--data", required=True, type=Path, help="the benchmark's folder, in its public layout")
    parser.add_argument("--predictions", required=True, type=Path, help='JSONL of {"id", "response"}')
    parser.add_argument("--out", type=Path, help="write the report and the per-item scores here (JSON)")
    parser.add_argument("--scoring", default="official", help="conf/scoring/<name>.yaml (default: official)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        adapter = benchmark(args.benchmark, load_scoring_config(args.scoring))
        predictions = read_predictions(args.predictions)
        report, rows = score_predictions(adapter, args.data, predictions)
    except (BenchmarkDataError, ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = report.as_json()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**result, "items": rows}, ensure_ascii=False), encoding="utf-8")
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
