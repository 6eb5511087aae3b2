"""MathVision: parquet with decoded_image structs; MC letters or option text; free-form via Math-Verify."""
from __future__ import annotations

import random

import pytest

from evaluation.benchmarks import benchmark
from evaluation.benchmarks.base import BenchmarkDataError
from tests.evaluation.fixtures import (HOSTILE_RESPONSES, mathvision_record, mathvision_records, png_bytes,
                                       score_responses, scoring, within_chance, write_mathvision)


@pytest.fixture
def hand_worked(tmp_path):
    return write_mathvision(tmp_path / "mvis", [
        mathvision_record("1", "C", ["3 cm", "4 cm", "5 cm", "6 cm", "7 cm"]),
        mathvision_record("2", "\\frac{1}{2}", subject="algebra"),
        mathvision_record("3", "12"),
    ])


def test_load(hand_worked):
    items = benchmark("mathvision", scoring()).load(hand_worked)
    assert [i.id for i in items] == ["1", "2", "3"]
    assert items[0].prompt[0]["image"] == png_bytes(2) and "E. 7 cm" in items[0].prompt[1]["text"]
    assert (items[0].subset, items[1].subset) == ("metric geometry - length", "algebra")


@pytest.mark.parametrize("item_id, response, right", [
    ("1", "\\boxed{C}", True), ("1", "(C)", True), ("1", "C.", True), ("1", "The answer is C", True),
    ("1", "\\boxed{5 cm}", True), ("1", "\\boxed{B}", False), ("1", "5", False),
    ("2", "\\boxed{0.5}", True),                # Math-Verify: equivalent values
    ("2", "so it is \\boxed{\\frac{2}{4}}", True), ("2", "\\boxed{\\frac{1}{3}}", False),
    ("3", "12", True), ("3", "\\boxed{13}", False),
])
def test_rule(hand_worked, item_id, response, right):
    _, rows = score_responses("mathvision", hand_worked, {item_id: response})
    assert next(r for r in rows if r["id"] == item_id)["score"] == (1.0 if right else 0.0)


def test_hostile_responses_score_zero(hand_worked):
    adapter = benchmark("mathvision", scoring())
    items = adapter.load(hand_worked)
    for response in HOSTILE_RESPONSES:
        assert adapter.score(items[0], response).score == 0.0
    for response in ("", "\\boxed{" * 2000, "lorem ipsum " * (1_000_000 // 12)):  # Math-Verify reads these
        assert adapter.score(items[1], response).score == 0.0


def test_gold_double_scores_one_and_random_double_scores_chance(tmp_path):
    records = mathvision_records(200, seed=4)
    root = write_mathvision(tmp_path / "mvis", records)
    report, _ = score_responses("mathvision", root, {r["id"]: f"\\boxed{{{r['answer']}}}" for r in records})
    assert (report.score, report.n) == (1.0, 200)
    rng = random.Random(0)
    report, _ = score_responses("mathvision", root, {r["id"]: f"\\boxed{{{rng.choice('ABCDE')}}}" for r in records})
    assert within_chance(report.score, 0.2, 200)


def test_letter_out_of_range_fails(tmp_path):
    root = write_mathvision(tmp_path / "mvis", [mathvision_record("1", "F", ["a", "b"])])
    with pytest.raises(BenchmarkDataError, match=r"row 0: field 'answer' 'F'"):
        benchmark("mathvision", scoring()).load(root)
