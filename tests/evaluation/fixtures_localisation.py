"""Tiny benchmark folders in the real layouts of the localisation benchmarks, written by the tests.

refcoco: lmms-lab parquet with embedded PNG structs; screenspot_v2 / screenspot_pro / osworld_g: JSON plus
image folders (osworld_g also as parquet); charades_sta: the original text file or the lmms-lab parquet.
"""
from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def png(width: int, height: int) -> bytes:
    """An encoded single-colour PNG of this size."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_struct(data: bytes, name: str) -> dict:
    return {"bytes": data, "path": name}


_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write_refcoco(root: Path, rows: Sequence[dict], size: tuple[int, int]) -> None:
    """rows: {split, question_id, bbox (COCO [x, y, w, h]), answer (expressions)}; one file per split."""
    image = png(*size)
    by_split: dict[str, list[dict]] = {}
    for row in rows:
        by_split.setdefault(row["split"], []).append(row)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, split_rows in by_split.items():
        table = pa.table({
            "question_id": pa.array([r["question_id"] for r in split_rows], pa.string()),
            "image": pa.array([_image_struct(image, f"{r['question_id']}.png") for r in split_rows], _IMAGE_TYPE),
            "question": pa.array(["Please carefully observe the area circled in the image."] * len(split_rows)),
            "answer": pa.array([r["answer"] for r in split_rows], pa.list_(pa.string())),
            "segmentation": pa.array([[0.0] * 6 for _ in split_rows], pa.list_(pa.float32())),
            "bbox": pa.array([r["bbox"] for r in split_rows], pa.list_(pa.float32())),
            "iscrowd": pa.array([0] * len(split_rows), pa.int8()),
            "file_name": pa.array([f"COCO_train2014_{i:012d}.jpg" for i in range(len(split_rows))]),
        })
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet")


def write_screenspot_v2(root: Path, records: dict[str, Sequence[dict]], size: tuple[int, int]) -> None:
    """records: platform -> [{img_filename, bbox [x, y, w, h], instruction, data_type, data_source}]."""
    images = root / "screenspot_imgs"
    images.mkdir(parents=True, exist_ok=True)
    data = png(*size)
    for platform, platform_records in records.items():
        for record in platform_records:
            (images / record["img_filename"]).write_bytes(data)
        (root / f"screenspot_{platform}_v2.json").write_text(json.dumps(list(platform_records)), encoding="utf-8")


def write_screenspot_pro(root: Path, records: dict[str, Sequence[dict]]) -> None:
    """records: annotation file stem -> [{img_filename (app/...), bbox [x1, y1, x2, y2], img_size, ...}]."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for stem, file_records in records.items():
        for record in file_records:
            path = root / "images" / record["img_filename"]
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_bytes(png(*record["img_size"]))
        (root / "annotations" / f"{stem}.json").write_text(json.dumps(list(file_records)), encoding="utf-8")


def write_osworld_g_json(root: Path, records: Sequence[dict], size: tuple[int, int]) -> None:
    """records: {id, image_path, image_size, instruction, box_type, box_coordinates, GUI_types}."""
    data = png(*size)
    for record in records:
        path = root / record["image_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "OSWorld-G.json").write_text(json.dumps(list(records)), encoding="utf-8")


def write_osworld_g_parquet(root: Path, records: Sequence[dict], size: tuple[int, int]) -> None:
    """The same records with an embedded image and without image_path or image_size (read from the header)."""
    data = png(*size)
    root.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "id": pa.array([r["id"] for r in records], pa.string()),
        "image": pa.array([_image_struct(data, f"{r['id']}.png") for r in records], _IMAGE_TYPE),
        "instruction": pa.array([r["instruction"] for r in records]),
        "box_type": pa.array([r["box_type"] for r in records]),
        "box_coordinates": pa.array([[float(v) for v in r["box_coordinates"]] for r in records],
                                    pa.list_(pa.float64())),
    })
    pq.write_table(table, root / "test-00000-of-00001.parquet")


def write_charades_txt(root: Path, lines: Sequence[tuple[str, float, float, str]]) -> None:
    """charades_sta_test.txt: `VIDEOID start end##sentence` per line."""
    root.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{video} {start:.1f} {end:.1f}##{sentence}\n" for video, start, end, sentence in lines)
    (root / "charades_sta_test.txt").write_text(text, encoding="utf-8")


def write_charades_parquet(root: Path, rows: Sequence[tuple[str, float, float, str]]) -> None:
    """lmms-lab/charades_sta: video (file name), caption, timestamp [start, end]."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "video": pa.array([f"{video}.mp4" for video, *_ in rows]),
        "caption": pa.array([sentence for *_, sentence in rows]),
        "timestamp": pa.array([[start, end] for _, start, end, _ in rows], pa.list_(pa.float64())),
    })
    pq.write_table(table, root / "data" / "test-00000-of-00001.parquet")
