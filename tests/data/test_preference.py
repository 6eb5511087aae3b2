import dataclasses
import json
import logging
import re
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from conf import ConfigError, validated
from data.config import PREFERENCE_SPLITS, SPLITS, SynthConfig, load_data_group
from data.manifest import load_manifest, verify_manifest
from data.preference import PreferencePair
from data.reader import BAD_RECORD, MISSING_IMAGE, PreferenceReader
from data.schema import Sample, SampleError
from data.synth import find_split_overlaps, generate
from data.synth_tasks import POSITIONS, THINK_OFF, position_phrase

from .test_synth import _components

FILE = "pairs.jsonl"
KINDS = ("colour", "count", "position", "number")


def _pairs(root, split):
    out = []
    for shard in sorted((root / "preference" / split).glob("*.jsonl")):
        out += [PreferencePair.from_json(line, file=str(shard), line_no=i) for i, line in enumerate(shard.open(), 1)]
    return out


def _samples(root, split):
    out = []
    for shard in sorted((root / split).glob("*.jsonl")):
        out += [Sample.from_json(line, file=str(shard), line_no=i) for i, line in enumerate(shard.open(), 1)]
    return out


def _question(pair):
    return pair.prompt[-1]["content"][-1]["text"]


# ------------------------------------------------------------------------------------------------ schema

def _record(**changes):
    record = {
        "id": "p1",
        "source": "synthetic:colour",
        "prompt": [{"role": "user", "content": [{"type": "image", "image": "images/a.png"},
                                                {"type": "text", "text": "What colour is the circle?"}]}],
        "chosen": "red",
        "rejected": "blue",
    }
    record.update(changes)
    return record


def test_round_trip_and_accessors():
    pair = PreferencePair.from_json(json.dumps(_record()), file=FILE, line_no=1)
    assert PreferencePair.from_json(pair.to_json()) == pair
    assert pair.image_refs() == ["images/a.png"]
    assert pair.scored() == (("What colour is the circle?", "red"), ("What colour is the circle?", "blue"))


CASES = [
    # (changes to the record, field named in the error, words of the problem)
    ({"rejected": None}, "rejected", "expected a string or a list of chat messages"),
    ({"chosen": ""}, "chosen", "non-empty"),
    ({"rejected": "red"}, "rejected", "equals chosen"),
    ({"prompt": [{"role": "user", "content": [{"type": "image", "image": ""}]}]}, "prompt[0].content[0].image",
     "non-empty"),
    ({"prompt": [{"role": "robot", "content": "hi"}]}, "prompt[0].role", "unknown role"),
    ({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}, "prompt[1].role",
     "must end with the user's turn"),
    ({"prompt": 3}, "prompt", "expected a string or a list of chat messages"),
    ({"source": ""}, "source", "non-empty"),
    ({"id": ["x"]}, "id", "expected a string"),
    ({"chosen": [{"role": "user", "content": "hi"}]}, "chosen[0].role", "the assistant's answer"),
    ({"chosen": [{"role": "assistant", "content": [{"type": "image", "image": "x.png"}]}]},
     "chosen[0].content[0].type", "text parts only"),
    ({"images": ["b.png"]}, "images", "1 image(s) for 0 image placeholder(s)"),
]


@pytest.mark.parametrize("changes,field,problem", CASES, ids=[f"{c[1]}:{c[2]}" for c in CASES])
def test_errors_name_file_line_and_field(changes, field, problem):
    record = _record(**changes)
    if field == "images":  # placeholders: the reference-free image parts `images` fills
        record["prompt"][0]["content"] = [{"type": "text", "text": "x"}, {"type": "image"}, {"type": "image"}]
        record["images"] = ["b.png"]
        problem = "1 image(s) for 2 image placeholder(s) in prompt"
    with pytest.raises(SampleError) as info:
        PreferencePair.from_json(json.dumps(record), file=FILE, line_no=9)
    assert str(info.value).startswith(f"{FILE}:9: field '{field}': ")
    assert problem in str(info.value)
    assert (info.value.file, info.value.line_no, info.value.field) == (FILE, 9, field)


def test_a_missing_field_and_a_broken_line_name_their_place():
    record = _record()
    del record["rejected"]
    with pytest.raises(SampleError, match=rf"^{FILE}:4: field 'rejected': missing$"):
        PreferencePair.from_json(json.dumps(record), file=FILE, line_no=4)
    with pytest.raises(SampleError, match=rf"^{FILE}:5: invalid JSON"):
        PreferencePair.from_json('{"prompt": ', file=FILE, line_no=5)
    record = _record()
    del record["prompt"]
    with pytest.raises(SampleError, match=r"field 'prompt': missing"):
        PreferencePair.from_dict(record, file=FILE, line_no=6)


