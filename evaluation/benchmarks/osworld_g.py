"""OSWorld-G: GUI grounding with boxes, polygons and refusal items, centre accuracy."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluation.benchmarks.base import Benchmark, BenchmarkDataError, Item, ItemScore
from evaluation.benchmarks.files import (
    embedded_image, field, find_files, read_json_records, read_parquet, text_id, unique_ids,
)
from evaluation.benchmarks.localisation import (
    GUI_PROMPT, centre, grounding_prompt, image_path, image_size, numbers, predicted_box, size_field, xywh_box,
)
from rewards.geometry import point_in_box, point_in_polygon

BBOX, POLYGON, REFUSAL = "bbox", "polygon", "refusal"


class OSWorldG(Benchmark):
    """OSWorld-G (MMInstruction/OSWorld-G, test 510): desktop screenshots, one instruction each.

    Folder layout, either
        <root>/<name>.json            a JSON list of records with image_path, every *.json directly in <root>
        <root>/<image_path>           the screenshot, image_path relative to <root> (else <root>/images/<image_path>)
    or
        <root>/**/*.parquet           rows with an embedded `image` struct {bytes, path} instead of image_path
    (JSON files are read when present, parquet otherwise; files in sorted name order).
    Fields read: id (the prediction id), instruction, box_type ("bbox" | "polygon" | "refusal"),
    box_coordinates ([x, y, w, h] pixels for bbox; a flat [x1, y1, x2, y2, ...] vertex list, >= 3 vertices,
    for polygon; not read for refusal), image_size ([w, h]; when absent, read from the image header).
    GUI_types and mimo_bbox are not read: this scores against the official box_coordinates (the MiMo fork
    scores against mimo_bbox, its box of each element).
    `by`: box_type.

    Prompt: the fork's GUI grounding text. Rule: the point or box by MiMo-VL's evaluation parser (see
    evaluation.benchmarks.localisation), pixels of the stored screenshot (all values in [0, 1]:
    normalised). bbox/polygon items: right when the point, or the box's centre, lies in the gold box or
    polygon, edges included. Refusal items: right only for a refusal answer, which is the official one: a
    negative point such as [-1, -1] (every parsed coordinate < 0). A response without coordinates is wrong
    on every item, refusal items included: saying "not found" in words is what the official pipeline would
    need a judge for, and offline there is none.
    """

    name = "osworld_g"
    metric = "centre_accuracy"

    def load(self, root: Path) -> list[Item]:
        root = Path(root)
        json_files = sorted(p for p in root.glob("*.json") if p.is_file()) if root.is_dir() else []
        items: list[Item] = []
        if json_files:
            for path in json_files:
                for index, record in enumerate(read_json_records(path)):
                    where = f"{path} record {index}"
                    items.append(self._item(record, where, self._image_file(root, record, where)))
        else:
            required = ["id", "image", "instruction", "box_type", "box_coordinates"]
            for path in find_files(root, "*.parquet", self.name):
                for index, row in enumerate(read_parquet(path, required)):
                    where = f"{path} row {index}"
                    items.append(self._item(row, where, embedded_image(row, "image", where)))
        unique_ids([item.id for item in items], root)
        return items

    @staticmethod
    def _image_file(root: Path, record: dict[str, Any], where: str) -> Path:
        name = record.get("image_path")
        if isinstance(name, str) and name and not (root / name).is_file() and (root / "images" / name).is_file():
            return root / "images" / name
        return image_path(root, name, where, "image_path")

    def _item(self, record: dict[str, Any], where: str, image: bytes | Path) -> Item:
        item_id = text_id(record.get("id"), where, "id")
        box_type = field(record, "box_type", where, str)
        if box_type == BBOX:
            gold: Any = xywh_box(record.get("box_coordinates"), where, "box_coordinates")
        elif box_type == POLYGON:
            flat = numbers(record.get("box_coordinates"), where, "box_coordinates")
            if len(flat) < 6 or len(flat) % 2:
                raise BenchmarkDataError(f"{where}: field 'box_coordinates' of a polygon must be an even "
                                         f"number (>= 6) of coordinates, got {len(flat)}")
            gold = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
        elif box_type == REFUSAL:
            gold = None
        else:
            raise BenchmarkDataError(f"{where}: field 'box_type' must be bbox, polygon or refusal, got {box_type!r}")
        size = (size_field(record["image_size"], where, "image_size") if record.get("image_size") is not None
                else image_size(image, where))
        return Item(id=item_id, prompt=grounding_prompt(image, GUI_PROMPT, field(record, "instruction", where, str)),
                    gold=gold, subset=box_type, image_size=size, meta={"box_type": box_type})

    def score(self, item: Item, response: str) -> ItemScore:
        box = predicted_box(response, item.image_size)
        if box is None:
            return ItemScore(0.0, None)
        if item.meta["box_type"] == REFUSAL:
            right = all(v < 0 for v in box)
        else:
            x, y = centre(box)
            right = (point_in_box(x, y, item.gold) if item.meta["box_type"] == BBOX
                     else point_in_polygon(x, y, item.gold))
        return ItemScore(1.0 if right else 0.0, list(box))


ADAPTER = OSWorldG
