"""screenspot_v2 and screenspot_pro: JSON + image folders, centre accuracy on hand-worked answers."""
from __future__ import annotations

import random

import pytest

from evaluation.benchmarks import benchmark
from evaluation.benchmarks.base import BenchmarkDataError
from evaluation.scoring_config import load_scoring_config
from tests.evaluation.fixtures_localisation import write_screenspot_pro, write_screenspot_v2

V2_SIZE = (400, 300)


@pytest.fixture(scope="module")
def scoring():
    return load_scoring_config("official")


def _v2_record(name: str, bbox: list[float], data_type: str = "text") -> dict:
    return {"img_filename": name, "bbox": bbox, "instruction": f"open {name}", "data_type": data_type,
            "data_source": "ios"}


@pytest.fixture(scope="module")
def v2_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("screenspot_v2")
    write_screenspot_v2(root, {
        "mobile": [_v2_record("m0.png", [300, 20, 40, 20]), _v2_record("m1.png", [0, 0, 10, 10], "icon")],
        "web": [_v2_record("w0.png", [10, 10, 100, 50], "icon")],
    }, V2_SIZE)
    return root


def test_v2_reads_the_layout(scoring, v2_folder):
    items = benchmark("screenspot_v2", scoring).load(v2_folder)
    assert [i.id for i in items] == ["screenspot_mobile_v2:0", "screenspot_mobile_v2:1", "screenspot_web_v2:0"]
    assert items[0].gold == (300.0, 20.0, 340.0, 40.0)  # [x, y, w, h] became corners
    assert [i.subset for i in items] == ["mobile_text", "mobile_icon", "web_icon"]
    assert items[0].image_size == V2_SIZE and items[0].prompt[0]["image"] == v2_folder / "screenspot_imgs" / "m0.png"
    assert '"open m0.png"' in items[0].prompt[1]["text"]


@pytest.mark.parametrize("response,score", [
    ("[320, 30]", 1.0),
    ("(320, 30)", 1.0),
    ('[{"bbox_2d": [300, 20, 340, 40], "label": "Settings"}]', 1.0),
    ("[310, 25, 330, 35]", 1.0),        # a box: its centre (320, 30) is inside, whatever its IoU
    ("[300, 20, 40, 20]", 0.0),         # the gold [x, y, w, h] echoed as corners: centre (170, 20), outside
    ("[0.8, 0.1]", 1.0),                # normalised point: (320, 30)
    ("[340, 40]", 1.0),                 # the corner: edges are in
    ("[341, 40]", 0.0),
    ("[1, 1]", 0.0),                    # all in [0, 1]: normalised, i.e. the bottom-right corner (400, 300)
    ("click(320, 30, 7)", 0.0),         # three numbers are neither a point nor a box
    ("the settings icon", 0.0),
    ("", 0.0),
])
def test_v2_hand_worked_answers(scoring, v2_folder, response, score):
    adapter = benchmark("screenspot_v2", scoring)
    assert adapter.score(adapter.load(v2_folder)[0], response).score == score


def test_v2_missing_image_names_the_record(scoring, tmp_path):
    write_screenspot_v2(tmp_path, {"desktop": [_v2_record("d0.png", [1, 1, 5, 5])]}, V2_SIZE)
    (tmp_path / "screenspot_imgs" / "d0.png").unlink()
    with pytest.raises(BenchmarkDataError, match=r"screenspot_desktop_v2\.json record 0: field 'img_filename'"):
        benchmark("screenspot_v2", scoring).load(tmp_path)


PRO_SIZE = [1920, 1080]


def _pro_record(app: str, bbox: list[float], group: str, **extra) -> dict:
    return {"img_filename": f"{app}/shot.png", "bbox": bbox, "img_size": PRO_SIZE, "instruction": f"use {app}",
            "instruction_cn": "", "platform": "macos", "application": app, "ui_type": "icon", "group": group,
            **extra}