# ------------------------------------------------------------------------------------------ public form

def test_the_public_form_with_plain_strings():
    pair = PreferencePair.from_dict({"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"},
                                    file="/data/hh/train.jsonl", line_no=3)
    assert pair.prompt == [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]}]
    assert (pair.chosen, pair.rejected) == ("4", "5")
    assert (pair.id, pair.source) == ("train.jsonl:3", "train.jsonl")


def test_the_public_form_with_chat_message_lists():
    # UltraFeedback binarized: the prompt as a string, chosen and rejected as the whole conversation, extra keys.
    ultra = PreferencePair.from_dict({
        "prompt": "Name a colour.", "prompt_id": "ab12", "score_chosen": 8.0, "score_rejected": 3.0,
        "chosen": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."}],
        "rejected": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Seven."}],
    }, file=FILE, line_no=1)
    assert ultra.prompt == [{"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}]
    assert (ultra.chosen, ultra.rejected) == ("Red.", "Seven.")
    # Anthropic HH in chat form: no prompt; it is every message before the last assistant turn.
    turns = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": [{"type": "text", "text": "Tell me a joke."}]}]
    hh = PreferencePair.from_dict({
        "chosen": turns + [{"role": "assistant", "content": [{"type": "text", "text": "Why did the "},
                                                            {"type": "text", "text": "chicken..."}]}],
        "rejected": turns + [{"role": "assistant", "content": "No."}], "id": 17, "source": "hh-rlhf",
    }, file=FILE, line_no=2)
    assert [m["role"] for m in hh.prompt] == ["user", "assistant", "user"]
    assert hh.prompt[1]["content"] == [{"type": "text", "text": "Hello!"}]
    assert (hh.chosen, hh.rejected, hh.id, hh.source) == ("Why did the chicken...", "No.", "17", "hh-rlhf")
    # TRL's conversational form: the prompt as messages, chosen and rejected as the assistant turn only; images
    # fill the prompt's image placeholders in order.
    trl = PreferencePair.from_dict({
        "prompt": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": [{"type": "image", "text": None},  # HF: every field, null if unused
                                                {"type": "text", "text": "Which is larger?", "image": None},
                                                {"type": "image"}]}],
        "chosen": [{"role": "assistant", "content": "The first."}],
        "rejected": [{"role": "assistant", "content": "The second."}], "images": ["a.png", "s3://b/c.png"],
    }, file=FILE, line_no=3)
    assert trl.image_refs() == ["a.png", "s3://b/c.png"]
    assert trl.prompt_text() == "Be brief.\nWhich is larger?"
    # Images without placeholders go before the first user turn's text.
    plain = PreferencePair.from_dict({"prompt": "Describe it.", "chosen": "A cat.", "rejected": "A dog.",
                                      "images": ["x.png"]}, file=FILE, line_no=4)
    assert plain.prompt[0]["content"] == [{"type": "image", "image": "x.png"}, {"type": "text", "text": "Describe it."}]


def test_chosen_and_rejected_must_continue_the_prompt():
    user = {"role": "user", "content": "Q?"}
    with pytest.raises(SampleError, match=r"field 'rejected': .*differ from chosen's"):
        PreferencePair.from_dict({"chosen": [user, {"role": "assistant", "content": "A"}],
                                  "rejected": [{"role": "user", "content": "Other?"},
                                               {"role": "assistant", "content": "B"}]}, file=FILE, line_no=1)
    with pytest.raises(SampleError, match=r"field 'chosen': .*differ from prompt"):
        PreferencePair.from_dict({"prompt": "Other?", "chosen": [user, {"role": "assistant", "content": "A"}],
                                  "rejected": "B"}, file=FILE, line_no=1)


def _write_public_file(folder):
    """A public-form file with good lines of both shapes and malformed ones; returns the ids and bad line numbers."""
    Image.new("RGB", (28, 28), (200, 30, 30)).save(folder / "red.png")
    lines = [
        json.dumps({"prompt": "What is 3 + 4?", "chosen": "7", "rejected": "8"}),
        json.dumps({"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}],
                    "chosen": [{"role": "assistant", "content": "Red."}],
                    "rejected": [{"role": "assistant", "content": "Blue."}], "images": ["red.png"], "id": "img"}),
        '{"prompt": "broken", ',                                                         # invalid JSON
        json.dumps({"prompt": "Same?", "chosen": "yes", "rejected": "yes"}),               # no preference
        "",
        json.dumps({"chosen": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}],
                    "rejected": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Go away."}]}),
        json.dumps({"prompt": "Missing image.", "chosen": "a", "rejected": "b", "images": ["gone.png"],
                    "id": "gone"}),
    ]
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return ["pairs.jsonl:1", "img", "pairs.jsonl:6"], (3, 4)


