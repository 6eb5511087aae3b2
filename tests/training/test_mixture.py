"""The pre-training data stream (training/mixture.py): the mixture weights, per-rank disjoint shares (also in
two real processes), exact O(1) resume, independent splits and purposes, and unusable samples skipped."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from math import sqrt
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conf import validated
from data.schema import TASKS
from training.config import StepConfig
from training.mixture import (
    IMAGE,
    PLACEHOLDER,
    TOO_LONG,
    MixtureSampler,
    StreamStateMismatch,
    build_row_stream,
    read_pools,
)

REPO = Path(__file__).resolve().parents[2]
STAGE3 = "stage3_multimodal"
# Every task drawn at stage 3, whatever the profile's curriculum leaves out: the small test data set's pools
# then hold enough samples for the tests that stay inside one epoch.
EVERY_TASK = [f"stages.{STAGE3}.mixture.{task}=1" for task in TASKS]
STAGE1 = "stage1_projector_warmup"  # caption only: its small pool wraps into a new epoch quickly
BUFFER = 32                         # packer buffer of these tests (the stages' 256 would encode far more)


def step_config(make_step, stage: str, name: str, overrides=(), data_uri: str | None = None) -> StepConfig:
    path = make_step(stage, name, overrides=[f"stages.{stage}.packing.buffer_size={BUFFER}", *overrides])
    step = OmegaConf.load(path)
    if data_uri is not None:
        step.data.uri = data_uri
    return validated(StepConfig, step, where=str(path))


@pytest.fixture
def stream_of(tokenizer, image_processor):
    def make(cfg: StepConfig, rank: int = 0, world_size: int = 1, **kwargs):
        return build_row_stream(cfg, tokenizer, image_processor, rank=rank, world_size=world_size, **kwargs)

    return make


def row_ids(rows) -> list[list[str]]:
    return [[s.sample_id for s in row] for row in rows]


def drawn_ids(rows: list[list[str]], state: dict) -> list[str]:
    """Every sample a stream has drawn and kept: those of its rows (ids) and those its packer still holds."""
    held = [i for row in state["packer"]["ready"] for i in row] + state["packer"]["buffer"]
    return [i for row in rows for i in row] + held


def assert_same_rows(got, expected) -> None:
    assert row_ids(got) == row_ids(expected)
    for a, b in zip([s for row in got for s in row], [s for row in expected for s in row]):
        for name in ("input_ids", "labels", "mrope_positions", "pixel_values", "image_grid_thw"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or torch.equal(x, y), (a.sample_id, name)


# --- the sampler: weights and shares ----------------------------------------------------------------------

def test_draws_follow_the_mixture_weights():
    """20,000 seeded draws per rank. Tolerance: each task's frequency is within 4 standard errors
    (sqrt(w(1-w)/n), 0.15 to 0.35 percentage points here) of its normalised weight; for a correct sampler
    the chance of any of the 8 checks failing is below 1e-3, and the seed makes the test deterministic."""
    weights = {"caption": 2.0, "ocr": 1.2, "text": 0.6, "math": 0.2}   # not normalised: 0.5, 0.3, 0.15, 0.05
    sizes = {"caption": 40, "ocr": 25, "text": 9, "math": 3}
    n = 20_000
    total = sum(weights.values())
    for rank in (0, 1):
        sampler = MixtureSampler(sizes, weights, seed=7, purpose="train", rank=rank, world_size=2)
        counts = Counter(sampler.next().task for _ in range(n))
        for task, weight in weights.items():
            p = weight / total
            assert abs(counts[task] / n - p) <= 4 * sqrt(p * (1 - p) / n), (rank, task, counts[task])


def test_each_draw_is_a_pure_function_of_seed_purpose_rank_and_its_index():
    sizes, weights = {"caption": 30, "ocr": 12}, {"caption": 0.6, "ocr": 0.4}

    def sampler(**changes):
        args = {"seed": 3, "purpose": "train", "rank": 1, "world_size": 3, **changes}
        return MixtureSampler(sizes, weights, **args)

    first = sampler()
    draws = [first.next() for _ in range(300)]
    fresh = sampler()
    assert [fresh.next() for _ in range(300)] == draws
    assert [fresh.task_of(k) for k in range(300)] == [d.task for d in draws]   # random access, no state
    for change in ({"seed": 4}, {"purpose": "probe"}, {"rank": 2}):
        other = sampler(**change)
        assert [other.next() for _ in range(300)] != draws, change


def test_ranks_split_every_epoch_of_a_task_disjointly():
    sizes, weights, world = {"caption": 31, "ocr": 10}, {"caption": 0.5, "ocr": 0.5}, 3
    by_epoch: dict[tuple[str, int], list[list[int]]] = defaultdict(lambda: [[] for _ in range(world)])
    for rank in range(world):
        sampler = MixtureSampler(sizes, weights, seed=0, purpose="train", rank=rank, world_size=world)
        for _ in range(400):
            draw = sampler.next()
            by_epoch[draw.task, draw.epoch][rank].append(draw.index)
    complete = 0
    for (task, epoch), per_rank in by_epoch.items():
        for rank, indices in enumerate(per_rank):
            assert len(set(indices)) == len(indices), (task, epoch, rank)   # no repeat within an epoch
            for other in per_rank[rank + 1:]:
                assert not set(indices) & set(other), (task, epoch)        # no sample on two ranks
        if all(len(indices) == sizes[task] // world for indices in per_rank):
            complete += 1   # the epoch's union: world * (n // world) distinct samples of the pool
            union = set().union(*map(set, per_rank))
            assert len(union) == world * (sizes[task] // world) and union <= set(range(sizes[task]))
    assert complete >= 10   # several epochs of both tasks were checked whole
    sampler = MixtureSampler(sizes, weights, seed=0, purpose="train", rank=0, world_size=world)
    assert list(sampler.order("ocr", 0)) != list(sampler.order("ocr", 1))   # each epoch is shuffled anew


def test_a_source_smaller_than_the_world_is_refused():
    with pytest.raises(ValueError, match=r"source\(s\) \{'math': 2\} have fewer samples than the 4 ranks"):
        MixtureSampler({"caption": 40, "math": 2}, {"caption": 1, "math": 1}, seed=0, purpose="train", rank=0,
                       world_size=4)


# --- two ranks in two processes -----------------------------------------------------------------------------

def test_two_processes_draw_disjoint_samples_that_cover_the_pools(make_step, dataset, tmp_path):
    path = make_step(STAGE3, "ranks", overrides=[f"stages.{STAGE3}.packing.buffer_size={BUFFER}", *EVERY_TASK])
    outs = [tmp_path / f"rank{r}.json" for r in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.training.mixture_rank_job", "--config", str(path), "--rows", "3",
             "--out", str(out)],
            cwd=REPO, env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r, out in enumerate(outs)
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, output
    results = [json.loads(out.read_text()) for out in outs]
    assert [r["rank"] for r in results] == [0, 1]
    _, pools = read_pools(str(dataset), "pretrain", sorted(results[0]["epoch0_shares"]))

    # Each task's epoch 0 is split between the ranks: disjoint halves that together cover the pool
    # (less one sample when the pool is odd).
    for task, pool in pools.items():
        share0, share1 = (set(r["epoch0_shares"][task]) for r in results)
        assert not share0 & share1, task
        assert len(share0) == len(share1) == len(pool) // 2, task
        assert share0 | share1 <= {record.sample.id for record in pool}, task

    # What each rank's stream drew (rows emitted plus the packer's held samples) is its share's prefix.
    task_of = {record.sample.id: task for task, pool in pools.items() for record in pool}
    drawn = []
    for result in results:
        state = result["state"]
        assert state["rows"] == 3 and all(len(row) > 0 for row in result["rows"])
        assert all(epoch == 0 for epoch, _ in state["positions"].values())   # still inside epoch 0
        assert sum(state["skipped"].values()) == 0 and state["packer"]["stats"]["too_long"] == 0
        ids = drawn_ids(result["rows"], state)
        assert len(ids) == len(set(ids)) == state["draws"]
        by_task = defaultdict(set)
        for sample_id in ids:
            by_task[task_of[sample_id]].add(sample_id)
        for task, (_, position) in state["positions"].items():
            assert by_task[task] == set(result["epoch0_shares"][task][:position]), task
        drawn.append(set(ids))
    assert drawn[0] and drawn[1] and not drawn[0] & drawn[1]


# --- resume -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage, rows_before, where", [(STAGE3, 3, "mid-epoch"), (STAGE1, 4, "past an epoch")])
def test_resumed_stream_continues_exactly_without_replay(make_step, stream_of, monkeypatch, stage, rows_before,
                                                         where):
    cfg = step_config(make_step, stage, f"resume-{stage}", EVERY_TASK if stage == STAGE3 else ())
    whole = stream_of(cfg, rank=1, world_size=2)
    whole.next_rows(rows_before)
    state = json.loads(json.dumps(whole.state_dict()))   # what a checkpoint keeps
    held = drawn_ids([], state)
    assert state["packer"]["buffer"], "the packer holds samples: the resumed stream must get them back"
    epochs = [epoch for epoch, _ in state["positions"].values()]
    if where == "mid-epoch":
        assert max(epochs) == 0 and any(position > 0 for _, position in state["positions"].values())
    else:
        assert max(epochs) >= 1
    expected = whole.next_rows(8)

    resumed = stream_of(cfg, rank=1, world_size=2)
    encoded = []
    encode = resumed.encoder.encode
    monkeypatch.setattr(resumed.encoder, "encode",
                        lambda sample_id, *args: encoded.append(sample_id) or encode(sample_id, *args))
    resumed.load_state_dict(state)
    assert encoded == held   # no replay: only the packer's samples are encoded again, in their order
    assert len(encoded) < state["draws"]
    assert_same_rows(resumed.next_rows(8), expected)
    assert resumed.state_dict() == whole.state_dict()


@pytest.mark.parametrize("change, named", [
    ({"overrides": [f"stages.{STAGE3}.seed=5"]}, "seed: state has 0, this stream 5"),
    ({"overrides": [f"stages.{STAGE3}.mixture.counting=0.45"]},
     r"mixture: state has \{'counting': 0\.\d+.*this stream \{'counting': 0\.45"),
    ({"overrides": [f"stages.{STAGE3}.packing.min_fill=0.5"]}, "min_fill: state has 0.95, this stream 0.5"),
    ({"world_size": 4}, "world_size: state has 2, this stream 4"),
    ({"rank": 0}, "rank: state has 1, this stream 0"),
    ({"purpose": "probe"}, "purpose: state has 'train', this stream 'probe'"),
])
def test_state_of_another_stream_is_refused_naming_what_differs(make_step, stream_of, change, named):
    state = stream_of(step_config(make_step, STAGE3, "saved"), rank=1, world_size=2).state_dict()
    cfg = step_config(make_step, STAGE3, "other", overrides=change.get("overrides", ()))
    other = stream_of(cfg, rank=change.get("rank", 1), world_size=change.get("world_size", 2),
                      purpose=change.get("purpose", "train"))
    with pytest.raises(StreamStateMismatch, match=named):
        other.load_state_dict(state)


# --- splits and purposes ------------------------------------------------------------------------------------

def test_eval_split_and_purpose_give_independent_reproducible_streams(make_step, stream_of, dataset):
    cfg = step_config(make_step, STAGE3, "splits")
    probe = stream_of(cfg, split="eval", purpose="probe")
    ids = [i for row in row_ids(probe.next_rows(2)) for i in row]
    assert ids and all(i.startswith("eval-") for i in ids)
    _, eval_pools = read_pools(str(dataset), "eval", sorted(cfg.stage.drawn_mixture()), every_task=False)
    assert set(probe.identity["mixture"]) == set(eval_pools) <= set(cfg.stage.drawn_mixture())
    assert row_ids(stream_of(cfg, split="eval", purpose="probe").next_rows(2)) == row_ids(
        stream_of(cfg, split="eval", purpose="probe").next_rows(2))
    other = [i for row in row_ids(stream_of(cfg, split="eval", purpose="probe-b").next_rows(2)) for i in row]
    assert other != ids
    train = [i for row in row_ids(stream_of(cfg).next_rows(1)) for i in row]
    assert train and all(i.startswith("pretrain-") for i in train)


def test_a_source_of_weight_zero_is_left_out_and_an_all_zero_mixture_is_refused(make_step, stream_of, dataset,
                                                                                 tmp_path):
    from conf import ConfigError

    zeroed = {task: 0 for task in ("caption", "interleaved", "ocr", "grounding", "point", "chart", "gui", "math",
                                   "reasoning", "text")}
    overrides = [f"stages.{STAGE3}.mixture.{task}=0" for task in zeroed]
    cfg = step_config(make_step, STAGE3, "zeroed", overrides)
    assert cfg.stage.drawn_mixture() == {"vqa": cfg.stage.mixture["vqa"], "counting": cfg.stage.mixture["counting"]}
    stream = stream_of(cfg)
    assert set(stream.identity["mixture"]) == {"vqa", "counting"}
    drawn = [s for row in stream.next_rows(3) for s in row]
    by_id = {json.loads(line)["id"]: json.loads(line)["task"]
             for shard in sorted((dataset / "pretrain").glob("*.jsonl")) for line in shard.read_text().splitlines()}
    assert drawn and {by_id[s.sample_id] for s in drawn} <= {"vqa", "counting"}
    # A source left out needs no sample in the data: a data set without any caption still plans and streams.
    root = tmp_path / "no-captions"
    for split in ("pretrain", "heldout"):
        shutil.copytree(dataset / split, root / split)
        for shard in (root / split).glob("*.jsonl"):
            shard.write_text("".join(line + "\n" for line in shard.read_text().splitlines()
                                     if json.loads(line)["task"] != "caption"))
    assert stream_of(step_config(make_step, STAGE3, "zeroed-no-captions", overrides, data_uri=str(root))).next_rows(1)
    everything = [f"stages.{STAGE3}.mixture.{task}=0" for task in (*zeroed, "vqa", "counting")]
    with pytest.raises(ConfigError, match=r"mixture: every weight is 0"):
        step_config(make_step, STAGE3, "all-zero", everything)
    with pytest.raises(ConfigError, match=r"mixture\.vqa: weight must be >= 0"):
        step_config(make_step, STAGE3, "negative", [f"stages.{STAGE3}.mixture.vqa=-1"])


def test_a_split_with_none_of_the_sources_is_an_error_naming_it(make_step, stream_of, dataset, tmp_path):
    root = tmp_path / "no-caption-held-out"
    shutil.copytree(dataset / "pretrain", root / "pretrain")
    (root / "eval").mkdir()
    held_out = [line for line in (dataset / "eval" / "shard-00000.jsonl").read_text().splitlines()
                if json.loads(line)["task"] == "text"]
    assert held_out   # the split has samples, only none of the mixture's source
    (root / "eval" / "shard-00000.jsonl").write_text("\n".join(held_out) + "\n")
    cfg = step_config(make_step, STAGE1, "no-caption", data_uri=str(root))   # stage 1 trains on captions only
    stream_of(cfg).next_rows(1)
    with pytest.raises(ValueError, match=r"source\(s\) \['caption'\] with no sample in .* \(split eval\)"):
        stream_of(cfg, split="eval")


# --- unusable samples ---------------------------------------------------------------------------------------

def _data_set_with_bad_samples(dataset: Path, root: Path) -> tuple[set[str], dict[str, str]]:
    """Six good caption samples and one sample of each unusable kind; (good ids, {bad id: reason})."""
    (root / "pretrain" / "images").mkdir(parents=True)
    records = [json.loads(line) for line in (dataset / "pretrain" / "shard-00000.jsonl").read_text().splitlines()]
    captions = [r for r in records if r["task"] == "caption"][:9]
    for record in captions[:6]:
        for part in record["messages"][0]["content"]:
            if part["type"] == "image":
                shutil.copy(dataset / "pretrain" / part["image"], root / "pretrain" / part["image"])
    missing, placeholder, long = captions[6:9]
    missing["id"] = "bad-missing-image"   # its image file is not there
    placeholder["id"] = "bad-placeholder"
    placeholder["messages"][0]["content"] = [{"type": "text", "text": "<|vision_start|><|image_pad|><|vision_end|>"}]
    long["id"] = "bad-too-long"
    long["messages"][0]["content"] = [{"type": "text", "text": "what is this? " * 400}]
    shard = root / "pretrain" / "shard-00000.jsonl"
    shard.write_text("".join(json.dumps(r) + "\n" for r in captions))
    return ({r["id"] for r in captions[:6]},
            {"bad-missing-image": IMAGE, "bad-placeholder": PLACEHOLDER, "bad-too-long": TOO_LONG})


def test_unusable_samples_are_skipped_counted_and_logged(make_step, stream_of, dataset, tmp_path, caplog):
    good, bad = _data_set_with_bad_samples(dataset, tmp_path / "bad-data")
    cfg = step_config(make_step, STAGE1, "bad", overrides=[f"stages.{STAGE1}.packing.buffer_size=4"],
                      data_uri=str(tmp_path / "bad-data"))
    stream = stream_of(cfg)
    with caplog.at_level(logging.WARNING):
        rows = stream.next_rows(6)
    assert len(rows) == 6 and {i for row in row_ids(rows) for i in row} <= good
    # Every draw of a bad sample (several epochs of a 9-sample pool) counted under its reason.
    replay = MixtureSampler({"caption": 9}, {"caption": 1.0}, seed=cfg.stage.seed, purpose="train", rank=0,
                            world_size=1)
    drawn = Counter(stream.pools["caption"][replay.next().index].sample.id for _ in range(stream.sampler.draws))
    expected = Counter()
    for sample_id, reason in bad.items():
        expected[reason] += drawn[sample_id]
    assert all(expected[reason] >= 1 for reason in bad.values())
    assert stream.skipped_by_reason() == dict(expected)
    assert stream.skipped == sum(expected.values())
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for sample_id in bad:
        assert sample_id in logged
    assert len(stream.next_rows(3)) == 3   # and the stream goes on


def test_a_split_without_any_usable_sample_fails_instead_of_looping(make_step, stream_of, dataset, tmp_path):
    root = tmp_path / "bad-only"
    _, bad = _data_set_with_bad_samples(dataset, root)
    shard = root / "pretrain" / "shard-00000.jsonl"
    shard.write_text("".join(line + "\n" for line in shard.read_text().splitlines() if json.loads(line)["id"] in bad))
    cfg = step_config(make_step, STAGE1, "bad-only", data_uri=str(root))
    with pytest.raises(ValueError, match=r"split pretrain: the last 4 samples drawn \(more than its 3 samples\) "
                                         r"were all unusable"):
        stream_of(cfg).next_rows(1)
