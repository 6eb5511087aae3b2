"""Synthetic multimodal data set with exact ground truth: `python -m data.synth --out DIR --samples N --seed S`.

Layout of DIR:
    <split>/shard-00000.jsonl      one Sample per line (data/schema.py)
    <split>/images/<id>-<k>.png    the k-th image of sample <id>, referenced as "images/<id>-<k>.png"
    preference/<split>/shard-00000.jsonl, preference/<split>/images/...
                                   preference pairs (data/preference.py, data/synth_pairs.py), splits train, heldout
    manifest.json                  counts per split and task, sha256 of every file, one digest (last)
Splits: "pretrain" and "heldout" (prompt + assistant answer + target; heldout is never trained on: the
stages' probe loss), "rl" and "eval" (prompt + target, no answer). The preference pairs come last, from their
own random streams, so the four splits are the same with or without them.
No image and no prompt appears twice in the whole data set, so none is shared across splits (the pairs' included):
a drawn sample whose image or prompt already exists is drawn again, and the written data set is checked.
The same seed, sample count and config give byte-identical files (and the same manifest digest).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from data.config import (ANSWERED_SPLITS, GENERATION_ORDER, PREFERENCE_GENERATION_ORDER, PREFERENCE_SPLITS, SPLITS,
                         ResizeSpec, SynthConfig, load_data_config, load_resize_spec)
from data.manifest import MANIFEST_NAME, build_manifest, sha256_bytes, sha256_file, write_manifest
from data.preference import PreferencePair
from data.render import encode_png, render
from data.schema import Message, Sample
from data.synth_pairs import PairDraft, pair_builder
from data.synth_tasks import BUILDERS, Draft, TaskContext

log = logging.getLogger(__name__)

PREFERENCE_DIR = "preference"  # <out>/preference/<split>/: the preference pairs


class GenerationError(RuntimeError):
    """The generator cannot produce the requested data set (e.g. the sample space is exhausted)."""


def allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` into integer parts proportional to `weights` (largest remainder, stable order)."""
    positive = {key: w for key, w in weights.items() if w > 0}
    if total == 0 or not positive:
        return {key: 0 for key in positive}
    scale = total / sum(positive.values())
    exact = {key: w * scale for key, w in positive.items()}
    counts = {key: int(v) for key, v in exact.items()}
    order = sorted(positive, key=lambda key: (-(exact[key] - counts[key]), list(positive).index(key)))
    for key in order[: total - sum(counts.values())]:
        counts[key] += 1
    return counts


def task_sequence(total: int, weights: dict[str, float], rng: random.Random) -> list[str]:
    """`total` task names in the proportions of `weights`, shuffled."""
    tasks = [task for task, count in allocate(total, weights).items() for _ in range(count)]
    rng.shuffle(tasks)
    return tasks


def prompt_key(parts: list[tuple[str, str]]) -> str:
    """Identity of a prompt: its roles, texts and image contents (images by sha256)."""
    digest = hashlib.sha256()
    for kind, value in parts:
        digest.update(f"{kind}\x1f{value}\x1e".encode())
    return digest.hexdigest()


def messages_prompt_parts(messages: list[Message], image_digests: list[str]) -> list[tuple[str, str]]:
    digests = iter(image_digests)
    parts = []
    for message in messages:
        parts.append(("role", message["role"]))
        for part in message["content"]:
            parts.append(("text", part["text"]) if part["type"] == "text" else ("image", next(digests)))
    return parts


def _draft_prompt_parts(draft: Draft | PairDraft, image_digests: list[str]) -> list[tuple[str, str]]:
    parts = [("role", "user")]
    for part in draft.prompt:
        parts.append(("text", part["text"]) if part["type"] == "text" else ("image", image_digests[part["image"]]))
    return parts


def _user_turn(draft: Draft | PairDraft, image_refs: list[str]) -> dict[str, Any]:
    content = [dict(part, image=image_refs[part["image"]]) if part["type"] == "image" else dict(part)
               for part in draft.prompt]
    return {"role": "user", "content": content}


def to_sample(draft: Draft, sample_id: str, image_refs: list[str], with_answer: bool) -> Sample:
    messages: list[dict[str, Any]] = [_user_turn(draft, image_refs)]
    if with_answer:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": draft.answer}]})
    return Sample.from_dict({"id": sample_id, "task": draft.task, "messages": messages, "target": draft.target})


