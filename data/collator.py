"""Tokenise chat samples, expand image placeholders, mask labels and pack samples into fixed-length rows.

A packed row holds several samples end to end. Qwen2.5-VL keeps them apart when it is given
`position_ids` of shape (4, B, L) with `attention_mask=None` and `use_cache=False`: row 0 restarts at 0
for every sample, from which transformers builds a block-diagonal causal mask; rows 1-3 are each sample's
own M-RoPE positions (see shared/reference/stack-notes.md, "Packing multimodal samples").
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from data.chat_format import IM_END, IM_START, IMAGE_PAD, VISION_END, VISION_START

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


class PlaceholderMismatch(ValueError):
    """The image references of a sample and its pixel grids disagree."""


@dataclass
class EncodedSample:
    sample_id: str
    input_ids: torch.Tensor       # (L,) int64, image placeholders expanded
    labels: torch.Tensor          # (L,) int64, IGNORE_INDEX except assistant tokens
    mrope_positions: torch.Tensor  # (3, L) int64
    pixel_values: torch.Tensor | None   # (patches, C*T*P*P)
    image_grid_thw: torch.Tensor | None  # (images, 3)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def render_chat(messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The chat text exactly as the tokenizer's chat template renders it, and the character spans that are
    trained on (each assistant message's content plus its <|im_end|>)."""
    text, spans = [], []
    pos = 0

    def add(piece: str) -> None:
        nonlocal pos
        text.append(piece)
        pos += len(piece)

    for message in messages:
        add(f"{IM_START}{message['role']}\n")
        start = pos
        content = message["content"]
        if isinstance(content, str):
            add(content)
        else:
            for part in content:
                if part["type"] == "image":
                    add(f"{VISION_START}{IMAGE_PAD}{VISION_END}")
                elif part["type"] == "text":
                    add(part["text"])
        add(IM_END)
        if message["role"] == "assistant":
            spans.append((start, pos))
        add("\n")
    return "".join(text), spans


def mrope_positions(input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None, image_token_id: int,
                    merge_size: int) -> torch.Tensor:
    """Qwen2.5-VL's 3D rotary positions (temporal, height, width) for one sample, as get_rope_index computes
    them for still images: text advances by 1, an image block takes its (h, w) grid from the current
    position and advances by max(h, w)."""
    ids = input_ids.tolist()
    rows: list[torch.Tensor] = []
    current, i, image = 0, 0, 0
    while i < len(ids):
        if ids[i] == image_token_id:
            t, h, w = (int(x) for x in image_grid_thw[image])
            gh, gw = h // merge_size, w // merge_size
            tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(gh), torch.arange(gw), indexing="ij")
            rows.append(torch.stack([tt, hh, ww]).reshape(3, -1) + current)
            i += t * gh * gw
            current += max(gh, gw)
            image += 1
        else:
            j = i
            while j < len(ids) and ids[j] != image_token_id:
                j += 1
            rows.append(torch.arange(current, current + j - i).expand(3, -1))
            current += j - i
            i = j
    return torch.cat(rows, dim=1) if rows else torch.zeros(3, 0, dtype=torch.long)


@dataclass
class SampleEncoder:
    """Turns (messages, images) into an EncodedSample with the model's tokenizer and image processor."""

    tokenizer: object
    image_processor: object
    merge_size: int

    def __post_init__(self) -> None:
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)

    def encode(self, sample_id: str, messages: Sequence[dict], images: Sequence) -> EncodedSample:
        text, spans = render_chat(messages)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        n_refs = sum(1 for i in ids if i == self.image_token_id)
        if n_refs != len(images):
            raise PlaceholderMismatch(
                f"sample {sample_id}: {n_refs} image references in its messages but {len(images)} images"
            )
        pixel_values = grid = None
        counts: list[int] = []
        if images:
            processed = self.image_processor(images=list(images), return_tensors="pt")
            pixel_values, grid = processed["pixel_values"], processed["image_grid_thw"]
            counts = [int(t * h * w) // self.merge_size**2 for t, h, w in grid.tolist()]
            if len(counts) != len(images) or sum(counts) * self.merge_size**2 != pixel_values.shape[0]:
                raise PlaceholderMismatch(
                    f"sample {sample_id}: image_grid_thw {grid.tolist()} does not match "
                    f"{pixel_values.shape[0]} patches for {len(images)} images"
                )
        out_ids: list[int] = []
        out_labels: list[int] = []
        image = 0
        for token, (start, _end) in zip(ids, offsets):
            trained = any(a <= start < b for a, b in spans)
            if token == self.image_token_id:
                out_ids.extend([token] * counts[image])
                out_labels.extend([IGNORE_INDEX] * counts[image])
                image += 1
            else:
                out_ids.append(token)
                out_labels.append(token if trained else IGNORE_INDEX)
        input_ids = torch.tensor(out_ids, dtype=torch.long)
        if int((input_ids == self.image_token_id).sum()) != sum(counts):
            raise PlaceholderMismatch(f"sample {sample_id}: image placeholder tokens do not match image_grid_thw")
        labels = torch.tensor(out_labels, dtype=torch.long)
        labels[0] = IGNORE_INDEX  # never predict a sample's first token from the previous sample
        return EncodedSample(
            sample_id=sample_id,
            input_ids=input_ids,
            labels=labels,
            mrope_positions=mrope_positions(input_ids, grid, self.image_token_id, self.merge_size),
            pixel_values=pixel_values,
            image_grid_thw=grid,
        )


@dataclass
class PackingStats:
    samples: int = 0
    rows: int = 0
    tokens: int = 0          # real (non-padding) tokens
    padded_tokens: int = 0   # all tokens in emitted rows
    too_long: int = 0
    too_long_ids: list[str] = field(default_factory=list)

    COUNTERS = ("samples", "rows", "tokens", "padded_tokens", "too_long")

    @property
    def efficiency(self) -> float:
        return self.tokens / self.padded_tokens if self.padded_tokens else 0.0

    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.COUNTERS}


