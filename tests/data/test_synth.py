import dataclasses
import json
import random
import re
import shutil
import subprocess
import sys
from collections import deque

import numpy as np
import pytest
from PIL import Image

from conf import REPO_ROOT, ConfigError, load_group, validated
from data.config import SPLITS, ResizeSpec, SynthConfig, load_data_config, load_data_group
from data.manifest import load_manifest, verify_manifest
from data.render import Shape, render
from data.schema import TASKS, VERIFIABLE_TASKS, Sample
from data.synth import GenerationError, find_split_overlaps, generate, main, synthetic_text
from data.synth_tasks import BUILDERS, POSITIONS, THINK_OFF

from .conftest import DATASET_SAMPLES


def _samples(root, split):
    out = []
    for shard in sorted((root / split).glob("*.jsonl")):
        out += [Sample.from_json(line, file=str(shard), line_no=i) for i, line in enumerate(shard.open(), 1)]
    return out


def _image(root, split, sample, k=0):
    return np.asarray(Image.open(root / split / sample.image_refs()[k]).convert("RGB"))


def _components(mask):
    """Number of 4-connected components of a boolean mask (an oracle independent of the generator)."""
    seen = np.zeros_like(mask)
    h, w = mask.shape
    count = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        count += 1
        seen[y, x] = True
        queue = deque([(y, x)])
        while queue:
            cy, cx = queue.popleft()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
    return count


def _non_background(pixels, cfg):
    return np.any(pixels != np.array(cfg.background, dtype=pixels.dtype), axis=-1)


# ------------------------------------------------------------------------------------------- data set

def test_manifest_counts_and_files(dataset_dir, synth_cfg):
    manifest = load_manifest(str(dataset_dir))
    assert verify_manifest(dataset_dir) == []
    assert sum(info["samples"] for info in manifest["splits"].values()) == DATASET_SAMPLES
    for split in SPLITS:
        samples = _samples(dataset_dir, split)
        info = manifest["splits"][split]
        assert len(samples) == info["samples"] > 0
        counts = {task: sum(s.task == task for s in samples) for task in info["tasks"]}
        assert counts == info["tasks"]
        assert info["images"] == sum(len(s.image_refs()) for s in samples)
        assert len({s.id for s in samples}) == len(samples)
    assert set(manifest["splits"]["pretrain"]["tasks"]) == set(TASKS)
    for split in ("rl", "eval"):
        assert set(manifest["splits"][split]["tasks"]) == {t for t, w in synth_cfg.weights(split).items() if w > 0}


def test_splits_hold_the_right_kind_of_sample(dataset_dir):
    for sample in _samples(dataset_dir, "pretrain"):
        answer = sample.response_text()
        assert answer.startswith("<think>\n")
        if sample.task == "reasoning":
            assert len(answer.split("</think>")[0]) > 100 and "\\boxed{" in answer.split("</think>")[1]
        else:
            assert answer.startswith(THINK_OFF)
    for split in ("rl", "eval"):
        for sample in _samples(dataset_dir, split):
            assert not sample.has_response and sample.target is not None
            assert sample.task in VERIFIABLE_TASKS | {"text"}


