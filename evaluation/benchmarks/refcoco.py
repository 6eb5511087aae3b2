"""RefCOCO / RefCOCO+ / RefCOCOg referring-expression grounding: one box per description, Acc@0.5."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from evaluation.benchmarks.base import Benchmark, BenchmarkDataError, Item, ItemScore
from evaluation.benchmarks.files import embedded_image, field, find_files, read_parquet, text_id, unique_ids
from evaluation.benchmarks.localisation import (
    REFERRING_PROMPT, grounding_prompt, image_size, predicted_box, xywh_box,
)
from rewards.geometry import iou, is_valid_box

_SHARD = re.compile(r"-\d+-of-\d+$")  # Hugging Face shard suffix: val-00000-of-00002 -> val


class RefCOCO(Benchmark):
    """RefCOCO, RefCOCO+ or RefCOCOg as lmms-lab ships them (lmms-lab/RefCOCO, RefCOCOplus, RefCOCOg).

    Folder layout: parquet files anywhere under the folder, read in sorted path order, e.g.
        <root>/data/val-00000-of-00001.parquet  <root>/data/testA-00000-of-00001.parquet ...
    Columns read: question_id (the prediction id; one item per row), image (an image struct {bytes, path}),
    answer (a list of referring expressions; the prompt uses the first), bbox (COCO [x, y, w, h] in pixels
    of the stored image). question, file_name, segmentation and iscrowd are not read.
    `by`: the split, i.e. the file stem without its shard suffix (val, test, testA, testB).

    Prompt: the fork's `refcoco_bbox_rec_val_mimo` text for the first expression. Upstream lmms-eval
    explodes a row into one sample per expression (all sharing the question_id); here a row is one item,
    so that the id names it.

    Rule: the response's box by MiMo-VL's evaluation parser (see evaluation.benchmarks.localisation), in
    pixels of the stored image (values all in [0, 1]: normalised, scaled by the image size read from the
    image header); right when IoU with the gold box >= scoring.refcoco.iou_threshold. A point (zero-size
    box), an inverted box or no box scores 0.
    """

    name = "refcoco"
    metric = "acc@0.5"

    def load(self, root: Path) -> list[Item]:
        items: list[Item] = []
        for path in find_files(root, "*.parquet", self.name):
            split = _SHARD.sub("", path.stem)
            for index, row in enumerate(read_parquet(path, ["question_id", "image", "answer", "bbox"])):
                items.append(self._item(row, f"{path} row {index}", split))
        unique_ids([item.id for item in items], root)
        return items

    def _item(self, row: dict[str, Any], where: str, split: str) -> Item:
        item_id = text_id(row.get("question_id"), where, "question_id")
        expressions = field(row, "answer", where, list)
        if not expressions or not all(isinstance(e, str) and e.strip() for e in expressions):
            raise BenchmarkDataError(f"{where}: field 'answer' must be a non-empty list of referring expressions")
        image = embedded_image(row, "image", where)
        return Item(id=item_id, prompt=grounding_prompt(image, REFERRING_PROMPT, expressions[0].strip()),
                    gold=xywh_box(row.get("bbox"), where, "bbox"), subset=split,
                    image_size=image_size(image, where), meta={"expressions": list(expressions)})

    def score(self, item: Item, response: str) -> ItemScore:
        box = predicted_box(response, item.image_size)
        if box is None:
            return ItemScore(0.0, None)
        right = is_valid_box(box, allow_empty=True) and iou(box, item.gold) >= self.scoring.refcoco.iou_threshold
        return ItemScore(1.0 if right else 0.0, list(box))


ADAPTER = RefCOCO
