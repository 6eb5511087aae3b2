"""CountBenchQA: parquet with image structs and int `number`; ids are row indices; number words count."""
from __future__ import annotations

import random

import pytest

from evaluation.benchmarks import benchmark
from evaluation.benchmarks.base import BenchmarkDataError
from tests.evaluation.fixtures import (HOSTILE_RESPONSES, countbench_records, png_bytes, score_responses, scoring,
                                       within_chance, write_countbench)


@pytest.fixture
def records():
    records = countbench_records(3, seed=0)
    for record, number in zip(records, (3, 12, 0)):
        record["number"] = number
    return records


def test_load_ids_are_row_indices(tmp_path, records):
    items = benchmark("countbench", scoring()).load(write_countbench(tmp_path / "cb", records))
    assert [(i.id, i.gold) for i in items] == [("0", 3), ("1", 12), ("2", 0)]
    assert items[1].prompt[0]["image"] == png_bytes(1)
    assert items[0].prompt[1]["text"].endswith("\\boxed{} using a single number.")


@pytest.mark.parametrize("item_id, response, right", [
    ("0", "\\boxed{3}", True), ("0", "3", True), ("0", "three", True), ("0", "\\boxed{Three}", True),
    ("0", "There are 3 dogs.", True), ("0", "\\boxed{4}", False), ("0", "3.5", False),
    ("1", "twelve", True), ("1", "\\boxed{12.0}", True), ("1", "twenty", False),
    ("2", "zero", True), ("2", "\\boxed{0}", True), ("2", "none", False),
])
def test_rule(tmp_path, records, item_id, response, right):
    _, rows = score_responses("countbench", write_countbench(tmp_path / "cb", records), {item_id: response})
    assert rows[int(item_id)]["score"] == (1.0 if right else 0.0)


def test_hostile_responses_score_zero(tmp_path, records):
    adapter = benchmark("countbench", scoring())
    for item in adapter.load(write_countbench(tmp_path / "cb", records)):
        for response in HOSTILE_RESPONSES:
            assert adapter.score(item, response).score == 0.0


def test_gold_double_scores_one_and_random_double_scores_chance(tmp_path):
    records = countbench_records(300, seed=5, low=2, high=5)
    root = write_countbench(tmp_path / "cb", records)
    report, _ = score_responses("countbench", root, {str(i): str(r["number"]) for i, r in enumerate(records)})
    assert (report.score, report.n) == (1.0, 300)
    rng = random.Random(0)
    report, _ = score_responses("countbench", root, {str(i): f"\\boxed{{{rng.randint(2, 5)}}}" for i in range(300)})
    assert within_chance(report.score, 0.25, 300)


def test_wrong_type_fails_naming_the_field(tmp_path, records):
    import pyarrow as pa

    from tests.evaluation.fixtures import COUNTBENCH_SCHEMA, write_parquet
    schema = COUNTBENCH_SCHEMA.set(COUNTBENCH_SCHEMA.get_field_index("number"), pa.field("number", pa.string()))
    for record in records:
        record["number"] = str(record["number"])
    write_parquet(tmp_path / "cb" / "data" / "test-00000-of-00001.parquet", records, schema)
    with pytest.raises(BenchmarkDataError, match=r"test-00000-of-00001.parquet row 0: field 'number' must be int"):
        benchmark("countbench", scoring()).load(tmp_path / "cb")