def test_splits_share_no_image_and_no_prompt(dataset_dir):
    assert find_split_overlaps(dataset_dir) == []
    manifest = load_manifest(str(dataset_dir))
    digests = {split: {sha for path, sha in manifest["files"].items()
                       if path.startswith(f"{split}/images/")} for split in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert digests[a].isdisjoint(digests[b])
    texts = {split: {s.messages[0]["content"][0]["text"] for s in _samples(dataset_dir, split) if s.task == "text"}
             for split in SPLITS}
    assert texts["eval"] and texts["eval"].isdisjoint(texts["pretrain"] | texts["rl"])
    assert texts["rl"].isdisjoint(texts["pretrain"])


def test_the_overlap_check_finds_a_leaked_sample(dataset_dir, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(dataset_dir, root)
    leaked = next(s for s in _samples(root, "eval") if s.image_refs())
    shutil.copy(root / "eval" / leaked.image_refs()[0], root / "pretrain" / "images" / "leak.png")
    prompt = json.loads(leaked.to_json())
    prompt["id"] = "pretrain-leak"
    prompt["messages"][0]["content"] = [dict(p, image="images/leak.png") if p["type"] == "image" else p
                                        for p in prompt["messages"][0]["content"]]
    with open(root / "pretrain" / "shard-00000.jsonl", "a") as f:
        f.write(json.dumps(prompt) + "\n")
    problems = find_split_overlaps(root)
    assert any(p.startswith("image ") and "['eval', 'pretrain']" in p for p in problems)
    assert any(p.startswith("prompt ") and "['eval', 'pretrain']" in p for p in problems)
    assert any(p.endswith("not in the manifest") for p in verify_manifest(root))


def test_verify_manifest_reports_changed_and_missing_files(dataset_dir, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(dataset_dir, root)
    images = sorted((root / "rl" / "images").iterdir())
    images[0].write_bytes(images[0].read_bytes() + b"\0")
    images[1].unlink()
    problems = verify_manifest(root)
    assert f"rl/images/{images[0].name}: sha256 differs from the manifest" in problems
    assert f"rl/images/{images[1].name}: missing" in problems
    assert len(problems) == 2


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, synth_cfg, resize_spec):
    first = generate(tmp_path / "a", 120, 7, synth_cfg, resize_spec)
    second = generate(tmp_path / "b", 120, 7, synth_cfg, resize_spec)
    other = generate(tmp_path / "c", 120, 8, synth_cfg, resize_spec)
    assert first["digest"] == second["digest"]
    assert first["files"] == second["files"]
    for rel in first["files"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert other["digest"] != first["digest"]


def test_held_out_splits_do_not_depend_on_the_pretraining_size(tmp_path, synth_cfg, resize_spec):
    small = dataclasses.replace(synth_cfg, splits=dataclasses.replace(synth_cfg.splits, pretrain=0.5, heldout=0.0, rl=0.25,
                                                                        eval=0.25))
    big = dataclasses.replace(synth_cfg, splits=dataclasses.replace(synth_cfg.splits, pretrain=0.75, heldout=0.0, rl=0.125,
                                                                      eval=0.125))
    a = generate(tmp_path / "a", 40, 1, small, resize_spec)
    b = generate(tmp_path / "b", 80, 1, big, resize_spec)
    assert a["splits"]["eval"]["samples"] == b["splits"]["eval"]["samples"] == 10
    assert {k: v for k, v in a["files"].items() if k.startswith("eval/")} == \
           {k: v for k, v in b["files"].items() if k.startswith("eval/")}


def test_an_exhausted_sample_space_is_an_error(tmp_path, synth_cfg, resize_spec):
    text = dataclasses.replace(synth_cfg.text, max_number=2, mul_max=2, names=["Ann", "Bo"], items=["cards"])
    weights = {"text": 1.0}
    cfg = dataclasses.replace(synth_cfg, text=text, max_attempts=5,
                              task_weights=dataclasses.replace(synth_cfg.task_weights, pretrain=weights, rl=weights,
                                                               eval=weights))
    with pytest.raises(GenerationError, match="no new 'text' sample after 5 draws"):
        generate(tmp_path / "x", 200, 0, cfg, resize_spec)
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []  # no staging folder left


def test_cli_writes_refuses_and_overwrites(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--samples", "30", "--seed", "2", "--model", "tiny"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["digest"] == load_manifest(str(out))["digest"] and summary["samples"] == 30
    assert main(["--out", str(out), "--samples", "30", "--seed", "2"]) == 1
    assert main(["--out", str(out), "--samples", "30", "--seed", "2", "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["digest"] == summary["digest"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no manifest.json"):
        generate(tmp_path / "other", 10, 0, None, None, overwrite=True)


def test_reuse_keeps_the_same_data_set_and_refuses_another(tmp_path, synth_cfg, resize_spec):
    out = tmp_path / "ds"
    first = generate(out, 30, 4, synth_cfg, resize_spec)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert generate(out, 30, 4, synth_cfg, resize_spec, reuse=True) == first
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # kept, not rewritten
    with pytest.raises(FileExistsError, match="other generator settings"):
        generate(out, 30, 5, synth_cfg, resize_spec, reuse=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def _finish_first(monkeypatch, out, seed, synth_cfg, resize_spec):
    """Make a concurrent generator finish `out` (with `seed`) while this one is still writing."""
    import data.synth as synth

    write = synth._write

    def write_then_lose_the_race(root, *args):
        manifest = write(root, *args)
        monkeypatch.setattr(synth, "_write", write)
        generate(out, 30, seed, synth_cfg, resize_spec)
        return manifest

    monkeypatch.setattr(synth, "_write", write_then_lose_the_race)


def test_a_generator_that_loses_the_rename_keeps_the_winner(tmp_path, synth_cfg, resize_spec, monkeypatch,
                                                            caplog):
    out = tmp_path / "ds"
    _finish_first(monkeypatch, out, 4, synth_cfg, resize_spec)
    with caplog.at_level("INFO", logger="data.synth"):
        manifest = generate(out, 30, 4, synth_cfg, resize_spec)
    assert "a concurrent generator finished" in caplog.text
    assert manifest == load_manifest(str(out))  # the winner's manifest, returned as this call's
    assert verify_manifest(str(out)) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # own staging discarded


def test_a_generator_that_loses_the_rename_to_other_data_fails(tmp_path, synth_cfg, resize_spec, monkeypatch):
    out = tmp_path / "ds"
    _finish_first(monkeypatch, out, 9, synth_cfg, resize_spec)
    with pytest.raises(FileExistsError, match="different data set"):
        generate(out, 30, 4, synth_cfg, resize_spec)
    assert load_manifest(str(out))["generator"]["seed"] == 9  # the winner is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def _wait_for(condition, procs):
    """Poll `condition` until it holds (True) or one of `procs` has exited (False)."""
    import time

    while not condition():
        if any(p.poll() is not None for p in procs):
            return False
        time.sleep(0.05)
    return True


def test_two_generator_processes_on_one_folder_both_end_with_one_data_set(tmp_path):
    out = tmp_path / "ds"
    argv = [sys.executable, "-m", "data.synth", "--out", str(out), "--samples", "400", "--seed", "3",
            "--model", "tiny", "--reuse"]

    def start():
        return subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def staging():
        return sorted(p for p in tmp_path.iterdir() if p.name.startswith(".ds.partial-"))

    # Started together, so that both are usually writing at once (each into its own staging folder) and
    # the rename decides; one that starts late finds the other's data set already there.
    first, second = start(), start()
    both_writing = _wait_for(lambda: len(staging()) == 2, [first, second])
    results = []
    for proc in (first, second):
        stdout, stderr = proc.communicate(timeout=600)
        results.append((proc.returncode, stdout, stderr))
    assert [rc for rc, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    digests = {json.loads(stdout.strip().splitlines()[-1])["digest"] for _, stdout, _ in results}
    assert digests == {load_manifest(str(out))["digest"]}
    assert verify_manifest(str(out)) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging folder left behind
    # Exactly one process moved its folder into place; the other kept that one: at the rename when both
    # were writing, else at its start (the first had finished before the second got going).
    kept = "its folder is kept" if both_writing else "already holds this data set"
    assert len([err for _, _, err in results if kept in err]) == 1, [err[-2000:] for _, _, err in results]


# ---------------------------------------------------------------------------------- exact ground truth

def test_grounding_boxes_bound_the_described_shape(dataset_dir, synth_cfg):
    checked = 0
    for split in SPLITS:
        for sample in _samples(dataset_dir, split):
            if sample.task not in ("grounding", "point"):
                continue
            pixels = _image(dataset_dir, split, sample)
            colour = sample.target["label"].split()[0]
            x1, y1, x2, y2 = sample.target["box"]
            mask = np.all(pixels == synth_cfg.colours[colour], axis=-1)
            inside = np.zeros_like(mask)
            inside[y1:y2, x1:x2] = mask[y1:y2, x1:x2]
            ys, xs = np.nonzero(inside)
            # The shape's pixels touch all four edges of the box: the box is exact, not just covering.
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2), sample.id
            # Nothing else is drawn inside the box.
            assert not (_non_background(pixels, synth_cfg)[y1:y2, x1:x2] & ~mask[y1:y2, x1:x2]).any()
            if sample.task == "point" and sample.has_response:
                (x, y), = [p["point_2d"] for p in json.loads(sample.response_text()[len(THINK_OFF):])]
                assert x1 <= x < x2 and y1 <= y < y2 and mask[y, x]
            checked += 1
    assert checked > 20


def test_counts_match_the_drawn_shapes(dataset_dir, synth_cfg):
    checked = 0
    for split in SPLITS:
        for sample in _samples(dataset_dir, split):
            if sample.task != "counting":
                continue
            shapes = _components(_non_background(_image(dataset_dir, split, sample), synth_cfg))
            question = sample.messages[0]["content"][-1]["text"]
            if "How many shapes" in question:
                assert shapes == sample.target["count"], sample.id
            else:
                assert 1 <= sample.target["count"] <= shapes
            if sample.has_response:
                assert sample.response_text() == THINK_OFF + str(sample.target["count"])
            checked += 1
    assert checked > 10


def test_gui_click_targets_are_the_named_button(dataset_dir, synth_cfg):
    checked = 0
    for split in SPLITS:
        for sample in _samples(dataset_dir, split):
            if sample.task != "gui":
                continue
            pixels = _image(dataset_dir, split, sample)
            x1, y1, x2, y2 = sample.target["box"]
            border = np.array(synth_cfg.gui.border_colour)
            for edge in (pixels[y1, x1:x2], pixels[y2 - 1, x1:x2], pixels[y1:y2, x1], pixels[y1:y2, x2 - 1]):
                assert (edge == border).all(), sample.id
            assert sample.target["action"] == "click" and sample.target["label"] in synth_cfg.gui.labels
            if sample.has_response:
                action = json.loads(sample.response_text()[len(THINK_OFF):])
                x, y = action["start_point"]
                assert action["action"] == "click" and x1 <= x < x2 and y1 <= y < y2
            checked += 1
    assert checked > 10


def test_boxed_answers_equal_the_target(dataset_dir):
    for sample in _samples(dataset_dir, "pretrain"):
        if sample.task in ("math", "reasoning", "text"):
            assert re.findall(r"\\boxed\{([^}]*)\}", sample.response_text())[-1] == sample.target["answer"]
        elif sample.task in ("vqa", "chart", "ocr"):
            assert sample.response_text() == THINK_OFF + sample.target["answer"]


def test_coordinates_refer_to_the_processor_resized_image(dataset_dir, resize_spec):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    model = load_group("model", "tiny").processor
    processor = Qwen2VLImageProcessorPil(min_pixels=model.min_pixels, max_pixels=model.max_pixels,
                                         patch_size=model.patch_size, merge_size=model.merge_size,
                                         temporal_patch_size=model.temporal_patch_size)
    for task in ("grounding", "gui"):
        sample = next(s for s in _samples(dataset_dir, "pretrain") if s.task == task)
        image = Image.open(dataset_dir / "pretrain" / sample.image_refs()[0])
        _, grid_h, grid_w = processor(images=[image], return_tensors="np")["image_grid_thw"][0]
        resized = (int(grid_w) * model.patch_size, int(grid_h) * model.patch_size)
        assert resized == resize_spec.resized(*image.size) == image.size


def test_boxes_scale_with_the_resize(synth_cfg):
    from data.synth_tasks import TaskContext, build_grounding

    doubling = ResizeSpec(factor=28, min_pixels=224 * 224, max_pixels=224 * 224)
    draft = build_grounding(TaskContext(synth_cfg, doubling), random.Random(0))
    x1, y1, x2, y2 = draft.facts["shape"].box
    assert draft.target["box"] == [2 * x1, 2 * y1, 2 * x2, 2 * y2]


@pytest.mark.parametrize("task", sorted(BUILDERS))
def test_drafts_agree_with_their_pixels(task, synth_ctx, synth_cfg):
    rng = random.Random(task)
    for _ in range(15):
        draft = BUILDERS[task](synth_ctx, rng)
        assert draft.task == task and len(draft.canvases) == sum(p["type"] == "image" for p in draft.prompt)
        for canvas in draft.canvases:
            pixels = np.asarray(render(canvas))
            shapes = [item for item in canvas.items if isinstance(item, Shape)]
            if shapes:
                assert _components(_non_background(pixels, synth_cfg)) == len(shapes)
            for shape in shapes:
                x1, y1, x2, y2 = shape.box
                mask = np.all(pixels[y1:y2, x1:x2] == shape.rgb, axis=-1)
                assert mask[:, 0].any() and mask[:, -1].any() and mask[0].any() and mask[-1].any()
                assert mask[(y2 - y1) // 2, (x2 - x1) // 2]  # the centre pixel has the shape's colour
        facts = draft.facts
        if task == "vqa":
            _check_vqa(draft, synth_cfg)
        if task in ("math", "reasoning") and "expression" in facts:
            assert str(eval(facts["expression"].replace("\u00d7", "*"))) == draft.target["answer"]
        if task == "reasoning" and "scoring" in facts:
            shapes = draft.canvases[0].shapes()
            total = sum(points * sum(s.colour == colour for s in shapes) for colour, points in facts["scoring"].items())
            assert str(total) == draft.target["answer"]
        if task == "chart":
            pixels = np.asarray(render(draft.canvases[0]))
            for bar in facts["bars"]:
                x1, y1, x2, y2 = bar["box"]
                column = pixels[:, (x1 + x2) // 2]
                bar_rgb = pixels[y2 - 1, (x1 + x2) // 2]
                filled = int(np.all(column[y1:y2] == bar_rgb, axis=-1).sum())
                assert filled == bar["value"] * facts["unit"]
            if draft.target["answer"].isdigit():
                label = draft.prompt[-1]["text"].split("bar ")[1].rstrip("?")
                assert {b["label"]: str(b["value"]) for b in facts["bars"]}[label] == draft.target["answer"]
            else:
                assert max(facts["bars"], key=lambda b: b["value"])["label"] == draft.target["answer"]
        if task == "ocr":
            assert set(draft.target["answer"].split()) <= set(synth_cfg.ocr.words)


def _check_vqa(draft, cfg):
    shape, question, answer = draft.facts["shape"], draft.prompt[-1]["text"], draft.target["answer"]
    canvas = draft.canvases[0]
    x1, y1, x2, y2 = shape.box
    if question.startswith("What colour"):
        centre = np.asarray(render(canvas))[(y1 + y2) // 2, (x1 + x2) // 2]
        assert list(centre) == cfg.colours[answer]
    elif question.startswith("What shape"):
        assert answer == shape.kind and f"the {shape.colour} object" in question
    elif "small or large" in question:
        low, high = getattr(cfg.scene, answer)
        assert low <= x2 - x1 <= high
    else:
        row = (y1 + y2) / 2 * 3 // canvas.height
        col = (x1 + x2) / 2 * 3 // canvas.width
        assert answer == POSITIONS[int(row)][int(col)]
    # The question names exactly one shape: colours and kinds are distinct within a vqa scene.
    shapes = canvas.shapes()
    assert len({s.colour for s in shapes}) == len({s.kind for s in shapes}) == len(shapes)


# ------------------------------------------------------------------------------------- text and config

def test_synthetic_text_is_deterministic_and_renders_nothing(synth_cfg, resize_spec, monkeypatch):
    import data.render

    def no_render(*args, **kwargs):
        raise AssertionError("synthetic_text must not render images")

    monkeypatch.setattr(data.render, "render", no_render)
    monkeypatch.setattr(data.render, "encode_png", no_render)
    first = list(synthetic_text(synth_cfg, 200, 5, resize_spec))
    assert first == list(synthetic_text(synth_cfg, 200, 5, resize_spec))
    assert first != list(synthetic_text(synth_cfg, 200, 6, resize_spec))
    assert len(first) == 400 and all(isinstance(t, str) and t for t in first)
    joined = "\n".join(first)
    assert "<think>" in joined and "\\boxed{" in joined and "bbox_2d" in joined and "start_point" in joined


def test_config_errors_name_the_key(synth_cfg):
    raw = load_data_group("synthetic")
    raw.task_weights.rl.caption = 1
    with pytest.raises(ConfigError, match=r"task_weights\.rl\.caption.*no verifiable target"):
        validated(SynthConfig, raw, "data/synthetic")
    raw = load_data_group("synthetic")
    raw.scene.max_shape = 3
    with pytest.raises(ConfigError, match="max_shape"):
        validated(SynthConfig, raw, "data/synthetic")
    raw = load_data_group("synthetic")
    raw.scene.large = [20, 60]
    with pytest.raises(ConfigError, match=r"scene\.large.*does not fit a grid cell"):
        validated(SynthConfig, raw, "data/synthetic")
    raw = load_data_group("synthetic")
    raw.splits.eval = 0.5
    with pytest.raises(ConfigError, match=r"\.splits"):
        validated(SynthConfig, raw, "data/synthetic")


def _composed_data(overrides):
    """The `data:` section of the composed config, resolved (its `${model.name}` needs the root)."""
    from omegaconf import OmegaConf

    from conf import compose

    return OmegaConf.to_container(compose(overrides), resolve=True)["data"]


def test_the_data_group_composes_with_hydra():
    cfg = validated(SynthConfig, _composed_data(["data=synthetic"]), "data")
    assert cfg.model == "tiny"


def test_the_data_config_follows_the_composed_model():
    assert validated(SynthConfig, _composed_data(["model=mimovl_7b"]), "data").model == "mimovl_7b"
    assert load_data_config("synthetic", model="mimovl_7b").model == "mimovl_7b"
    assert load_data_config("synthetic").model == "tiny"  # conf/config.yaml's default model
