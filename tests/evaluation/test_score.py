"""evaluation.score: predictions read like the public harnesses read them, intervals, and the CLI end to end."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from conf import REPO_ROOT
from evaluation.benchmarks import benchmark
from evaluation.score import confidence_interval, read_predictions, score_predictions
from tests.evaluation.fixtures import countbench_records, scoring, write_countbench


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "evaluation.score", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def counting(tmp_path):
    records = countbench_records(5, seed=0)
    for record, number in zip(records, (1, 2, 3, 4, 5)):
        record["number"] = number
    return write_countbench(tmp_path / "countbench", records)


def test_cli_scores_missing_unknown_first_wins_and_reports_bad_lines(tmp_path, counting):
    lines = [json.dumps({"id": 0, "response": "\\boxed{1}"}),        # right (an integer id names row 0)
             json.dumps({"id": "1", "response": "two"}),              # right
             json.dumps({"id": "1", "response": "\\boxed{9}"}),       # a repeat: the first line wins
             "{not json",                                             # line 4: reported, skipped
             json.dumps({"id": "2"}),                                 # line 5: no response
             json.dumps({"id": "3", "response": "\\boxed{7}"}),       # wrong
             json.dumps({"id": "999", "response": "1"}),              # names no item: reported, not counted
             ""]                                                      # id 4 and id 2 have no prediction
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("\n".join(lines), encoding="utf-8")
    out = tmp_path / "scores" / "scores.json"
    result = run_cli("--benchmark", "countbench", "--data", counting, "--predictions", predictions, "--out", out)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {k: report[k] for k in ("benchmark", "metric", "score", "n", "missing", "unknown_ids", "by")} == {
        "benchmark": "countbench", "metric": "accuracy", "score": 0.4, "n": 5, "missing": 2, "unknown_ids": ["999"],
        "by": {}}
    lo, hi = report["ci95"]
    assert 0.0 <= lo < 0.4 < hi <= 1.0
    assert "pred.jsonl:4: not JSON" in result.stderr and "pred.jsonl:5: no 'response'" in result.stderr
    written = json.loads(out.read_text(encoding="utf-8"))
    assert {k: v for k, v in written.items() if k != "items"} == report
    assert [(r["id"], r["response"], r["parsed"], r["score"]) for r in written["items"]] == [
        ("0", "\\boxed{1}", 1, 1.0), ("1", "two", 2, 1.0), ("2", None, None, 0.0), ("3", "\\boxed{7}", 7, 0.0),
        ("4", None, None, 0.0)]


def test_cli_exits_2_naming_the_file_and_field_of_a_wrong_layout(tmp_path, counting):
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text(json.dumps({"id": 0, "response": "1"}) + "\n", encoding="utf-8")
    result = run_cli("--benchmark", "docvqa", "--data", counting, "--predictions", predictions)
    assert result.returncode == 2 and result.stdout == ""
    assert "test-00000-of-00001.parquet: no column 'questionId'" in result.stderr
    result = run_cli("--benchmark", "nosuch", "--data", counting, "--predictions", predictions)
    assert result.returncode == 2 and "unknown benchmark 'nosuch'" in result.stderr


def test_read_predictions_skips_and_logs_bad_lines(tmp_path, caplog):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join([json.dumps({"id": 5, "response": "a"}), "[1, 2]", json.dumps({"response": "x"}),
                               json.dumps({"id": "6", "response": None}), json.dumps({"id": True, "response": "x"}),
                               json.dumps({"id": 5, "response": "b"}), "", json.dumps({"id": "7", "response": ""})]),
                    encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="evaluation.score"):
        rows = read_predictions(path)
    assert rows == [{"id": "5", "response": "a"}, {"id": "7", "response": ""}]
    messages = "\n".join(caplog.messages)
    for expected in ("p.jsonl:2: not a JSON object", "p.jsonl:3: no 'id'", "p.jsonl:4: 'response' must be a string",
                     "p.jsonl:5: 'id' must be a string or an integer", "4 malformed line(s) skipped, 1 repeated id"):
        assert expected in messages


def test_score_predictions_rows_in_item_order_and_first_wins(counting):
    adapter = benchmark("countbench", scoring())
    report, rows = score_predictions(adapter, counting, [{"id": "4", "response": "5"}, {"id": "4", "response": "0"},
                                                         {"id": "x", "response": "1"}])
    assert [r["id"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert (rows[4]["score"], report.score, report.missing, report.unknown_ids) == (1.0, 0.2, 4, ["x"])


@pytest.mark.parametrize("scores, binary, expected", [
    ([1.0] * 8 + [0.0] * 2, True, (0.4902, 0.9433)),     # Wilson 8/10 (tabulated)
    ([1.0] * 10, True, (0.7225, 1.0)),
    ([0.0] * 10, True, (0.0, 0.2775)),
    ([0.0, 1.0, 0.5, 0.5], False, (0.0999, 0.9001)),     # mean 0.5, s = 0.4082, z s / sqrt(4) = 0.4001
    ([1.0, 1.0, 1.0, 0.9], False, (0.9260, 1.0)),        # mean 0.975, s = 0.05: 0.975 + 0.049 clipped at 1
    ([], True, (0.0, 1.0)), ([0.7], False, (0.0, 1.0)),
])
def test_confidence_interval(scores, binary, expected):
    assert confidence_interval(scores, binary, 0.95) == pytest.approx(expected, abs=1e-4)
