"""ChartQA: the original test/*.json + test/png layout; relaxed accuracy with percentages; human/augmented."""
from __future__ import annotations

import pytest

from evaluation.benchmarks import benchmark
from evaluation.benchmarks.base import BenchmarkDataError
from tests.evaluation.fixtures import HOSTILE_RESPONSES, chart_record, png_bytes, score_responses, scoring, write_chartqa


@pytest.fixture
def root(tmp_path):
    return write_chartqa(tmp_path / "chartqa",
                         human=[chart_record("a.png", "100"), chart_record("b.png", "Yes"), chart_record("c.png", "25%")],
                         augmented=[chart_record("d.png", "0"), chart_record("e.png", "-40"),
                                    chart_record("f.png", ["2019", "2020"])])


def test_load_ids_subsets_and_images(root):
    items = benchmark("chartqa", scoring()).load(root)
    assert [i.id for i in items] == ["test_human:0", "test_human:1", "test_human:2",
                                     "test_augmented:0", "test_augmented:1", "test_augmented:2"]
    assert [i.subset for i in items] == ["human"] * 3 + ["augmented"] * 3
    assert items[0].prompt[0]["image"] == root / "test" / "png" / "a.png"


@pytest.mark.parametrize("item_id, response, right", [
    ("test_human:0", "\\boxed{105}", True), ("test_human:0", "95", True),          # the 5% edge, both sides
    ("test_human:0", "105.1", False), ("test_human:0", "94.9", False),
    ("test_human:0", "100%", False),                                              # 1.0 against 100
    ("test_human:1", "yes", True), ("test_human:1", "\\boxed{YES}", True), ("test_human:1", "no", False),
    ("test_human:2", "25%", True), ("test_human:2", "0.25", True), ("test_human:2", "\\boxed{0.26}", True),
    ("test_human:2", "25", False),                                                # 25 against 0.25
    ("test_augmented:0", "0", True), ("test_augmented:0", "0.01", False),         # zero: exact only
    ("test_augmented:1", "-41", True), ("test_augmented:1", "40", False),
    ("test_augmented:2", "2020", True), ("test_augmented:2", "2022", True),   # years are numbers: within 5%
    ("test_augmented:2", "2200", False),
])
def test_relaxed_accuracy(root, item_id, response, right):
    _, rows = score_responses("chartqa", root, {item_id: response})
    assert next(r for r in rows if r["id"] == item_id)["score"] == (1.0 if right else 0.0)


def test_by_splits_human_and_augmented(root):
    report, _ = score_responses("chartqa", root, {"test_human:0": "100", "test_human:1": "yes", "test_augmented:0": "0"})
    assert report.by == pytest.approx({"human": 2 / 3, "augmented": 1 / 3})
    assert (report.score, report.n, report.missing) == (0.5, 6, 3)


def test_gold_double_scores_one(root):
    golds = {"test_human:0": "100", "test_human:1": "Yes", "test_human:2": "25%", "test_augmented:0": "0",
             "test_augmented:1": "-40", "test_augmented:2": "2019"}
    report, _ = score_responses("chartqa", root, golds)
    assert report.score == 1.0


def test_hostile_responses_score_zero(root):
    adapter = benchmark("chartqa", scoring())
    for item in adapter.load(root):
        for response in HOSTILE_RESPONSES:
            assert adapter.score(item, response).score == 0.0


def test_missing_image_and_missing_file_fail_naming_them(root):
    (root / "test" / "png" / "b.png").unlink()
    with pytest.raises(BenchmarkDataError, match=r"test_human.json record 1: field 'imgname' names .*b.png"):
        benchmark("chartqa", scoring()).load(root)
    (root / "test" / "png" / "b.png").write_bytes(png_bytes(3))
    (root / "test" / "test_augmented.json").unlink()
    with pytest.raises(BenchmarkDataError, match=r"test_augmented.json: missing"):
        benchmark("chartqa", scoring()).load(root)
