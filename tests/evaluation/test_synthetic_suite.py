"""The synthetic held-out suite: the eval split written in public layouts, read back by the synthetic_<task>
adapters with the samples' own prompts and golds; a gold double scores 1, a random one its chance level."""
from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
from pathlib import Path

import pytest

from data.config import ResizeSpec, load_data_config, load_resize_spec
from data.reader import SampleReader
from evaluation.benchmarks import benchmark
from evaluation.benchmarks.synthetic import ADAPTERS, TASK_BENCHMARKS
from evaluation.scoring_config import load_scoring_config
from evaluation.synthetic_suite import LAYOUTS, SUITE_INDEX, SuiteError, write_suite

SAMPLES = 300  # all in the eval split: 30 per task
SEED = 0
RANDOM_ROUNDS = 20
THINK_OFF = "<think>\n</think>\n"


def eval_only_config():
    cfg = load_data_config("synthetic")
    cfg.splits = dataclasses.replace(cfg.splits, pretrain=0.0, heldout=0.0, rl=0.0, eval=1.0)
    return cfg


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from data.synth import generate

    cfg = eval_only_config()
    out = tmp_path_factory.mktemp("synthetic") / "ds"
    generate(out, SAMPLES, SEED, cfg, load_resize_spec(cfg.model))
    return out


@pytest.fixture(scope="module")
def suite(dataset, tmp_path_factory) -> dict[str, Path]:
    return write_suite(dataset, tmp_path_factory.mktemp("suite"))


@pytest.fixture(scope="module")
def scoring():
    return load_scoring_config("official")


@pytest.fixture(scope="module")
def samples(dataset) -> dict[str, list]:
    by_task: dict[str, list] = {}
    for record in SampleReader(dataset, split="eval", strict=True, load_images=False):
        by_task.setdefault(record.sample.task, []).append(record)
    return by_task


@pytest.fixture(scope="module")
def loaded(suite, scoring) -> dict[str, tuple]:
    out = {}
    for name, folder in suite.items():
        adapter = benchmark(name, scoring)
        out[name] = (adapter, adapter.load(folder))
    return out


