"""MathVista: parquet with decoded_image structs; MC answers are the choice TEXT; precision for floats."""
from __future__ import annotations

import random

import pytest

from evaluation.benchmarks import benchmark
from evaluation.benchmarks.base import BenchmarkDataError
from tests.evaluation.fixtures import (HOSTILE_RESPONSES, mathvista_record, mathvista_records, png_bytes,
                                       score_responses, scoring, within_chance, write_mathvista)


@pytest.fixture
def hand_worked(tmp_path):
    return write_mathvista(tmp_path / "mv", [
        mathvista_record("1", "(2, 3)", ["(1, 2)", "(2, 3)", "(3, 4)"]),      # answer is choice B's text
        mathvista_record("2", "12", answer_type="integer"),
        mathvista_record("3", "1.45", answer_type="float", precision=2.0),
        mathvista_record("4", "2.5", answer_type="float", precision=1.0, task="math word problem"),
        mathvista_record("5", "[1, 2]", answer_type="list"),
    ])


def test_load(hand_worked):
    items = benchmark("mathvista", scoring()).load(hand_worked)
    assert [i.id for i in items] == ["1", "2", "3", "4", "5"]
    assert items[0].prompt[0]["image"] == png_bytes(1) and "B. (2, 3)" in items[0].prompt[1]["text"]
    assert (items[0].gold, items[0].subset, items[3].subset) == ("(2, 3)", "figure question answering",
                                                                 "math word problem")


@pytest.mark.parametrize("pid, response, right", [
    ("1", "\\boxed{B}", True), ("1", "(B)", True), ("1", "B.", True), ("1", "The answer is B", True),
    ("1", "\\boxed{(2, 3)}", True),            # the choice text itself
    ("1", "(2, 3)", True),
    ("1", "\\boxed{A}", False), ("1", "\\boxed{2, 3}", False),   # near a choice but neither it nor a letter
    ("2", "\\boxed{12}", True), ("2", "\\boxed{12.0}", True), ("2", "12", True), ("2", "\\boxed{12.7}", True),
    ("2", "The answer is 12", False),          # not a number as a whole: the judge's job, 0 offline
    ("3", "\\boxed{1.45}", True), ("3", "\\boxed{1.4499}", True), ("3", "\\boxed{1.4}", False),
    ("4", "\\boxed{2.50}", True), ("4", "\\boxed{2.46}", True), ("4", "\\boxed{2.4}", False),
    ("5", "\\boxed{[1, 2]}", True), ("5", "\\boxed{[1,2]}", False),
])
def test_rule(hand_worked, pid, response, right):
    _, rows = score_responses("mathvista", hand_worked, {pid: response})
    assert next(r for r in rows if r["id"] == pid)["score"] == (1.0 if right else 0.0)


def test_parsed_is_the_normalised_answer(hand_worked):
    _, rows = score_responses("mathvista", hand_worked, {"1": "\\boxed{C}", "2": "\\boxed{12.0}", "3": "\\boxed{1.449}"})
    assert [r["parsed"] for r in rows[:3]] == ["(3, 4)", "12", "1.45"]


def test_hostile_responses_score_zero(hand_worked):
    adapter = benchmark("mathvista", scoring())
    for item in adapter.load(hand_worked):
        for response in HOSTILE_RESPONSES:
            assert adapter.score(item, response).score == 0.0


def test_gold_double_scores_one_and_random_double_scores_chance(tmp_path):
    records = mathvista_records(200, seed=2)
    root = write_mathvista(tmp_path / "mv", records)
    report, _ = score_responses("mathvista", root, {r["pid"]: f"\\boxed{{{r['answer']}}}" for r in records})
    assert (report.score, report.n) == (1.0, 200)
    rng = random.Random(0)
    report, _ = score_responses("mathvista", root, {r["pid"]: f"\\boxed{{{rng.choice('ABCD')}}}" for r in records})
    assert within_chance(report.score, 0.25, 200)


def test_letter_as_answer_fails_naming_the_field(tmp_path):
    root = write_mathvista(tmp_path / "mv", [mathvista_record("1", "B", ["x", "y"])])
    with pytest.raises(BenchmarkDataError, match=r"testmini-00000-of-00001.parquet row 0: field 'answer' 'B'"):
        benchmark("mathvista", scoring()).load(root)
