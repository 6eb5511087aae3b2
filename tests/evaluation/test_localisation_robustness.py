"""Every localisation adapter scores any response text in [0, 1] without raising (empty, huge, malformed)."""
from __future__ import annotations

import random

import pytest

from evaluation.benchmarks import benchmark
from evaluation.scoring_config import load_scoring_config
from tests.evaluation import fixtures_localisation as fx

ALPHABET = "[](){}\\boxed,.:-+e0123456789 abcxyz\"'\n点🐱" + "bbox_2d" + "</think>"
HOSTILE = ["", " " * 10, "1" * 200_000, "[" * 100_000, "(" * 100_000 + ")" * 100_000,
           "\\boxed{" + "{" * 100_000 + "}" * 100_000 + "}", "[1," * 100_000, "[" + "9" * 5000 + ", 1]",
           "[99999999999999999999999999999999999999999999, 0, 1e999, 5]", "[nan, inf, 1, 2]",
           "x" * 1_000_000 + "[1, 2, 3, 4]"]


def _folder(name: str, root):
    if name == "refcoco":
        fx.write_refcoco(root, [{"split": "val", "question_id": "1", "bbox": [10, 10, 20, 20], "answer": ["a"]}],
                         (64, 64))
    elif name == "screenspot_v2":
        fx.write_screenspot_v2(root, {"web": [{"img_filename": "a.png", "bbox": [1, 1, 10, 10], "instruction": "a",
                                               "data_type": "icon", "data_source": "x"}]}, (64, 64))
    elif name == "screenspot_pro":
        fx.write_screenspot_pro(root, {"app": [{"img_filename": "app/a.png", "bbox": [1, 1, 10, 10],
                                                "img_size": [64, 64], "instruction": "a", "group": "Dev"}]})
    elif name == "osworld_g":
        fx.write_osworld_g_json(root, [
            {"id": t, "image_path": f"{t}.png", "instruction": "a", "box_type": t, "box_coordinates": c}
            for t, c in (("bbox", [1, 1, 10, 10]), ("polygon", [0, 0, 10, 0, 0, 10]), ("refusal", []))], (64, 64))
    else:
        fx.write_charades_txt(root, [("V", 1.0, 4.5, "a")])


@pytest.mark.parametrize("name", ["refcoco", "screenspot_v2", "screenspot_pro", "osworld_g", "charades_sta"])
def test_any_response_scores_in_range_without_raising(name, tmp_path):
    adapter = benchmark(name, load_scoring_config("official"))
    _folder(name, tmp_path)
    items = adapter.load(tmp_path)
    rng = random.Random(0)
    garbage = ["".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 60))) for _ in range(300)]
    for item in items:
        for response in HOSTILE + garbage:
            result = adapter.score(item, response)
            assert 0.0 <= result.score <= 1.0, (name, response[:40])
    for item in items:
        for response in HOSTILE[:-1]:
            assert adapter.score(item, response).score == 0.0, (name, response[:40])
