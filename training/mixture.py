"""The pre-training data stream: a weighted mixture of sources, encoded and packed into rows.

Sampling is index-based and per rank. Each epoch of a task is a seeded permutation of its pool, shared by
all ranks; rank r takes positions r, r + world_size, ... of it (world_size * (n // world_size) samples per
epoch, so ranks never draw the same sample within an epoch). Which task the k-th draw of a rank comes from
is a pure function of (seed, purpose, rank, k) (a counter-based hash, no RNG state). The stream's state is
therefore a few counters plus the ids of the samples the packer holds: `load_state_dict` re-encodes those
and continues exactly where the stream stopped, without replaying the rows already consumed.

A sample that cannot be used (missing, corrupt or unreadable image, placeholder mismatch, longer than
seq_len) is skipped, counted and logged; it never stops the run. Only a split in which nothing drawn is
usable any more is an error (instead of a stream that loops for ever).
"""
from __future__ import annotations

import hashlib
import logging
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from data.collator import EncodedSample, Packer, PlaceholderMismatch, SampleEncoder
from data.reader import LoadedSample, SampleReader
from training.config import StepConfig, data_storage

log = logging.getLogger("mimovl.data")

STATE_FORMAT = 1
IMAGE = "image"              # missing, corrupt or unreadable image (the reader logs which)
PLACEHOLDER = "placeholder"  # image references and images disagree
TOO_LONG = "too_long"        # longer than seq_len (the packer counts and logs it)


class StreamStateMismatch(ValueError):
    """A stream state saved by a stream of another configuration (mixture, seed, world size, data, ...)."""


def _digest(*parts: object, size: int) -> bytes:
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=size).digest()


@dataclass(frozen=True)
class Draw:
    task: str
    epoch: int
    index: int   # into the task's pool


class MixtureSampler:
    """The sample each draw of one rank takes: a task by the mixture weights, then the rank's next position
    in that task's epoch permutation. State: the draw counter and each task's (epoch, position)."""

    def __init__(self, sizes: dict[str, int], weights: dict[str, float], *, seed: int, purpose: str, rank: int,
                 world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size {world_size})")
        small = {task: n for task, n in sizes.items() if n < world_size}
        if small:
            raise ValueError(f"source(s) {small} have fewer samples than the {world_size} ranks that share them")
        self.sizes, self.seed, self.purpose, self.rank, self.world_size = dict(sizes), seed, purpose, rank, world_size
        self.tasks = sorted(weights)
        self.cumulative = list(accumulate(weights[t] for t in self.tasks))
        self.key = _digest("mixture-draw", seed, purpose, rank, size=32)
        self.draws = 0
        self.positions = {task: [0, 0] for task in self.tasks}   # task -> [epoch, position within the rank's share]
        self._orders: dict[str, tuple[int, np.ndarray]] = {}

    def per_epoch(self, task: str) -> int:
        """Samples of `task` each rank draws per epoch."""
        return self.sizes[task] // self.world_size

    def order(self, task: str, epoch: int) -> np.ndarray:
        """The permutation of `task`'s pool for `epoch`, the same on every rank. RandomState's stream is frozen
        across numpy versions, so a resumed run gets the same order."""
        cached = self._orders.get(task)
        if cached is None or cached[0] != epoch:
            words = np.frombuffer(_digest("mixture-order", self.seed, self.purpose, task, epoch, size=16), np.uint32)
            cached = (epoch, np.random.RandomState(words).permutation(self.sizes[task]))
            self._orders[task] = cached
        return cached[1]

    def share(self, task: str, epoch: int) -> np.ndarray:
        """The pool indices of `task` this rank draws in `epoch`, in draw order."""
        return self.order(task, epoch)[self.rank:self.world_size * self.per_epoch(task):self.world_size]

    def task_of(self, k: int) -> str:
        """The task of draw k: a uniform number hashed from (seed, purpose, rank, k) against the weights."""
        word = hashlib.blake2b(k.to_bytes(8, "little"), key=self.key, digest_size=8).digest()
        u = int.from_bytes(word, "little") / 2**64 * self.cumulative[-1]
        return self.tasks[min(bisect_right(self.cumulative, u), len(self.tasks) - 1)]

    def next(self) -> Draw:
        task = self.task_of(self.draws)
        self.draws += 1
        position = self.positions[task]
        if position[1] >= self.per_epoch(task):
            position[0], position[1] = position[0] + 1, 0
        epoch, i = position
        position[1] += 1
        return Draw(task, epoch, int(self.share(task, epoch)[i]))