def gold_response(task: str, target: dict) -> str:
    """The training answer format, from the sample's target alone (independent of the adapters)."""
    if task in ("vqa", "chart", "ocr"):
        return THINK_OFF + target["answer"]
    if task == "counting":
        return THINK_OFF + str(target["count"])
    if task in ("math", "reasoning", "text"):
        return f"{THINK_OFF}So the answer is \\boxed{{{target['answer']}}}."
    x1, y1, x2, y2 = target["box"]
    centre = [(x1 + x2) // 2, (y1 + y2) // 2]
    if task == "grounding":
        return THINK_OFF + json.dumps([{"bbox_2d": target["box"], "label": target["label"]}])
    if task == "point":
        return THINK_OFF + json.dumps([{"point_2d": centre, "label": target["label"]}])
    assert task == "gui"
    return THINK_OFF + json.dumps({"action": "click", "start_point": centre})


def expected_gold(task: str, target: dict):
    if task in ("vqa", "chart", "ocr", "text"):
        return [target["answer"]]
    if task in ("math", "reasoning"):
        return target["answer"]
    if task == "counting":
        return target["count"]
    return tuple(float(v) for v in target["box"])


def test_one_benchmark_per_task_of_the_split(suite, samples):
    assert set(samples) == set(LAYOUTS)
    assert suite == {f"synthetic_{task}": suite[f"synthetic_{task}"] for task in LAYOUTS}
    assert set(ADAPTERS) == set(suite) and set(TASK_BENCHMARKS) == set(LAYOUTS)
    index = json.loads((next(iter(suite.values())).parent / SUITE_INDEX).read_text())
    assert {name: entry["items"] for name, entry in index["benchmarks"].items()} == {
        f"synthetic_{task}": len(records) for task, records in samples.items()}
    assert index["benchmarks"]["synthetic_grounding"]["layout"] == "refcoco"


@pytest.mark.parametrize("task", sorted(LAYOUTS))
def test_every_eval_item_loads_with_its_prompt_image_and_gold(task, loaded, samples, dataset):
    adapter, items = loaded[TASK_BENCHMARKS[task]]
    records = samples[task]
    assert len(items) == len(records)
    by_id = {item.id: item for item in items}
    # Layouts with an id field keep the sample id; positional layouts keep the split's order.
    if all(r.sample.id in by_id for r in records):
        pairs = [(r, by_id[r.sample.id]) for r in records]
    else:
        pairs = list(zip(records, items))
    for record, item in pairs:
        sample = record.sample
        content = sample.messages[0]["content"]
        assert item.prompt[-1] == {"type": "text", "text": content[-1]["text"]}
        assert item.gold == expected_gold(task, sample.target), sample.id
        images = [part["image"] for part in item.prompt if part["type"] == "image"]
        if task == "text":
            assert images == []
        else:
            stored = (dataset / "eval" / sample.image_refs()[0]).read_bytes()
            assert len(images) == 1
            image = images[0]
            assert (image if isinstance(image, bytes) else Path(image).read_bytes()) == stored


@pytest.mark.parametrize("task", sorted(LAYOUTS))
def test_a_gold_answering_double_scores_one(task, loaded, samples):
    adapter, items = loaded[TASK_BENCHMARKS[task]]
    responses = [gold_response(task, r.sample.target) for r in samples[task]]
    by_id = {r.sample.id: response for r, response in zip(samples[task], responses)}
    if not all(item.id in by_id for item in items):
        by_id = {item.id: response for item, response in zip(items, responses)}
    scores = [adapter.score(item, by_id[item.id]).score for item in items]
    assert scores == [1.0] * len(items)


@pytest.mark.parametrize("task", sorted(LAYOUTS))
def test_a_random_double_scores_near_the_stated_chance(task, loaded):
    adapter, items = loaded[TASK_BENCHMARKS[task]]
    chance = adapter.chance(items)
    assert 0.0 < chance < 0.5
    spaces = adapter.answer_spaces(items)
    rng = random.Random(f"random-double:{task}")
    scores = []
    for _ in range(RANDOM_ROUNDS):
        for item in items:
            answer = rng.choice(spaces[adapter.question_kind(item.prompt[-1]["text"])])
            scores.append(adapter.score(item, adapter.response_for(item, answer)).score)
    mean = sum(scores) / len(scores)
    assert abs(mean - chance) <= 4 * math.sqrt(chance * (1 - chance) / len(scores)) + 0.01


@pytest.mark.parametrize("task", ["vqa", "chart", "counting", "math", "text"])
def test_the_analytic_chance_is_the_exhaustive_expectation(task, loaded):
    adapter, items = loaded[TASK_BENCHMARKS[task]]
    spaces = adapter.answer_spaces(items)
    exhaustive = 0.0
    for item in items:
        space = spaces[adapter.question_kind(item.prompt[-1]["text"])]
        exhaustive += sum(adapter.score(item, adapter.response_for(item, a)).score for a in space) / len(space)
    assert adapter.chance(items) == pytest.approx(exhaustive / len(items))


def test_chance_levels_by_question_kind(loaded):
    adapter, items = loaded["synthetic_counting"]
    counts = {item.gold for item in items}
    assert adapter.chance(items) == pytest.approx(1 / len(counts))
    adapter, items = loaded["synthetic_vqa"]
    kinds = {item.subset for item in items}
    assert kinds <= {"colour", "shape", "size", "position"} and len(kinds) > 1
    spaces = {kind: {item.gold[0] for item in items if item.subset == kind} for kind in kinds}
    assert spaces.get("size", {"small", "large"}) <= {"small", "large"}
    assert adapter.chance(items) == pytest.approx(sum(1 / len(spaces[item.subset]) for item in items) / len(items))
    assert adapter.aggregate(items, [1.0] * len(items))[2] == {kind: 1.0 for kind in sorted(kinds)}


def test_targets_in_resized_coordinates_are_scaled_to_stored_pixels(tmp_path, scoring):
    from data.synth import generate

    cfg = eval_only_config()
    cfg.task_weights = dataclasses.replace(cfg.task_weights, eval={"grounding": 1.0})
    half = ResizeSpec(factor=28, min_pixels=28 * 28, max_pixels=56 * 56)  # the 112 x 112 scene -> 56 x 56
    assert half.resized(*cfg.canvas.scene) == (56, 56)
    generate(tmp_path / "ds", 12, SEED, cfg, half)
    folders = write_suite(tmp_path / "ds", tmp_path / "suite")
    assert list(folders) == ["synthetic_grounding"]
    items = benchmark("synthetic_grounding", scoring).load(folders["synthetic_grounding"])
    targets = [r.sample.target["box"] for r in SampleReader(tmp_path / "ds", split="eval", load_images=False)]
    assert [item.gold for item in items] == [tuple(2.0 * v for v in box) for box in targets]
    assert {item.image_size for item in items} == {(112, 112)}


def test_a_second_write_replaces_the_suite_and_bad_splits_fail(dataset, tmp_path):
    first = write_suite(dataset, tmp_path / "suite")
    (first["synthetic_vqa"] / "stale.txt").write_text("x")
    again = write_suite(dataset, tmp_path / "suite")
    assert again == first and not (again["synthetic_vqa"] / "stale.txt").exists()
    assert not [p for p in (tmp_path / "suite").iterdir() if p.name.startswith(".")]
    with pytest.raises(SuiteError, match="no samples"):
        write_suite(dataset, tmp_path / "other", split="rl")
    broken = tmp_path / "no-manifest"
    shutil.copytree(dataset / "eval", broken / "eval")
    with pytest.raises(SuiteError, match="manifest.json: missing"):
        write_suite(broken, tmp_path / "other")