def to_pair(drawn: PairDraft, pair_id: str, image_refs: list[str]) -> PreferencePair:
    return PreferencePair.from_dict({"id": pair_id, "source": drawn.source, "prompt": [_user_turn(drawn, image_refs)],
                                     "chosen": drawn.chosen, "rejected": drawn.rejected})


class _ShardWriter:
    """Writes JSON lines into <folder>/shard-NNNNN.jsonl, `shard_size` lines per shard."""

    def __init__(self, folder: Path, shard_size: int):
        self.folder, self.shard_size = folder, shard_size
        self.shards: dict[str, str] = {}  # file name -> sha256
        self._file: Any = None
        self._digest: Any = None
        self._name = ""
        self._lines = 0

    def write(self, line: str) -> None:
        if self._file is None or self._lines == self.shard_size:
            self._close_shard()
            self._name = f"shard-{len(self.shards):05d}.jsonl"
            self._file = open(self.folder / self._name, "wb")
            self._digest, self._lines = hashlib.sha256(), 0
        data = (line + "\n").encode("utf-8")
        self._file.write(data)
        self._digest.update(data)
        self._lines += 1

    def _close_shard(self) -> None:
        if self._file is not None:
            self._file.close()
            self.shards[self._name] = self._digest.hexdigest()
            self._file = None

    def close(self) -> dict[str, str]:
        self._close_shard()
        return self.shards


class _UniqueDrawer:
    """Draws samples whose images and prompts are new to the whole data set."""

    def __init__(self, ctx: TaskContext):
        self.ctx = ctx
        self.images: set[str] = set()
        self.prompts: set[str] = set()

    def draw(self, task: str, rng: random.Random,
             build: Callable[[TaskContext, random.Random], Any] | None = None) -> tuple[Any, list[bytes], list[str]]:
        """A Draft of `task` (or what `build` makes: a PairDraft) with its PNGs and their sha256."""
        build = build or BUILDERS[task]
        level = self.ctx.cfg.png_compress_level
        for _ in range(self.ctx.cfg.max_attempts):
            draft = build(self.ctx, rng)
            pngs = [encode_png(render(canvas), level) for canvas in draft.canvases]
            digests = [sha256_bytes(png) for png in pngs]
            key = prompt_key(_draft_prompt_parts(draft, digests))
            if key in self.prompts or len(set(digests)) < len(digests) or not self.images.isdisjoint(digests):
                continue
            self.prompts.add(key)
            self.images.update(digests)
            return draft, pngs, digests
        raise GenerationError(
            f"no new '{task}' sample after {self.ctx.cfg.max_attempts} draws: its sample space is exhausted; "
            f"ask for fewer samples or widen the '{task}' settings in conf/data")


def generate(out: str | Path, samples: int, seed: int, cfg: SynthConfig, resize: ResizeSpec,
             overwrite: bool = False, reuse: bool = False) -> dict[str, Any]:
    """Write the data set into `out` and return its manifest.

    The files are written into a hidden sibling unique to this call (`.<out>.partial-<pid>-<uuid>`) and
    renamed into place once the manifest is written. An existing data set (a folder with a manifest) is
    replaced only with `overwrite`, or kept with `reuse` when the same generator settings made it; any
    other non-empty folder is never touched. A concurrent generator that renames first wins: when its
    data set has this one's digest, this one discards its own files and returns the winner's manifest.
    """
    out = Path(out)
    if samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples}")
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST_NAME).is_file():
            raise FileExistsError(f"{out} is not empty and holds no {MANIFEST_NAME}: refusing to write into it")
        if reuse and not overwrite:
            existing = _read_manifest(out)
            if existing.get("generator") == _jsonable(generator_info(samples, seed, cfg, resize)):
                log.info("%s already holds this data set (digest %s): kept", out, existing["digest"][:12])
                return existing
            raise FileExistsError(f"{out} already holds a data set made with other generator settings "
                                  f"(pass overwrite=True / --overwrite to replace it)")
        if not overwrite:
            raise FileExistsError(f"{out} already holds a data set (pass overwrite=True / --overwrite)")
    partial = _unique_sibling(out, "partial")
    partial.mkdir(parents=True)
    try:
        manifest = _write(partial, samples, seed, cfg, resize)
        return _move_into_place(partial, out, manifest, overwrite)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def generator_info(samples: int, seed: int, cfg: SynthConfig, resize: ResizeSpec) -> dict[str, Any]:
    """The manifest's `generator` section: the settings that determine every byte of the data set."""
    return {
        "name": "data.synth",
        "seed": seed,
        "samples": samples,
        "resize": {"factor": resize.factor, "min_pixels": resize.min_pixels, "max_pixels": resize.max_pixels},
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))