@pytest.fixture(scope="module")
def pro_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("screenspot_pro")
    write_screenspot_pro(root, {
        "vscode_macos": [_pro_record("vscode_macos", [100, 200, 180, 240], "Dev", id="vscode_0"),
                         _pro_record("vscode_macos", [0, 0, 50, 50], "Dev", id="vscode_1")],
        "photoshop_windows": [_pro_record("photoshop_windows", [1000, 500, 1100, 600], "Creative")],
    })
    return root


def test_pro_reads_the_layout(scoring, pro_folder):
    items = benchmark("screenspot_pro", scoring).load(pro_folder)
    # sorted annotation files; the id field when present, else <file stem>:<index>
    assert [i.id for i in items] == ["photoshop_windows:0", "vscode_0", "vscode_1"]
    assert items[1].gold == (100.0, 200.0, 180.0, 240.0)  # already corners
    assert items[1].image_size == (1920, 1080) and [i.subset for i in items] == ["Creative", "Dev", "Dev"]
    assert items[1].prompt[0]["image"] == pro_folder / "images" / "vscode_macos" / "shot.png"


@pytest.mark.parametrize("response,score", [
    ("[140, 220]", 1.0),
    ("[150, 260]", 0.0),                 # inside only if the corners were misread as [x, y, w, h]
    ("[0.0729, 0.2037]", 1.0),           # normalised by img_size: (140.0, 220.0)
    ('{"bbox_2d": [120, 210, 160, 230]}', 1.0),
    ("[100, 200, 180, 240] is the box; point [5, 5]", 1.0),  # a box anywhere wins over a point
])
def test_pro_hand_worked_answers(scoring, pro_folder, response, score):
    adapter = benchmark("screenspot_pro", scoring)
    assert adapter.score(adapter.load(pro_folder)[1], response).score == score


@pytest.fixture(scope="module")
def v2_many(tmp_path_factory):
    root = tmp_path_factory.mktemp("screenspot_v2_many")
    rng = random.Random(11)
    records: dict[str, list[dict]] = {"mobile": [], "desktop": [], "web": []}
    for i in range(150):
        w, h = rng.uniform(40, 200), rng.uniform(30, 150)
        bbox = [rng.uniform(0, V2_SIZE[0] - w), rng.uniform(0, V2_SIZE[1] - h), w, h]
        records[rng.choice(list(records))].append(_v2_record(f"s{i}.png", bbox, rng.choice(["text", "icon"])))
    write_screenspot_v2(root, records, V2_SIZE)
    return root, records


def test_v2_gold_double_scores_one_random_double_near_chance(scoring, v2_many):
    root, records = v2_many
    adapter = benchmark("screenspot_v2", scoring)
    items = adapter.load(root)
    by_id = {f"screenspot_{p}_v2:{i}": r["bbox"] for p, rs in records.items() for i, r in enumerate(rs)}
    # the double answers from the gold file: the centre of [x, y, w, h]
    answers = [f"[{b[0] + b[2] / 2:.1f}, {b[1] + b[3] / 2:.1f}]" for b in (by_id[i.id] for i in items)]
    score, n, by, _ = adapter.aggregate(items, [adapter.score(i, a).score for i, a in zip(items, answers)])
    assert score == 1.0 and n == 150 and set(by) <= {f"{p}_{t}" for p in records for t in ("text", "icon")}
    # a uniform random click hits a box with probability area(box) / area(image)
    chance = sum(b[2] * b[3] for b in by_id.values()) / (len(by_id) * V2_SIZE[0] * V2_SIZE[1])
    rng = random.Random(1)
    clicks = [f"[{rng.uniform(0, V2_SIZE[0]):.1f}, {rng.uniform(0, V2_SIZE[1]):.1f}]" for _ in items]
    random_score = adapter.aggregate(items, [adapter.score(i, c).score for i, c in zip(items, clicks)])[0]
    assert abs(random_score - chance) < 0.1 and 0.02 < chance < 0.3
