"""refcoco: the lmms-lab parquet layout, COCO [x, y, w, h] gold boxes, Acc@IoU>=0.5 on hand-worked answers."""
from __future__ import annotations

import dataclasses
import json
import random

import pytest

from evaluation.benchmarks import benchmark
from evaluation.benchmarks.base import BenchmarkDataError
from evaluation.scoring_config import load_scoring_config
from tests.evaluation.fixtures_localisation import write_refcoco

SIZE = (200, 100)  # width, height of every fixture image
GOLD = [100.0, 40.0, 50.0, 30.0]  # COCO [x, y, w, h] -> (100, 40, 150, 70)
# Quadrant-disjoint boxes of the 200x100 image: the random double picks one, one is the gold: chance 1/4.
QUADRANTS = [[0, 0, 100, 50], [100, 0, 100, 50], [0, 50, 100, 50], [100, 50, 100, 50]]


@pytest.fixture(scope="module")
def scoring():
    return load_scoring_config("official")


@pytest.fixture(scope="module")
def adapter(scoring):
    return benchmark("refcoco", scoring)


@pytest.fixture(scope="module")
def hand_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("refcoco")
    write_refcoco(root, [
        {"split": "val", "question_id": "101", "bbox": GOLD, "answer": ["the dog on the right", "brown dog"]},
        {"split": "testA", "question_id": "202", "bbox": [0.0, 0.0, 20.0, 10.0], "answer": ["top left thing"]},
    ], SIZE)
    return root


def test_reads_the_parquet_layout(adapter, hand_folder):
    items = adapter.load(hand_folder)
    assert [i.id for i in items] == ["202", "101"]  # sorted file order: testA before val
    dog = items[1]
    assert dog.gold == (100.0, 40.0, 150.0, 70.0)  # [x, y, w, h] became corners
    assert dog.image_size == SIZE and dog.subset == "val" and items[0].subset == "testA"
    assert dog.prompt[0]["type"] == "image" and dog.prompt[0]["image"][:4] == b"\x89PNG"
    assert '"the dog on the right"' in dog.prompt[1]["text"] and "bbox_2d" in dog.prompt[1]["text"]


@pytest.mark.parametrize("response,score", [
    ("[100, 40, 150, 70]", 1.0),
    ('[{"bbox_2d": [100, 40, 150, 70], "label": "the dog 2"}]', 1.0),
    ("(100, 40, 150, 70)", 1.0),
    ("[0.5, 0.4, 0.75, 0.7]", 1.0),        # normalised: all in [0, 1], scaled by 200 x 100
    ("[100, 40, 50, 30]", 0.0),            # the COCO [x, y, w, h] echoed as corners: an inverted box
    ("[115, 50, 135, 60]", 0.0),           # centre inside the gold box but IoU 200/1500 < 0.5
    ("[100, 40, 150, 55]", 1.0),           # IoU exactly 750/1500 = 0.5: >= counts
    ("[0.5, 40, 0.75, 70]", 0.0),          # not all in [0, 1]: absolute pixels, a sliver far left
    ("[125, 55]", 0.0),                    # a point is a zero-size box: IoU 0
    ("I think it is the dog.", 0.0),
    ("", 0.0),
])
def test_hand_worked_answers(adapter, hand_folder, response, score):
    dog = adapter.load(hand_folder)[1]
    assert adapter.score(dog, response).score == score


def test_threshold_comes_from_the_scoring_config(scoring, hand_folder):
    loose = dataclasses.replace(scoring, refcoco=dataclasses.replace(scoring.refcoco, iou_threshold=0.1))
    adapter = benchmark("refcoco", loose)
    dog = adapter.load(hand_folder)[1]
    assert adapter.score(dog, "[115, 50, 135, 60]").score == 1.0


def test_parsed_answer_is_the_pixel_box(adapter, hand_folder):
    dog = adapter.load(hand_folder)[1]
    assert adapter.score(dog, "[0.5, 0.4, 0.75, 0.7]").parsed == [100.0, 40.0, 150.0, 70.0]
    assert adapter.score(dog, "nothing").parsed is None


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    root = tmp_path_factory.mktemp("refcoco_many")
    rng = random.Random(7)
    rows = [{"split": rng.choice(["val", "testB"]), "question_id": str(1000 + i),
             "bbox": [float(v) for v in rng.choice(QUADRANTS)], "answer": [f"thing {i}"]} for i in range(160)]
    write_refcoco(root, rows, SIZE)
    return root, rows


def test_gold_double_scores_one_and_random_double_scores_near_chance(adapter, many):
    root, rows = many
    items = adapter.load(root)
    gold_by_id = {r["question_id"]: r["bbox"] for r in rows}
    xyxy = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]  # noqa: E731  what a right model outputs
    answers = [json.dumps([{"bbox_2d": xyxy(gold_by_id[i.id]), "label": "x"}]) for i in items]
    scores = [adapter.score(i, a).score for i, a in zip(items, answers)]
    assert adapter.aggregate(items, scores)[0] == 1.0
    rng = random.Random(0)
    guesses = [str(xyxy(rng.choice(QUADRANTS))) for _ in items]
    score, n, by, _ = adapter.aggregate(items, [adapter.score(i, g).score for i, g in zip(items, guesses)])
    assert n == 160 and set(by) == {"val", "testB"}
    assert abs(score - 0.25) < 0.1


def test_bad_rows_name_the_file_row_and_field(adapter, tmp_path):
    write_refcoco(tmp_path, [{"split": "val", "question_id": "1", "bbox": GOLD, "answer": ["a"]},
                             {"split": "val", "question_id": "2", "bbox": [1.0, 2.0, 0.0, 5.0], "answer": ["b"]}],
                  SIZE)
    with pytest.raises(BenchmarkDataError, match=r"val-00000-of-00001\.parquet row 1: field 'bbox'"):
        adapter.load(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkDataError, match="no \\*.parquet files"):
        adapter.load(tmp_path / "empty")


def test_duplicate_ids_fail(adapter, tmp_path):
    write_refcoco(tmp_path, [{"split": "val", "question_id": "1", "bbox": GOLD, "answer": ["a"]},
                             {"split": "val", "question_id": "1", "bbox": GOLD, "answer": ["b"]}], SIZE)
    with pytest.raises(BenchmarkDataError, match="appears twice"):
        adapter.load(tmp_path)
