"""MMMU: per-subject parquet files with embedded image structs; MC letters and open answers by MMMU's rule."""
from __future__ import annotations

import random

import pytest

from evaluation.benchmarks import benchmark
from evaluation.benchmarks.base import BenchmarkDataError
from tests.evaluation.fixtures import (HOSTILE_RESPONSES, mmmu_record, mmmu_records, png_bytes, score_responses,
                                       scoring, within_chance, write_mmmu)

OPTIONS = ["a red apple", "a blue car", "a green tree", "a yellow sun"]


@pytest.fixture
def hand_worked(tmp_path):
    records = [mmmu_record("validation_Art_Theory_1", "<image 1> and <image 2>: which?", OPTIONS, "B", images=2),
               mmmu_record("validation_Math_2", "<image 1> What is x?", [], "3.14"),
               mmmu_record("validation_Math_3", "<image 1> Name it.", [], "['Pythagoras', 'pythagorean theorem']")]
    return write_mmmu(tmp_path / "mmmu", records)


def test_load_reads_ids_images_options_and_subjects(hand_worked):
    items = benchmark("mmmu", scoring()).load(hand_worked)
    assert [i.id for i in items] == ["validation_Art_Theory_1", "validation_Math_2", "validation_Math_3"]
    first = items[0]
    images = [p["image"] for p in first.prompt if p["type"] == "image"]
    assert images == [png_bytes(1), png_bytes(2)]          # image_1 and image_2, referenced in that order
    assert "B. a blue car" in first.prompt[-1]["text"] and "\\boxed{}" in first.prompt[-1]["text"]
    assert (first.gold, first.subset, items[1].subset) == ("B", "Art_Theory", "Math")
    assert len([p for p in items[1].prompt if p["type"] == "image"]) == 1


@pytest.mark.parametrize("response, right", [
    ("(B)", True), ("B", True), ("B.", True), ("The answer is B", True), ("\\boxed{B}", True),
    ("I think (A) is wrong; the answer is (B)", True),    # several bracketed letters: the last mentioned
    ("\\boxed{A}", False), ("It shows a blue car, clearly visible in the picture", True),  # option text, > 5 words
    ("a blue car", False),                                 # option text counts only in long responses
    ("I cannot tell", False),                              # the official code guesses at random: 0 here
])
def test_multiple_choice_rule(hand_worked, response, right):
    report, rows = score_responses("mmmu", hand_worked, {"validation_Art_Theory_1": response})
    assert rows[0]["score"] == (1.0 if right else 0.0)


@pytest.mark.parametrize("item_id, response, right", [
    ("validation_Math_2", "\\boxed{3.14}", True),
    ("validation_Math_2", "so x is 3.141", True),             # numbers compare rounded to 2 decimals
    ("validation_Math_2", "Therefore the answer is 3.2", False),
    ("validation_Math_2", "x = 3.14159", True),
    ("validation_Math_3", "This is the Pythagorean theorem", True),  # gold alternatives; gold a substring
    ("validation_Math_3", "Euclid", False),
])
def test_open_rule(hand_worked, item_id, response, right):
    _, rows = score_responses("mmmu", hand_worked, {item_id: response})
    assert next(r for r in rows if r["id"] == item_id)["score"] == (1.0 if right else 0.0)


def test_hostile_responses_score_zero(hand_worked):
    adapter = benchmark("mmmu", scoring())
    for item in adapter.load(hand_worked):
        for response in HOSTILE_RESPONSES:
            assert adapter.score(item, response).score == 0.0


def test_gold_double_scores_one_and_random_double_scores_chance(tmp_path):
    records = mmmu_records(200, seed=1)
    root = write_mmmu(tmp_path / "mmmu", records, per_file=50)
    gold = {r["id"]: f"The answer is \\boxed{{{r['answer']}}}" for r in records}
    report, _ = score_responses("mmmu", root, gold)
    assert (report.score, report.n, report.by) == (1.0, 200, {"Art": 1.0, "Math": 1.0})
    rng = random.Random(0)
    report, _ = score_responses("mmmu", root, {r["id"]: f"\\boxed{{{rng.choice('ABCD')}}}" for r in records})
    assert within_chance(report.score, 0.25, 200) and report.score < 1.0


def test_test_split_without_answers_fails_naming_the_file(tmp_path):
    root = write_mmmu(tmp_path / "mmmu", [mmmu_record("test_Art_1", "<image 1> q", OPTIONS, "")])
    with pytest.raises(BenchmarkDataError, match=r"validation-00000-of-00001.parquet row 0: field 'answer'"):
        benchmark("mmmu", scoring()).load(root)


def test_missing_referenced_image_fails_naming_the_field(tmp_path):
    root = write_mmmu(tmp_path / "mmmu", [mmmu_record("validation_Art_1", "<image 2> q", OPTIONS, "A", images=1)])
    with pytest.raises(BenchmarkDataError, match=r"row 0: field 'image_2'"):
        benchmark("mmmu", scoring()).load(root)