def _unique_sibling(out: Path, what: str) -> Path:
    """A hidden folder name beside `out`, unique to this process and call."""
    return out.with_name(f".{out.name}.{what}-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def _move_into_place(partial: Path, out: Path, manifest: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """Rename the finished `partial` to `out` (rename(2) replaces an empty folder, never a non-empty one)."""
    if overwrite and out.exists():
        old = _unique_sibling(out, "replaced")
        out.rename(old)
        shutil.rmtree(old)
    try:
        partial.rename(out)
        return manifest
    except OSError:
        if not (out / MANIFEST_NAME).is_file():
            raise
    winner = _read_manifest(out)
    if winner.get("digest") != manifest["digest"]:
        raise FileExistsError(f"another generator wrote a different data set into {out} meanwhile (digest "
                              f"{str(winner.get('digest'))[:12]}, this one's {manifest['digest'][:12]})")
    log.info("a concurrent generator finished %s first (same digest %s): its folder is kept",
             out, manifest["digest"][:12])
    return winner


def _write(root: Path, samples: int, seed: int, cfg: SynthConfig, resize: ResizeSpec) -> dict[str, Any]:
    ctx = TaskContext(cfg, resize)
    drawer = _UniqueDrawer(ctx)
    split_sizes = allocate(samples, cfg.split_fractions())
    files: dict[str, str] = {}
    splits: dict[str, Any] = {}
    for split in GENERATION_ORDER:
        rng = random.Random(f"{seed}:{split}")
        folder = root / split
        (folder / "images").mkdir(parents=True)
        writer = _ShardWriter(folder, cfg.shard_size)
        tasks: Counter[str] = Counter()
        n_images = 0
        for index, task in enumerate(task_sequence(split_sizes.get(split, 0), cfg.weights(split), rng)):
            draft, pngs, digests = drawer.draw(task, rng)
            sample_id = f"{split}-{index:06d}"
            refs = [f"images/{sample_id}-{k}.png" for k in range(len(pngs))]
            for ref, png, digest in zip(refs, pngs, digests):
                (folder / ref).write_bytes(png)
                files[f"{split}/{ref}"] = digest
            writer.write(to_sample(draft, sample_id, refs, with_answer=split in ANSWERED_SPLITS).to_json())
            tasks[task] += 1
            n_images += len(pngs)
        shards = writer.close()
        files.update({f"{split}/{name}": digest for name, digest in shards.items()})
        splits[split] = {"samples": sum(tasks.values()), "images": n_images,
                         "tasks": dict(sorted(tasks.items())), "shards": [f"{split}/{name}" for name in shards]}

    # After every split, from their own random streams: the splits above do not depend on the pairs.
    pairs = cfg.preference.pairs(samples)
    preference = _write_pairs(root, pairs, seed, cfg, drawer, files) if pairs else None

    overlaps = find_split_overlaps(root)
    if overlaps:
        raise GenerationError("splits share images or prompts:\n" + "\n".join(overlaps))
    manifest = build_manifest(files, {split: splits[split] for split in SPLITS},
                              generator_info(samples, seed, cfg, resize), preference=preference)
    write_manifest(root, manifest)
    return manifest


def _write_pairs(root: Path, total: int, seed: int, cfg: SynthConfig, drawer: _UniqueDrawer,
                 files: dict[str, str]) -> dict[str, Any]:
    """Write `total` preference pairs into root/preference/<split>/, adding their files to `files`; returns the
    manifest's `preference` section."""
    sizes = allocate(total, cfg.preference.split_fractions())
    info: dict[str, Any] = {}
    for split in PREFERENCE_GENERATION_ORDER:
        rng = random.Random(f"{seed}:{PREFERENCE_DIR}:{split}")
        rel = f"{PREFERENCE_DIR}/{split}"
        folder = root / rel
        (folder / "images").mkdir(parents=True)
        writer = _ShardWriter(folder, cfg.shard_size)
        kinds: Counter[str] = Counter()
        n_images = 0
        for index, kind in enumerate(task_sequence(sizes.get(split, 0), dict(cfg.preference.kinds), rng)):
            drawn, pngs, digests = drawer.draw(f"{PREFERENCE_DIR}:{kind}", rng, pair_builder(kind))
            pair_id = f"pref-{split}-{index:06d}"
            refs = [f"images/{pair_id}-{k}.png" for k in range(len(pngs))]
            for ref, png, digest in zip(refs, pngs, digests):
                (folder / ref).write_bytes(png)
                files[f"{rel}/{ref}"] = digest
            writer.write(to_pair(drawn, pair_id, refs).to_json())
            kinds[kind] += 1
            n_images += len(pngs)
        shards = writer.close()
        files.update({f"{rel}/{name}": digest for name, digest in shards.items()})
        info[split] = {"pairs": sum(kinds.values()), "images": n_images, "kinds": dict(sorted(kinds.items())),
                       "shards": [f"{rel}/{name}" for name in shards]}
    return {split: info[split] for split in PREFERENCE_SPLITS}


def find_split_overlaps(root: str | Path) -> list[str]:
    """Images (by content) and prompts (texts + image contents) that occur in more than one split, the preference
    pairs' splits ("preference/train", "preference/heldout") included.

    Reads the written shards and images of a local data set; [] when the splits are disjoint.
    """
    root = Path(root)
    image_splits: dict[str, set[str]] = defaultdict(set)
    prompt_splits: dict[str, set[str]] = defaultdict(set)
    examples: dict[str, str] = {}
    folders: list[tuple[str, type[Sample] | type[PreferencePair]]] = [(split, Sample) for split in SPLITS]
    folders += [(f"{PREFERENCE_DIR}/{split}", PreferencePair) for split in PREFERENCE_SPLITS]
    for split, record_type in folders:
        for shard in sorted((root / split).glob("*.jsonl")):
            with open(shard, encoding="utf-8") as f:
                for line_no, line in enumerate(f, 1):
                    record = record_type.from_json(line, file=str(shard), line_no=line_no)
                    digests = [sha256_file(shard.parent / ref) for ref in record.image_refs()]
                    for digest in digests:
                        image_splits[digest].add(split)
                        examples.setdefault(digest, record.id)
                    prompt = record.prompt_messages() if isinstance(record, Sample) else record.prompt
                    key = prompt_key(messages_prompt_parts(prompt, digests))
                    prompt_splits[key].add(split)
                    examples.setdefault(key, record.id)
    problems = []
    for what, table in (("image", image_splits), ("prompt", prompt_splits)):
        for key, in_splits in table.items():
            if len(in_splits) > 1:
                problems.append(f"{what} {key[:12]} (first in {examples[key]}) is in splits {sorted(in_splits)}")
    return problems


def synthetic_text(cfg: SynthConfig, n: int, seed: int, resize: ResizeSpec | None = None) -> Iterator[str]:
    """Texts of `n` pre-training samples (each sample's prompt, then its answer), without rendering images.

    For training the tokenizer: the same task mix, templates and answer formats as the data set.
    """
    ctx = TaskContext(cfg, resize or load_resize_spec(cfg.model))
    rng = random.Random(f"{seed}:text")
    for task in task_sequence(n, cfg.weights("pretrain"), rng):
        yield from BUILDERS[task](ctx, rng).texts()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.synth", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--samples", type=int, help="total samples over all splits (default: config)")
    parser.add_argument("--seed", type=int, help="random seed (default: config)")
    parser.add_argument("--model", help="conf/model/<model>.yaml whose processor resize sets coordinates")
    parser.add_argument("--config", default="synthetic", help="conf/data/<config>.yaml (default: synthetic)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing data set in --out")
    parser.add_argument("--reuse", action="store_true",
                        help="keep a data set in --out made with the same settings (e.g. by a concurrent run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cfg = load_data_config(args.config, model=args.model)
    model = cfg.model
    samples = cfg.samples if args.samples is None else args.samples
    seed = cfg.seed if args.seed is None else args.seed
    resize = load_resize_spec(model)
    resize.resized(*cfg.canvas.scene)  # import transformers (for smart_resize) before the clock starts
    start = time.perf_counter()
    try:
        manifest = generate(args.out, samples, seed, cfg, resize, overwrite=args.overwrite, reuse=args.reuse)
    except (GenerationError, FileExistsError) as exc:
        log.error("%s", exc)
        return 1
    seconds = time.perf_counter() - start
    summary = {
        "out": str(args.out),
        "model": model,
        "seed": seed,
        "samples": samples,
        "digest": manifest["digest"],
        "seconds": round(seconds, 3),
        "samples_per_s": round(samples / seconds, 1) if seconds > 0 else None,
        "splits": {split: info["tasks"] for split, info in manifest["splits"].items()},
        "preference": {split: info["kinds"] for split, info in manifest.get("preference", {}).items()},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