def test_the_reader_reads_public_files_and_skips_counts_and_logs_bad_lines(tmp_path, caplog):
    expected, (broken, same) = _write_public_file(tmp_path)
    reader = PreferenceReader(f"file://{tmp_path}")
    with caplog.at_level(logging.WARNING, logger="data.reader"):
        loaded = list(reader)
    assert [item.pair.id for item in loaded] == expected
    assert reader.stats.samples == 3 and reader.stats.shards == 1
    assert reader.stats.skipped[BAD_RECORD] == 2 and reader.stats.skipped[MISSING_IMAGE] == 1
    image = loaded[1].images[0]
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (200, 30, 30)
    assert loaded[2].pair.prompt == [{"role": "user", "content": [{"type": "text", "text": "Hi."}]}]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    shard = tmp_path / "pairs.jsonl"
    assert any(f"{shard}:{broken}: invalid JSON" in w for w in warnings)
    assert any(f"{shard}:{same}: field 'rejected': equals chosen" in w for w in warnings)
    assert any("skipping pair gone" in w and "missing image" in w for w in warnings)
    # Strict: the first malformed line raises, naming its place.
    with pytest.raises(SampleError, match=rf"pairs\.jsonl:{broken}: invalid JSON"):
        list(PreferenceReader(str(tmp_path), strict=True, load_images=False))


# ------------------------------------------------------------------------------------------ synthetic pairs

def test_the_data_set_holds_the_pairs_in_its_manifest(dataset_dir, synth_cfg):
    manifest = load_manifest(str(dataset_dir))
    assert verify_manifest(dataset_dir) == []
    assert set(manifest["preference"]) == set(PREFERENCE_SPLITS)
    total = sum(info["pairs"] for info in manifest["preference"].values())
    assert total == synth_cfg.preference.pairs(manifest["generator"]["samples"]) > 0
    for split in PREFERENCE_SPLITS:
        info = manifest["preference"][split]
        reader = PreferenceReader(str(dataset_dir / "preference"), split=split, strict=True)
        loaded = list(reader)
        assert len(loaded) == info["pairs"] > 0 and reader.stats.total_skipped == 0
        assert sum(len(item.images) for item in loaded) == info["images"]
        assert dict(Counter(item.pair.source.split(":")[1] for item in loaded)) == info["kinds"]
        assert all(item.pair.source in {f"synthetic:{k}" for k in KINDS} for item in loaded)
        assert all(path in manifest["files"] for path in info["shards"])
    pairs = [pair for split in PREFERENCE_SPLITS for pair in _pairs(dataset_dir, split)]
    assert len({p.id for p in pairs}) == len(pairs)
    assert set(p.source for p in pairs) == {f"synthetic:{k}" for k in KINDS}
    assert any(not p.image_refs() for p in pairs) and any(p.image_refs() for p in pairs)  # text-only and image pairs


def test_splits_share_nothing_with_the_pairs(dataset_dir):
    assert find_split_overlaps(dataset_dir) == []
    manifest = load_manifest(str(dataset_dir))
    folders = list(SPLITS) + [f"preference/{split}" for split in PREFERENCE_SPLITS]
    images = {f: {sha for path, sha in manifest["files"].items() if path.startswith(f"{f}/images/")} for f in folders}
    pair_images = images["preference/train"] | images["preference/heldout"]
    assert pair_images and images["preference/train"].isdisjoint(images["preference/heldout"])
    assert pair_images.isdisjoint(set().union(*(images[split] for split in SPLITS)))
    sample_prompts = {part["text"] for split in SPLITS for s in _samples(dataset_dir, split)
                      for part in s.messages[0]["content"] if part["type"] == "text" and s.task == "text"}
    text_prompts = {split: {_question(p) for p in _pairs(dataset_dir, split) if not p.image_refs()}
                    for split in PREFERENCE_SPLITS}
    assert text_prompts["train"] and text_prompts["train"].isdisjoint(text_prompts["heldout"] | sample_prompts)
    assert text_prompts["heldout"].isdisjoint(sample_prompts)


