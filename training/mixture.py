"""The pre-training data stream: a weighted mixture of sources, encoded and packed into rows.

The stream is a pure function of (data set, mixture, seed, rank), so resuming at row k is replaying the
stream to row k (`skip`): no data-loader state has to be checkpointed beyond the row count.
A sample that cannot be used (missing or corrupt image, placeholder mismatch, longer than seq_len) is
skipped, counted and logged; it never stops the run.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Iterator

from data.collator import EncodedSample, Packer, PlaceholderMismatch, SampleEncoder
from data.reader import LoadedSample, SampleReader
from training.config import StepConfig, data_storage

log = logging.getLogger("mimovl.data")


class RowStream:
    def __init__(self, pools: dict[str, list[LoadedSample]], weights: dict[str, float], seed: int, rank: int,
                 reader: SampleReader, encoder: SampleEncoder, packer: Packer, purpose: str = "train"):
        self.pools, self.reader, self.encoder, self.packer = pools, reader, encoder, packer
        self.tasks = sorted(weights)
        self.weights = [weights[t] for t in self.tasks]
        self.rng = random.Random(f"{purpose}-{seed}-{rank}")
        self.consumed = 0
        self.unusable = 0
        self._rows = packer.pack(self._samples())

    @property
    def skipped(self) -> int:
        return self.unusable + self.packer.stats.too_long

    def _samples(self) -> Iterator[EncodedSample]:
        while True:
            task = self.rng.choices(self.tasks, self.weights)[0]
            record = self.rng.choice(self.pools[task])
            images = self.reader.images_of(record)
            if images is None:
                self.unusable += 1
                continue
            try:
                yield self.encoder.encode(record.sample.id, record.sample.messages, images)
            except PlaceholderMismatch as exc:
                self.unusable += 1
                log.warning("skipping sample %s (%s): %s", record.sample.id, record.source, exc)

    def next_rows(self, n: int) -> list[list[EncodedSample]]:
        rows = [next(self._rows) for _ in range(n)]
        self.consumed += n
        return rows

    def skip(self, n: int) -> None:
        """Replay the stream up to row `n` (resume)."""
        for _ in range(n - self.consumed):
            next(self._rows)
        self.consumed = max(self.consumed, n)


def read_pools(uri: str, split: str, tasks: list[str], storage=None) -> tuple[SampleReader, dict[str, list[LoadedSample]]]:
    """The samples of `split` grouped by task (images are loaded when drawn); a task of the mixture that has
    no sample in the data set is an error before training starts."""
    reader = SampleReader(uri, split=split, load_images=False, storage=storage)
    pools: dict[str, list[LoadedSample]] = {task: [] for task in tasks}
    for record in reader:
        if record.sample.task in pools:
            pools[record.sample.task].append(record)
    empty = [task for task, pool in pools.items() if not pool]
    if empty:
        raise ValueError(f"stage.mixture names source(s) {empty} with no sample in {uri} (split {split}); "
                         f"found {sorted(t for t, p in pools.items() if p)}")
    if reader.stats.total_skipped:
        log.warning("data %s/%s: %s", uri, split, reader.stats.as_dict())
    return reader, pools


def build_row_stream(cfg: StepConfig, tokenizer, image_processor, *, rank: int, world_size: int,
                     purpose: str = "train") -> RowStream:
    """The rows of this rank; `purpose` seeds an independent stream (e.g. "probe" for fixed probe batches)."""
    stage = cfg.stage
    reader, pools = read_pools(cfg.data.uri, cfg.data.split, sorted(stage.mixture), data_storage(cfg))
    encoder = SampleEncoder(tokenizer, image_processor, cfg.model.processor.merge_size)
    packer = Packer(seq_len=stage.seq_len, buffer_size=stage.packing.buffer_size, min_fill=stage.packing.min_fill)
    return RowStream(pools, dict(stage.mixture), stage.seed, rank, reader, encoder, packer, purpose)
