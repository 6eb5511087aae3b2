"""charades_sta: the original text file and the lmms-lab parquet, mean temporal IoU, R@1 thresholds in `by`."""
from __future__ import annotations

import dataclasses
import random

import pytest

from evaluation.benchmarks import benchmark
from evaluation.benchmarks.base import BenchmarkDataError
from evaluation.scoring_config import load_scoring_config
from tests.evaluation.fixtures_localisation import write_charades_parquet, write_charades_txt


@pytest.fixture(scope="module")
def scoring():
    return load_scoring_config("official")


@pytest.fixture(scope="module")
def adapter(scoring):
    return benchmark("charades_sta", scoring)


LINES = [("3MSZA", 10.0, 20.0, "person turns a light on."), ("AO8RW", 0.0, 6.9, "a person is putting a book down.")]


@pytest.fixture(scope="module")
def items(adapter, tmp_path_factory):
    root = tmp_path_factory.mktemp("charades")
    write_charades_txt(root, LINES)
    return adapter.load(root)


def test_reads_the_text_layout(items):
    assert [i.id for i in items] == ["charades_sta_test:0", "charades_sta_test:1"]
    assert items[0].gold == (10.0, 20.0) and items[1].gold == (0.0, 6.9)
    (part,) = items[0].prompt  # no video part: the eval job cannot decode video yet
    assert part["type"] == "text" and "Charades_v1_480/3MSZA.mp4" in part["text"]
    assert "person turns a light on." in part["text"] and "[mm:ss, mm:ss]" in part["text"]


@pytest.mark.parametrize("response,score", [
    ("\\boxed{[00:10, 00:20]}", 1.0),
    ("The moment is [0:10, 0:20].", 1.0),
    ("\\boxed{[10, 20]}", 1.0),             # seconds
    ("[00:15, 00:25]", 5 / 15),
    ("\\boxed{00:12, 00:18}", 0.6),         # boxed without brackets
    ("<think>[00:10, 00:20]</think>\\boxed{[01:10, 01:20]}", 0.0),  # the boxed answer counts: 70-80 s
    ("[00:20, 00:10]", 0.0),                # inverted
    ("[00:10, 00:75]", 0.0),                # 75 is no mm:ss second
    ("between ten and twenty seconds", 0.0),
    ("", 0.0),
])
def test_hand_worked_answers(adapter, items, response, score):
    assert adapter.score(items[0], response).score == pytest.approx(score, abs=1e-12)


def test_mean_iou_and_recall_thresholds(adapter, items, scoring):
    four = [items[0]] * 4
    responses = ["[00:10, 00:20]", "[00:15, 00:25]", "\\boxed{00:12, 00:18}", "[01:00, 01:05]"]
    scores = [adapter.score(i, r).score for i, r in zip(four, responses)]  # 1, 1/3, 0.6, 0
    mean, n, by, units = adapter.aggregate(four, scores)
    assert n == 4 and units == scores and mean == pytest.approx((1 + 1 / 3 + 0.6) / 4)
    assert by == {"R@1,IoU>=0.3": 0.75, "R@1,IoU>=0.5": 0.5, "R@1,IoU>=0.7": 0.25}
    strict = dataclasses.replace(scoring, charades_sta=dataclasses.replace(scoring.charades_sta,
                                                                           recall_iou_thresholds=[0.9]))
    assert benchmark("charades_sta", strict).aggregate(four, scores)[2] == {"R@1,IoU>=0.9": 0.25}
    assert not adapter.binary


def test_reads_the_parquet_layout(adapter, tmp_path):
    write_charades_parquet(tmp_path, LINES)
    loaded = adapter.load(tmp_path)
    assert [i.id for i in loaded] == ["0", "1"] and loaded[1].gold == (0.0, 6.9)
    assert "AO8RW.mp4" in loaded[1].prompt[0]["text"]


def test_gold_double_scores_one_random_double_near_chance(adapter, tmp_path):
    rng = random.Random(3)
    lines = []
    for i in range(200):
        start = round(rng.uniform(0, 20), 1)
        lines.append((f"V{i:04d}", start, round(start + rng.uniform(2, 10), 1), f"event {i}"))
    write_charades_txt(tmp_path, lines)
    loaded = adapter.load(tmp_path)

    def mmss(seconds: float) -> str:
        return f"{int(seconds // 60):02d}:{seconds % 60:04.1f}"

    gold = [f"\\boxed{{[{mmss(s)}, {mmss(e)}]}}" for _, s, e, _ in lines]  # answers from the gold file
    mean, _, by, _ = adapter.aggregate(loaded, [adapter.score(i, g).score for i, g in zip(loaded, gold)])
    assert mean == pytest.approx(1.0) and set(by.values()) == {1.0}
    # half the time the gold span, else one that ends before it starts: mean IoU and every R@1 near 0.5
    guesses = [g if rng.random() < 0.5 else f"[{mmss(s + 40)}, {mmss(e + 40)}]"
               for g, (_, s, e, _) in zip(gold, lines)]
    mean, _, by, _ = adapter.aggregate(loaded, [adapter.score(i, g).score for i, g in zip(loaded, guesses)])
    assert abs(mean - 0.5) < 0.1 and all(abs(v - mean) < 1e-9 for v in by.values())


@pytest.mark.parametrize("text,message", [
    ("3MSZA 10.0 20.0 person turns a light on.\n", "line 1: must be `VIDEOID start end##sentence`"),
    ("ok 1.0 2.0##fine\n3MSZA ten 20.0##x\n", "line 2: start and end must be seconds"),
    ("3MSZA 20.0 10.0##backwards\n", "line 1: the span must have 0 <= start <= end"),
])
def test_bad_lines_name_the_line(adapter, tmp_path, text, message):
    (tmp_path / "charades_sta_test.txt").write_text(text, encoding="utf-8")
    with pytest.raises(BenchmarkDataError, match=message):
        adapter.load(tmp_path)