def test_the_overlap_check_finds_a_pair_that_leaks_into_another_split(dataset_dir, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(dataset_dir, root)
    leaked = next(p for p in _pairs(root, "train") if p.image_refs())
    pairs = root / "preference"
    shutil.copy(pairs / "train" / leaked.image_refs()[0], pairs / "heldout" / "images" / "x.png")
    user = {"role": "user", "content": [dict(part, image="images/x.png") if part["type"] == "image" else part
                                        for part in leaked.prompt[0]["content"]]}
    copy = dataclasses.replace(leaked, id="pref-heldout-leak", prompt=[user])
    with open(sorted((pairs / "heldout").glob("*.jsonl"))[0], "a") as f:
        f.write(copy.to_json() + "\n")
    problems = find_split_overlaps(root)
    assert any(p.startswith("image ") and "['preference/heldout', 'preference/train']" in p for p in problems)
    assert any(p.startswith("prompt ") and "['preference/heldout', 'preference/train']" in p for p in problems)
    assert any(p.endswith("not in the manifest") for p in verify_manifest(root))


_COLOURS = r"red|green|blue|yellow|purple|orange"
_PHRASE = re.compile(rf"[Aa] (small|large) ({_COLOURS}) (circle|square|triangle) "
                     r"((?:at|in|on) the (?:top left|top right|bottom left|bottom right|top|bottom|left|right|center))")
_PHRASE_CELL = {position_phrase((r, c)): (r, c) for r in range(3) for c in range(3)}
_POSITION_CELL = {POSITIONS[r][c]: (r, c) for r in range(3) for c in range(3)}


def _caption_facts(text):
    """The shapes a caption states, as (size, colour, kind, cell), after checking the caption is well-formed."""
    body = text[len(THINK_OFF):]
    facts = [(size, colour, kind, _PHRASE_CELL[where]) for size, colour, kind, where in _PHRASE.findall(body)]
    assert len(facts) >= 1 and body.endswith("."), text
    assert [f[3] for f in facts] == sorted(f[3] for f in facts), "a caption lists its shapes in reading order"
    assert len({f[3] for f in facts}) == len(facts), "one shape per cell"
    return facts


def _difference(a, b):
    return list((Counter(a) - Counter(b)).elements())


def _cell_has_colour(pixels, cell, rgb):
    h, w = pixels.shape[:2]
    r, c = cell
    region = pixels[r * h // 3:(r + 1) * h // 3, c * w // 3:(c + 1) * w // 3]
    return bool(np.all(region == np.array(rgb), axis=-1).any())


def test_each_pair_changes_exactly_one_fact_of_the_true_answer(dataset_dir, synth_cfg):
    colours = synth_cfg.colours
    checked = Counter()
    for split in PREFERENCE_SPLITS:
        for pair in _pairs(dataset_dir, split):
            kind = pair.source.split(":")[1]
            assert pair.chosen != pair.rejected
            assert pair.chosen.startswith(THINK_OFF) and pair.rejected.startswith(THINK_OFF)
            pixels = (np.asarray(Image.open(dataset_dir / "preference" / split / pair.image_refs()[0]).convert("RGB"))
                      if pair.image_refs() else None)
            question = _question(pair)
            chosen, rejected = pair.chosen[len(THINK_OFF):], pair.rejected[len(THINK_OFF):]
            if _PHRASE.search(chosen):  # a caption: one shape's colour or cell differs, everything else is equal
                true, false = _caption_facts(pair.chosen), _caption_facts(pair.rejected)
                for size, colour, _, cell in true:  # the ground truth, read from the pixels
                    assert _cell_has_colour(pixels, cell, colours[colour]), pair.id
                gone, new = _difference(true, false), _difference(false, true)
                assert len(gone) == len(new) == 1 and len(true) == len(false), pair.id
                differs = [i for i in range(4) if gone[0][i] != new[0][i]]
                assert differs == ([1] if kind == "colour" else [3]), (pair.id, gone, new)
                if kind == "colour":  # the cell holds one shape, of the true colour only
                    assert not _cell_has_colour(pixels, new[0][3], colours[new[0][1]])
                else:  # moved to an empty cell
                    assert new[0][3] not in {f[3] for f in true}
                checked[f"caption:{kind}"] += 1
            elif kind == "colour":  # vqa: a colour answer becomes another colour present or not
                assert chosen in colours and rejected in colours and question.startswith("What colour")
                assert np.all(pixels == np.array(colours[chosen]), axis=-1).any()
                if "shape at the" in question:
                    cell = _POSITION_CELL[question.split("shape at the ")[1].rstrip("?")]
                    assert _cell_has_colour(pixels, cell, colours[chosen])
                    assert not _cell_has_colour(pixels, cell, colours[rejected])
                checked["vqa:colour"] += 1
            elif kind == "position":  # vqa: "Where in the image is the red circle?" (colours distinct in a scene)
                colour = question.split("is the ")[1].split()[0]
                assert _cell_has_colour(pixels, _POSITION_CELL[chosen], colours[colour]), pair.id
                assert not _cell_has_colour(pixels, _POSITION_CELL[rejected], colours[colour]), pair.id
                checked["vqa:position"] += 1
            elif kind == "count":
                true, false = int(chosen), int(rejected)
                assert 1 <= false <= synth_cfg.scene.max_count
                assert 1 <= abs(true - false) <= synth_cfg.preference.max_offset
                shapes = _components(np.any(pixels != np.array(synth_cfg.background), axis=-1))
                assert true == shapes if "How many shapes" in question else 1 <= true <= shapes
                checked["count"] += 1
            else:  # number: every number but the result is equal; the result differs wherever it is stated
                numbers = [re.findall(r"\d+", text) for text in (chosen, rejected)]
                assert re.sub(r"\d+", "#", chosen) == re.sub(r"\d+", "#", rejected), pair.id
                changed = {(a, b) for a, b in zip(*numbers) if a != b}
                assert len(changed) == 1, pair.id
                (true, false), = changed
                assert 1 <= abs(int(true) - int(false)) <= synth_cfg.preference.max_offset and int(false) >= 0
                if "\\boxed{" in chosen:  # math, text: the stated working computes the true result
                    boxed = re.findall(r"\\boxed\{(\d+)\}", chosen)[-1]
                    lhs = re.findall(r"(\d+(?: [-+\u00d7] \d+)+) = " + boxed + r"(?!\d)", chosen)[-1]
                    assert true == boxed == str(eval(lhs.replace("\u00d7", "*")))
                    checked["text" if not pair.image_refs() else "math"] += 1
                else:  # a chart bar's value
                    assert 1 <= int(false) <= synth_cfg.chart.max_value and question.startswith("What is the value")
                    checked["chart"] += 1
    assert set(checked) == {"caption:colour", "caption:position", "vqa:colour", "vqa:position", "count", "math",
                            "chart", "text"}, checked


def test_turning_pairs_on_changes_no_other_split(tmp_path, synth_cfg, resize_spec):
    off = dataclasses.replace(synth_cfg, preference=dataclasses.replace(synth_cfg.preference, pairs_per_sample=0.0))
    on = dataclasses.replace(synth_cfg, preference=dataclasses.replace(synth_cfg.preference, pairs_per_sample=0.5))
    without = generate(tmp_path / "off", 60, 3, off, resize_spec)
    with_pairs = generate(tmp_path / "on", 60, 3, on, resize_spec)
    assert "preference" not in without and not (tmp_path / "off" / "preference").exists()
    assert sum(info["pairs"] for info in with_pairs["preference"].values()) == 30
    assert without["splits"] == with_pairs["splits"]
    assert without["files"] == {k: v for k, v in with_pairs["files"].items() if not k.startswith("preference/")}
    assert without["digest"] != with_pairs["digest"]
    for split in SPLITS:
        a, b = _samples(tmp_path / "off", split), _samples(tmp_path / "on", split)
        assert [(s.id, s.to_json()) for s in a] == [(s.id, s.to_json()) for s in b] and a
    assert find_split_overlaps(tmp_path / "on") == [] and verify_manifest(tmp_path / "on") == []


def test_preference_config_errors_name_the_key():
    raw = load_data_group("synthetic")
    raw.preference.kinds.size = 1
    with pytest.raises(ConfigError, match=r"preference\.kinds\.size: unknown fact kind"):
        validated(SynthConfig, raw, "data/synthetic")
    raw = load_data_group("synthetic")
    raw.preference.splits.train = 0.5
    with pytest.raises(ConfigError, match=r"preference\.splits: expected fractions"):
        validated(SynthConfig, raw, "data/synthetic")
    raw = load_data_group("synthetic")
    raw.preference.max_offset = 0
    with pytest.raises(ConfigError, match=r"preference\.max_offset"):
        validated(SynthConfig, raw, "data/synthetic")