@dataclass
class Packer:
    """Best-fit-decreasing packing over a rolling buffer of samples.

    Once the buffer holds `buffer_size` samples, bins filled to at least `min_fill` become rows (`ready`, in
    order); the samples of emptier bins stay in the buffer to meet later samples. A sample longer than
    `seq_len` cannot be packed: it is skipped, counted and logged. `ready` and `buffer` are the packer's
    whole state: restoring them (`restore`) continues the packing exactly.
    """

    seq_len: int
    buffer_size: int
    min_fill: float
    stats: PackingStats = field(default_factory=PackingStats)
    buffer: list[EncodedSample] = field(default_factory=list)
    ready: deque[list[EncodedSample]] = field(default_factory=deque)

    def _fit(self, samples: list[EncodedSample]) -> list[list[EncodedSample]]:
        bins: list[list[EncodedSample]] = []
        free: list[int] = []
        for sample in sorted(samples, key=len, reverse=True):
            best = -1
            for b, room in enumerate(free):
                if len(sample) <= room and (best < 0 or room < free[best]):
                    best = b
            if best < 0:
                bins.append([sample])
                free.append(self.seq_len - len(sample))
            else:
                bins[best].append(sample)
                free[best] -= len(sample)
        return bins

    def add(self, sample: EncodedSample) -> bool:
        """Buffer one sample (packing the buffer once it is full); False: too long, skipped."""
        if len(sample) > self.seq_len:
            self.stats.too_long += 1
            self.stats.too_long_ids.append(sample.sample_id)
            log.warning("sample %s has %d tokens, more than seq_len %d: skipped", sample.sample_id, len(sample),
                        self.seq_len)
            return False
        self.buffer.append(sample)
        if len(self.buffer) >= self.buffer_size:
            self._emit(final=False)
        return True

    def flush(self) -> None:
        """Turn every buffered sample into rows, however full (the end of a finite input)."""
        self._emit(final=True)

    def pop_row(self) -> list[EncodedSample] | None:
        return self.ready.popleft() if self.ready else None

    def restore(self, ready: list[list[EncodedSample]], buffer: list[EncodedSample], counters: dict[str, int]) -> None:
        self.ready, self.buffer = deque(ready), list(buffer)
        for name in PackingStats.COUNTERS:
            setattr(self.stats, name, counters[name])

    def pack(self, samples: Iterable[EncodedSample]) -> Iterator[list[EncodedSample]]:
        for sample in samples:
            self.add(sample)
            while self.ready:
                yield self.ready.popleft()
        self.flush()
        while self.ready:
            yield self.ready.popleft()

    def _emit(self, final: bool) -> None:
        keep: list[EncodedSample] = []
        for row in self._fit(self.buffer):
            used = sum(len(s) for s in row)
            if final or used >= self.min_fill * self.seq_len:
                self.stats.rows += 1
                self.stats.samples += len(row)
                self.stats.tokens += used
                self.stats.padded_tokens += self.seq_len
                self.ready.append(row)
            else:
                keep.extend(row)
        self.buffer = keep


def collate_packed(rows: Sequence[Sequence[EncodedSample]], seq_len: int, pad_token_id: int) -> dict:
    """Model inputs for packed rows: input_ids/labels (B, L), position_ids (4, B, L), pixel_values and
    image_grid_thw in row-major sample order, attention_mask None and use_cache False (required for packing)."""
    batch = len(rows)
    input_ids = torch.full((batch, seq_len), pad_token_id, dtype=torch.long)
    labels = torch.full((batch, seq_len), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((4, batch, seq_len), dtype=torch.long)
    pixels, grids = [], []
    for r, row in enumerate(rows):
        pos = 0
        for sample in row:
            n = len(sample)
            input_ids[r, pos:pos + n] = sample.input_ids
            labels[r, pos:pos + n] = sample.labels
            position_ids[0, r, pos:pos + n] = torch.arange(n)
            position_ids[1:, r, pos:pos + n] = sample.mrope_positions
            if sample.pixel_values is not None:
                pixels.append(sample.pixel_values)
                grids.append(sample.image_grid_thw)
            pos += n
        if pos > seq_len:
            raise ValueError(f"packed row {r} holds {pos} tokens, more than seq_len {seq_len}")
        if pos < seq_len:
            # Padding is one more "sample" of its own (positions restart at 0), so no real token sees it.
            position_ids[:, r, pos:] = torch.arange(seq_len - pos)
    out = {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "attention_mask": None,
        "use_cache": False,
    }
    if pixels:
        out["pixel_values"] = torch.cat(pixels)
        out["image_grid_thw"] = torch.cat(grids)
    return out