class RowStream:
    """The packed rows of one rank, resumable from `state_dict()` in O(1) of the rows consumed."""

    def __init__(self, pools: dict[str, list[LoadedSample]], weights: dict[str, float], *, seed: int, purpose: str,
                 rank: int, world_size: int, split: str, reader: SampleReader, encoder: SampleEncoder,
                 packer: Packer):
        self.pools, self.reader, self.encoder, self.packer = pools, reader, encoder, packer
        self.sampler = MixtureSampler({t: len(pools[t]) for t in weights}, weights, seed=seed, purpose=purpose,
                                      rank=rank, world_size=world_size)
        self.identity = {
            "seed": seed, "purpose": purpose, "rank": rank, "world_size": world_size, "split": split,
            "mixture": {t: float(weights[t]) for t in sorted(weights)},
            "pool_sizes": {t: len(pools[t]) for t in sorted(weights)},
            "seq_len": packer.seq_len, "buffer_size": packer.buffer_size, "min_fill": packer.min_fill,
        }
        self.rows = 0
        self.unusable = {IMAGE: 0, PLACEHOLDER: 0}
        self._by_id: dict[str, LoadedSample] | None = None
        self.pool_total = sum(len(pools[t]) for t in weights)
        self._unusable_in_a_row = 0   # a data set with no usable sample would otherwise loop for ever

    @property
    def skipped(self) -> int:
        return sum(self.unusable.values()) + self.packer.stats.too_long

    def skipped_by_reason(self) -> dict[str, int]:
        return {**self.unusable, TOO_LONG: self.packer.stats.too_long}

    def _encode(self, record: LoadedSample) -> EncodedSample | None:
        images = self.reader.images_of(record)
        if images is None:
            self.unusable[IMAGE] += 1
            return None
        try:
            return self.encoder.encode(record.sample.id, record.sample.messages, images)
        except PlaceholderMismatch as exc:
            self.unusable[PLACEHOLDER] += 1
            log.warning("skipping sample %s (%s): %s", record.sample.id, record.source, exc)
            return None

    def _next_row(self) -> list[EncodedSample]:
        while (row := self.packer.pop_row()) is None:
            draw = self.sampler.next()
            sample = self._encode(self.pools[draw.task][draw.index])
            if sample is not None and self.packer.add(sample):
                self._unusable_in_a_row = 0
                continue
            self._unusable_in_a_row += 1
            if self._unusable_in_a_row > self.pool_total:
                raise ValueError(f"split {self.identity['split']}: the last {self._unusable_in_a_row} samples drawn "
                                 f"(more than its {self.pool_total} samples) were all unusable; skipped so far: "
                                 f"{self.skipped_by_reason()}")
        return row

    def next_rows(self, n: int) -> list[list[EncodedSample]]:
        rows = [self._next_row() for _ in range(n)]
        self.rows += n
        return rows

    def state_dict(self) -> dict:
        """Where the stream stands, small and JSON-able: counters and the ids of the samples the packer holds."""
        return {
            "format": STATE_FORMAT,
            "stream": {**self.identity, "mixture": dict(self.identity["mixture"]),
                       "pool_sizes": dict(self.identity["pool_sizes"])},
            "rows": self.rows,
            "draws": self.sampler.draws,
            "positions": {task: list(p) for task, p in self.sampler.positions.items()},
            "skipped": dict(self.unusable),
            "packer": {
                "ready": [[s.sample_id for s in row] for row in self.packer.ready],
                "buffer": [s.sample_id for s in self.packer.buffer],
                "stats": self.packer.stats.counters(),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (of a stream with the same identity): counters are set and the packer's
        samples re-encoded from their ids; no consumed row is replayed."""
        if state.get("format") != STATE_FORMAT:
            raise StreamStateMismatch(f"stream state format {state.get('format')!r}, expected {STATE_FORMAT}")
        saved = state["stream"]
        differ = [f"{key}: state has {saved.get(key)!r}, this stream {value!r}"
                  for key, value in self.identity.items() if saved.get(key) != value]
        if differ:
            raise StreamStateMismatch("the stream state belongs to another stream: " + "; ".join(differ))
        self.rows = state["rows"]
        self.sampler.draws = state["draws"]
        self.sampler.positions = {task: list(p) for task, p in state["positions"].items()}
        self.unusable = dict(state["skipped"])
        packer = state["packer"]
        ready = [[s for s in map(self._reencode, row) if s is not None] for row in packer["ready"]]
        buffer = [s for s in map(self._reencode, packer["buffer"]) if s is not None]
        self.packer.restore([row for row in ready if row], buffer, packer["stats"])

    def _reencode(self, sample_id: str) -> EncodedSample | None:
        if self._by_id is None:
            self._by_id = {r.sample.id: r for pool in self.pools.values() for r in pool}
        record = self._by_id.get(sample_id)
        if record is None:
            raise StreamStateMismatch(f"the stream state holds sample {sample_id!r}, which is not in this data set")
        sample = self._encode(record)
        if sample is None:
            log.warning("sample %s of the saved packer buffer is no longer usable: the resumed stream leaves it out",
                        sample_id)
        return sample


def read_pools(uri: str, split: str, tasks: list[str], storage=None, *,
               every_task: bool = True) -> tuple[SampleReader, dict[str, list[LoadedSample]]]:
    """The samples of `split` grouped by task (images are loaded when drawn). A task of the mixture with no
    sample in the split is an error before training starts; with every_task=False it is left out (a held-out
    split need not hold every source), and only a split holding none of the tasks is an error."""
    reader = SampleReader(uri, split=split, load_images=False, storage=storage)
    pools: dict[str, list[LoadedSample]] = {task: [] for task in tasks}
    for record in reader:
        if record.sample.task in pools:
            pools[record.sample.task].append(record)
    empty = [task for task, pool in pools.items() if not pool]
    if empty and (every_task or len(empty) == len(pools)):
        raise ValueError(f"stage.mixture names source(s) {empty} with no sample in {uri} (split {split}); "
                         f"found {sorted(t for t, p in pools.items() if p)}")
    if empty:
        log.info("split %s of %s has no sample of %s: the stream draws from %s", split, uri, empty,
                 sorted(t for t, p in pools.items() if p))
    if reader.stats.total_skipped:
        log.warning("data %s/%s: %s", uri, split, reader.stats.as_dict())
    return reader, {task: pool for task, pool in pools.items() if pool}


def build_row_stream(cfg: StepConfig, tokenizer, image_processor, *, rank: int, world_size: int,
                     split: str | None = None, purpose: str = "train") -> RowStream:
    """The rows of this rank from `split` (None: cfg.data.split; e.g. "eval" for the held-out probe).
    `purpose` seeds an independent stream. Another split than the step's own may lack some of the mixture's
    sources: the stream then draws from those it has, with their weights."""
    stage = cfg.stage
    split = split or cfg.data.split
    mixture = stage.drawn_mixture()
    reader, pools = read_pools(cfg.data.uri, split, sorted(mixture), data_storage(cfg),
                               every_task=split == cfg.data.split)
    encoder = SampleEncoder(tokenizer, image_processor, cfg.model.processor.merge_size)
    packer = Packer(seq_len=stage.seq_len, buffer_size=stage.packing.buffer_size, min_fill=stage.packing.min_fill)
    weights = {task: mixture[task] for task in pools}
    return RowStream(pools, weights, seed=stage.seed, purpose=purpose, rank=rank, world_size=world_size,
                     split=split, reader=reader, encoder=encoder, packer=packer)
