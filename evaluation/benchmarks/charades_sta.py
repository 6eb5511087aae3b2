"""Charades-STA temporal grounding: the [start, end] of the moment a sentence describes, mean temporal IoU."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.benchmarks.base import Benchmark, BenchmarkDataError, Item, ItemScore
from evaluation.benchmarks.files import field, find_files, read_parquet, unique_ids
from rewards.extract import final_answer, parse_span
from rewards.geometry import temporal_iou

_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)##(.*)$")
VIDEO_FOLDER = "Charades_v1_480"  # where the original release's mp4s unpack
PROMPT = ("Locate the start and end timestamps of the video segment corresponding to the description: "
          "{sentence}\nThe answer should be in the format [mm:ss, mm:ss] and placed in \\boxed{{}}.")


class CharadesSTA(Benchmark):
    """Charades-STA test (3720 sentence-moment pairs over Charades videos).

    Folder layout, either the original release
        <root>/charades_sta_test.txt      lines `VIDEOID start end##sentence` (start, end in seconds)
        (every charades_sta_*.txt directly in <root>, sorted; ids `<file stem>:<0-based line index>`,
        e.g. `charades_sta_test:0`, blank lines skipped; the videos would be <root>/Charades_v1_480/<VIDEOID>.mp4)
    or lmms-lab/charades_sta
        <root>/**/*.parquet               columns video (the mp4 file name), caption, timestamp ([start, end]
                                          seconds); ids: the 0-based row index over the files in sorted order
    (text files are read when present, parquet otherwise). A gold span must have 0 <= start <= end.

    The videos are not read: the eval job cannot decode video yet, so Item.prompt holds one text part that
    names the video file and carries the fork's `charades_boxed` instruction; scoring needs only the spans.

    Rule: the span in the last \\boxed{} (else in the text after any </think>), the last `[mm:ss, mm:ss]`
    there (hh:mm:ss or plain seconds too; a boxed `mm:ss, mm:ss` without brackets is read as well); the item
    score is the temporal IoU with the gold span (0 for none or an inverted span). Score: mean IoU as a
    fraction; `by` holds R@1 at IoU >= each of scoring.charades_sta.recall_iou_thresholds, keyed `R@1,IoU>=t`.
    """

    name = "charades_sta"
    metric = "miou"
    binary = False

    def load(self, root: Path) -> list[Item]:
        root = Path(root)
        texts = sorted(p for p in root.glob("charades_sta_*.txt") if p.is_file()) if root.is_dir() else []
        items: list[Item] = []
        if texts:
            for path in texts:
                items.extend(self._text_items(path))
        else:
            for path in find_files(root, "*.parquet", self.name):
                for index, row in enumerate(read_parquet(path, ["video", "caption", "timestamp"])):
                    items.append(self._parquet_item(row, f"{path} row {index}", len(items)))
        unique_ids([item.id for item in items], root)
        return items

    def _text_items(self, path: Path) -> list[Item]:
        items = []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BenchmarkDataError(f"{path}: not a readable text file: {exc}") from exc
        for index, line in enumerate(lines):
            if not line.strip():
                continue  # a blank line (the file's end): no item, and the other lines keep their index
            where = f"{path} line {index + 1}"
            match = _LINE.match(line.strip())
            if match is None:
                raise BenchmarkDataError(f"{where}: must be `VIDEOID start end##sentence`, got {line[:200]!r}")
            video, start, end, sentence = match.groups()
            try:
                span = (float(start), float(end))
            except ValueError as exc:
                raise BenchmarkDataError(f"{where}: start and end must be seconds, got {start!r} {end!r}") from exc
            items.append(self._item(f"{path.stem}:{index}", f"{VIDEO_FOLDER}/{video}.mp4", sentence, span, where))
        return items

    def _parquet_item(self, row: dict[str, Any], where: str, index: int) -> Item:
        timestamp = field(row, "timestamp", where, (list, tuple))
        if len(timestamp) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                          for v in timestamp):
            raise BenchmarkDataError(f"{where}: field 'timestamp' must be [start, end] seconds, got {timestamp!r:.200}")
        return self._item(str(index), field(row, "video", where, str), field(row, "caption", where, str),
                          (float(timestamp[0]), float(timestamp[1])), where)

    @staticmethod
    def _item(item_id: str, video: str, sentence: str, span: tuple[float, float], where: str) -> Item:
        if not (all(math.isfinite(v) for v in span) and 0.0 <= span[0] <= span[1]):
            raise BenchmarkDataError(f"{where}: the span must have 0 <= start <= end, got {span}")
        sentence = sentence.strip()
        if not sentence:
            raise BenchmarkDataError(f"{where}: the sentence is empty")
        text = f"Video: {video}\n" + PROMPT.format(sentence=sentence)
        return Item(id=item_id, prompt=[{"type": "text", "text": text}], gold=span, meta={"video": video})

    def score(self, item: Item, response: str) -> ItemScore:
        answer = final_answer(response)
        span = parse_span(answer)
        if span is None and "[" not in answer:
            span = parse_span(f"[{answer}]")
        if span is None or span[0] > span[1]:
            return ItemScore(0.0, None if span is None else list(span))
        return ItemScore(temporal_iou(span, item.gold), list(span))

    def aggregate(self, items: Sequence[Item], scores: Sequence[float]) -> tuple[float, int, dict[str, float], list[float]]:
        """Mean IoU; `by`: the fraction of items with IoU >= each threshold (R@1, one prediction per item)."""
        n = len(scores)
        by = {f"R@1,IoU>={t:g}": (sum(1 for s in scores if s >= t) / n if n else 0.0)
              for t in self.scoring.charades_sta.recall_iou_thresholds}
        return (sum(scores) / n if n else 0.0), n, by, list(scores)


ADAPTER = CharadesSTA
