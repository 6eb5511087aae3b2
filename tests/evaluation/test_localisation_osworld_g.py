"""osworld_g: JSON + images or parquet, boxes, polygons and refusal items, centre accuracy."""
from __future__ import annotations

import random

import pytest

from evaluation.benchmarks import benchmark
from evaluation.benchmarks.base import BenchmarkDataError
from evaluation.scoring_config import load_scoring_config
from tests.evaluation.fixtures_localisation import write_osworld_g_json, write_osworld_g_parquet

SIZE = (1000, 500)
# An L shape: the notch (700..800, 300..400) is outside.
L_SHAPE = [600, 200, 800, 200, 800, 300, 700, 300, 700, 400, 600, 400]


def _record(item_id: str, box_type: str, coordinates: list[float]) -> dict:
    return {"id": item_id, "image_path": f"images/{item_id}.png", "image_size": list(SIZE),
            "instruction": f"do {item_id}", "box_type": box_type, "box_coordinates": coordinates,
            "GUI_types": ["Button"]}


RECORDS = [_record("box", "bbox", [600, 100, 100, 50]), _record("poly", "polygon", L_SHAPE),
           _record("none", "refusal", [-1, -1, -1, -1])]


@pytest.fixture(scope="module")
def adapter():
    return benchmark("osworld_g", load_scoring_config("official"))


@pytest.fixture(scope="module")
def items(adapter, tmp_path_factory):
    root = tmp_path_factory.mktemp("osworld_g")
    write_osworld_g_json(root, RECORDS, SIZE)
    return {i.id: i for i in adapter.load(root)}


def test_reads_the_json_layout(items, tmp_path_factory):
    assert list(items) == ["box", "poly", "none"]
    assert items["box"].gold == (600.0, 100.0, 700.0, 150.0)  # [x, y, w, h] became corners
    assert items["poly"].gold[:2] == [(600.0, 200.0), (800.0, 200.0)] and len(items["poly"].gold) == 6
    assert [i.subset for i in items.values()] == ["bbox", "polygon", "refusal"]
    assert items["box"].image_size == SIZE and items["box"].prompt[0]["image"].name == "box.png"


@pytest.mark.parametrize("item_id,response,score", [
    ("box", "[650, 125]", 1.0),
    ("box", '[{"bbox_2d": [640, 110, 660, 140], "label": "OK"}]', 1.0),
    ("box", "[600, 100, 100, 50]", 0.0),   # the gold [x, y, w, h] echoed as corners: centre (350, 75)
    ("box", "[0.65, 0.25]", 1.0),          # normalised: (650, 125)
    ("box", "[-1, -1]", 0.0),              # a refusal on an item that has a target
    ("poly", "[650, 350]", 1.0),           # the lower arm of the L
    ("poly", "[750, 250]", 1.0),           # the right arm
    ("poly", "[750, 350]", 0.0),           # the notch: inside the polygon's bounding box, outside the polygon
    ("poly", "[700, 350]", 1.0),           # on an edge
    ("poly", "[0.75, 0.7]", 0.0),          # normalised into the notch
    ("none", "[-1, -1]", 1.0),             # refusal items: right only for a negative point
    ("none", "[-1, -1, -1, -1]", 1.0),
    ("none", "[650, 125]", 0.0),
    ("none", "[-1, 5]", 0.0),
    ("none", "The element is not on the screen.", 0.0),  # words: no judge offline
    ("none", "", 0.0),
])
def test_hand_worked_answers(adapter, items, item_id, response, score):
    assert adapter.score(items[item_id], response).score == score


def test_reads_the_parquet_layout_with_sizes_from_the_image_header(adapter, tmp_path):
    write_osworld_g_parquet(tmp_path, RECORDS, SIZE)
    loaded = adapter.load(tmp_path)
    assert [i.id for i in loaded] == ["box", "poly", "none"]
    assert loaded[0].image_size == SIZE and loaded[0].prompt[0]["image"][:4] == b"\x89PNG"
    assert adapter.score(loaded[0], "[0.65, 0.25]").score == 1.0


@pytest.mark.parametrize("record,message", [
    (_record("odd", "polygon", [1, 2, 3, 4, 5]), "even number"),
    (_record("kind", "circle", [1, 2, 3]), "bbox, polygon or refusal"),
    (_record("flat", "bbox", [1, 2, 0, 4]), "w, h > 0"),
])
def test_bad_records_name_the_file_record_and_field(adapter, tmp_path, record, message):
    write_osworld_g_json(tmp_path, [RECORDS[0], record], SIZE)
    with pytest.raises(BenchmarkDataError, match=rf"OSWorld-G\.json record 1: .*{message}"):
        adapter.load(tmp_path)


def _polygon_area(flat: list[float]) -> float:
    xs, ys = flat[0::2], flat[1::2]
    return abs(sum(xs[i] * ys[(i + 1) % len(xs)] - xs[(i + 1) % len(xs)] * ys[i] for i in range(len(xs)))) / 2


def test_gold_double_scores_one_random_double_near_chance(adapter, tmp_path):
    rng = random.Random(5)
    records = []
    for i in range(150):
        kind = rng.choice(["bbox", "bbox", "polygon", "refusal"])
        x, y = rng.uniform(0, 600), rng.uniform(0, 300)
        if kind == "polygon":  # an L scaled into the image
            coordinates = [x + (v - 600) if j % 2 == 0 else y + (v - 200) for j, v in enumerate(L_SHAPE)]
        else:
            coordinates = [x, y, rng.uniform(30, 300), rng.uniform(30, 150)]
        records.append(_record(f"g{i}", kind, coordinates))
    write_osworld_g_json(tmp_path, records, SIZE)
    loaded = adapter.load(tmp_path)

    def gold_answer(record: dict) -> str:  # answers from the gold file
        c = record["box_coordinates"]
        if record["box_type"] == "refusal":
            return "[-1, -1]"
        if record["box_type"] == "polygon":
            return f"[{c[0] + 50}, {c[1] + 150}]"  # a point in the L's lower arm
        return f"[{c[0] + c[2] / 2}, {c[1] + c[3] / 2}]"

    scores = [adapter.score(i, gold_answer(r)).score for i, r in zip(loaded, records)]
    score, n, by, _ = adapter.aggregate(loaded, scores)
    assert score == 1.0 and n == 150 and set(by) == {"bbox", "polygon", "refusal"}

    image_area = SIZE[0] * SIZE[1]
    chance = sum(0.0 if r["box_type"] == "refusal" else
                 (_polygon_area(r["box_coordinates"]) if r["box_type"] == "polygon"
                  else r["box_coordinates"][2] * r["box_coordinates"][3]) / image_area for r in records) / len(records)
    guesses = [f"[{rng.uniform(0, SIZE[0]):.1f}, {rng.uniform(0, SIZE[1]):.1f}]" for _ in loaded]
    random_score = adapter.aggregate(loaded, [adapter.score(i, g).score for i, g in zip(loaded, guesses)])[0]
    assert abs(random_score - chance) < 0.08 and 0.01 < chance < 0.3
