"""GUI grounding on screenshots, ScreenSpot-v2 and ScreenSpot-Pro: centre accuracy."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from evaluation.benchmarks.base import Benchmark, BenchmarkDataError, Item, ItemScore
from evaluation.benchmarks.files import field, find_files, read_json_records, text_id, unique_ids
from evaluation.benchmarks.localisation import (
    GUI_PROMPT, centre, grounding_prompt, image_path, image_size, predicted_box, size_field, xywh_box, xyxy_box,
)
from rewards.geometry import point_in_box

_V2_FILE = re.compile(r"^screenspot_(mobile|desktop|web)_v2$")
_V2_IMAGE_FOLDERS = ("screenspot_imgs", "screenspotv2_image")  # the brief's name; the HF zip's folder name


class _CentreAccuracy(Benchmark):
    """Right when the predicted point, or the predicted box's centre, lies in the gold box (edges in)."""

    metric = "centre_accuracy"

    def score(self, item: Item, response: str) -> ItemScore:
        box = predicted_box(response, item.image_size)
        if box is None:
            return ItemScore(0.0, None)
        x, y = centre(box)
        return ItemScore(1.0 if point_in_box(x, y, item.gold) else 0.0, list(box))


class ScreenSpotV2(_CentreAccuracy):
    """ScreenSpot-v2 (OS-Copilot/ScreenSpot-v2): 1272 instructions on mobile, desktop and web screenshots.

    Folder layout:
        <root>/screenspot_mobile_v2.json  <root>/screenspot_desktop_v2.json  <root>/screenspot_web_v2.json
        <root>/screenspot_imgs/<img_filename>      (or <root>/screenspotv2_image/, the release zip's folder)
    Each JSON file is a list of records: img_filename, bbox ([x, y, w, h] pixels of the stored image),
    instruction, data_type ("text" or "icon"), data_source. Files not named screenspot_<platform>_v2.json
    are not read; at least one must be present.
    Id: `<file stem>:<0-based record index>`, e.g. `screenspot_web_v2:17`.
    `by`: platform x data_type, e.g. `mobile_text`, `web_icon`.

    Prompt: the fork's GUI grounding text. Rule: the point or box by MiMo-VL's evaluation parser (see
    evaluation.benchmarks.localisation), in pixels of the stored screenshot (all values in [0, 1]:
    normalised, scaled by the size read from the image header); right when the point, or the box's centre,
    lies in the gold box, edges included.
    """

    name = "screenspot_v2"

    def load(self, root: Path) -> list[Item]:
        files = [p for p in find_files(root, "screenspot_*_v2.json", self.name)
                 if p.parent == Path(root) and _V2_FILE.match(p.stem)]
        if not files:
            raise BenchmarkDataError(f"{root}: no screenspot_{{mobile,desktop,web}}_v2.json files")
        folders = [Path(root) / name for name in _V2_IMAGE_FOLDERS if (Path(root) / name).is_dir()]
        if not folders:
            raise BenchmarkDataError(f"{root}: no image folder ({' or '.join(_V2_IMAGE_FOLDERS)})")
        items: list[Item] = []
        for path in files:
            platform = _V2_FILE.match(path.stem).group(1)
            for index, record in enumerate(read_json_records(path)):
                where = f"{path} record {index}"
                image = image_path(folders[0], record.get("img_filename"), where, "img_filename")
                data_type = field(record, "data_type", where, str)
                items.append(Item(
                    id=f"{path.stem}:{index}",
                    prompt=grounding_prompt(image, GUI_PROMPT, field(record, "instruction", where, str)),
                    gold=xywh_box(record.get("bbox"), where, "bbox"), subset=f"{platform}_{data_type}",
                    image_size=image_size(image, where),
                    meta={"platform": platform, "data_type": data_type, "data_source": record.get("data_source")}))
        unique_ids([item.id for item in items], root)
        return items


class ScreenSpotPro(_CentreAccuracy):
    """ScreenSpot-Pro (likaixin/ScreenSpot-Pro): professional high-resolution applications.

    Folder layout:
        <root>/annotations/<app>_<platform>.json ...       (every *.json there, sorted by name)
        <root>/images/<img_filename>                       (img_filename holds the app folder, e.g.
                                                            `vscode_macos/screenshot_2024-11-28_....png`)
    Each JSON file is a list of records: img_filename, bbox ([x1, y1, x2, y2] pixels), img_size ([w, h]),
    instruction, platform, application, ui_type (text/icon), group (Dev, Creative, CAD, Scientific,
    Office, OS); instruction_cn is not read.
    Id: the record's `id` when it has one, else `<file stem>:<0-based record index>`.
    `by`: group (application when a record has no group).

    Rule: as ScreenSpot-v2 (the official check, the normalised point inside bbox / img_size, is the same
    test in pixels); normalised answers are scaled by img_size.
    """

    name = "screenspot_pro"

    def load(self, root: Path) -> list[Item]:
        annotations, images = Path(root) / "annotations", Path(root) / "images"
        if not images.is_dir():
            raise BenchmarkDataError(f"{root}: no images/ folder (the {self.name} layout)")
        items: list[Item] = []
        for path in find_files(annotations, "*.json", self.name):
            for index, record in enumerate(read_json_records(path)):
                items.append(self._item(record, path, index, images))
        unique_ids([item.id for item in items], root)
        return items

    def _item(self, record: dict[str, Any], path: Path, index: int, images: Path) -> Item:
        where = f"{path} record {index}"
        item_id = text_id(record["id"], where, "id") if record.get("id") is not None else f"{path.stem}:{index}"
        image = image_path(images, record.get("img_filename"), where, "img_filename")
        group = record.get("group") or field(record, "application", where, str)
        return Item(
            id=item_id, prompt=grounding_prompt(image, GUI_PROMPT, field(record, "instruction", where, str)),
            gold=xyxy_box(record.get("bbox"), where, "bbox"), subset=str(group),
            image_size=size_field(record.get("img_size"), where, "img_size"),
            meta={k: record.get(k) for k in ("platform", "application", "ui_type", "group")})


ADAPTERS = {ScreenSpotV2.name: ScreenSpotV2, ScreenSpotPro.name: ScreenSpotPro}
