"""DocVQA: parquet with image structs and several answers; ANLS with the 0.5 threshold (continuous)."""
from __future__ import annotations

import pytest

from evaluation.benchmarks import benchmark
from evaluation.benchmarks.base import BenchmarkDataError
from tests.evaluation.fixtures import HOSTILE_RESPONSES, docvqa_record, png_bytes, score_responses, scoring, write_docvqa


@pytest.fixture
def root(tmp_path):
    return write_docvqa(tmp_path / "docvqa", [docvqa_record("57344", ["1 January 1990", "01/01/1990"]),
                                              docvqa_record("57345", ["abcdefghij"])])


def test_load(root):
    adapter = benchmark("docvqa", scoring())
    items = adapter.load(root)
    assert [(i.id, i.gold) for i in items] == [("57344", ["1 January 1990", "01/01/1990"]), ("57345", ["abcdefghij"])]
    assert items[0].prompt[0]["image"] == png_bytes(4) and adapter.binary is False


@pytest.mark.parametrize("item_id, response, expected", [
    ("57344", "01/01/1990", 1.0),                   # the second answer matches
    ("57344", "  1   JANUARY 1990 ", 1.0),          # case and whitespace
    ("57344", "\\boxed{01/01/1991}", 0.9),          # one edit in ten characters
    ("57345", "abcdefghij", 1.0),
    ("57345", "abcdeXXXXX", 0.5),                   # similarity exactly 0.5: kept
    ("57345", "abcdXXXXXX", 0.0),                   # 0.4 < 0.5: zero
    ("57345", "", 0.0),
])
def test_anls(root, item_id, response, expected):
    _, rows = score_responses("docvqa", root, {item_id: response})
    assert next(r for r in rows if r["id"] == item_id)["score"] == pytest.approx(expected)


def test_mean_and_normal_interval(root):
    report, _ = score_responses("docvqa", root, {"57344": "01/01/1990", "57345": "abcdeXXXXX"})
    assert (report.metric, report.score, report.n) == ("anls", 0.75, 2)
    assert 0.0 <= report.ci95[0] < 0.75 < report.ci95[1] <= 1.0


def test_hostile_responses_score_zero(root):
    adapter = benchmark("docvqa", scoring())
    for item in adapter.load(root):
        for response in HOSTILE_RESPONSES:
            assert adapter.score(item, response).score == 0.0


def test_withheld_answers_fail_naming_the_field(tmp_path):
    root = write_docvqa(tmp_path / "d", [docvqa_record("1", None)])
    with pytest.raises(BenchmarkDataError, match=r"validation-00000-of-00001.parquet row 0: field 'answers'"):
        benchmark("docvqa", scoring()).load(root)
