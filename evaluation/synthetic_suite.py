"""The held-out synthetic suite: a synthetic data set's eval split written as public benchmark folders.

`write_suite(data_root, out_dir)` writes one folder per task of the split, `<out_dir>/synthetic_<task>`,
in the layout of the public benchmark whose rule fits the task, so that the public adapters read and
score it (evaluation/benchmarks/synthetic.py subclasses them):

    vqa        chartqa        test/test_human.json {imgname, query, label} + test/png/   exact words
    chart      chartqa        the same (bar values and labels)                           relaxed accuracy
    ocr        docvqa         DocVQA/validation-00000-of-00001.parquet                   ANLS
    grounding  refcoco        data/val-00000-of-00001.parquet, bbox COCO [x, y, w, h]   Acc@0.5
    point      screenspot_v2  screenspot_desktop_v2.json + screenspot_imgs/, bbox [x, y, w, h]
    gui        screenspot_pro annotations/synthetic.json + images/synthetic/, bbox [x1, y1, x2, y2]
    counting   countbench     data/test-00000-of-00001.parquet {image, text, question, number}
    math       mathvista      data/testmini-00000-of-00001.parquet, free_form integer answers
    reasoning  mathvision     data/test-00000-of-00001.parquet, free-form (options empty)
    text       mmmu           data/validation-00000-of-00001.parquet, open questions without an image

The question field of each layout (query, question, instruction) holds the sample's own user text
verbatim, and the image is the sample's PNG as stored, so what the model sees at evaluation is its
training prompt. Ids: the sample id where the layout has an id field (questionId, question_id, pid, id);
the layout's positional id otherwise (chartqa `test_human:<i>`, countbench the row index, screenspot_v2
`screenspot_desktop_v2:<i>`), in the split's order.

Coordinates: the data's targets are pixels of the image as the processor resizes it (data/synth_tasks.py,
ctx.model_box); the public rules score pixels of the image as stored, so a target is scaled by
stored / resized size, the resize read from the data set's manifest (`generator.resize`). Canvases that are
multiples of 28 inside the pixel bounds resize to themselves, and then nothing changes.
"""
from __future__ import annotations

import io
import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.config import ResizeSpec
from data.manifest import MANIFEST_NAME
from data.reader import SampleReader
from data.schema import Sample
from storage.files import MissingObject, Storage, join, resolve

SUITE_PREFIX = "synthetic_"
SUITE_INDEX = "suite.json"  # <out_dir>/suite.json: {name: {task, layout, items, folder}}


class SuiteError(ValueError):
    """A data set split that cannot be written as the suite; the message names the sample or file."""


@dataclass(frozen=True)
class SuiteSample:
    """One eval sample as the layouts need it: the user text, the PNG as stored, and the scale from the
    data's (resized) coordinates to stored pixels."""

    sample: Sample
    text: str
    png: bytes | None
    size: tuple[int, int] | None      # (width, height) of the stored image
    scale: tuple[float, float]        # stored / resized, per axis

    @property
    def id(self) -> str:
        return self.sample.id

    @property
    def target(self) -> dict[str, Any]:
        return self.sample.target or {}

    def box(self) -> list[float]:
        """The target box [x1, y1, x2, y2] in pixels of the stored image."""
        sx, sy = self.scale
        x1, y1, x2, y2 = self.target["box"]
        return _pixels([x1 * sx, y1 * sy, x2 * sx, y2 * sy])


def _pixels(values: list[float]) -> list[float]:
    return [int(v) if float(v).is_integer() else float(v) for v in values]


# ------------------------------------------------------------------------------------------ layouts

def _image_struct(s: SuiteSample) -> dict[str, Any]:
    return {"bytes": s.png, "path": f"{s.id}.png"}


def _write_parquet(path: Path, rows: list[dict[str, Any]], schema) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _write_json(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")


def _image_type():
    import pyarrow as pa

    return pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write_chartqa(folder: Path, samples: list[SuiteSample]) -> None:
    """ChartQA's original release: every sample a human question (test_augmented.json is empty)."""
    png = folder / "test" / "png"
    png.mkdir(parents=True)
    records = []
    for s in samples:
        (png / f"{s.id}.png").write_bytes(s.png)
        records.append({"imgname": f"{s.id}.png", "query": s.text, "label": s.target["answer"]})
    _write_json(folder / "test" / "test_human.json", records)
    _write_json(folder / "test" / "test_augmented.json", [])


def write_docvqa(folder: Path, samples: list[SuiteSample]) -> None:
    import pyarrow as pa

    schema = pa.schema([("questionId", pa.string()), ("question", pa.string()),
                        ("question_types", pa.list_(pa.string())), ("image", _image_type()), ("docId", pa.int64()),
                        ("ucsf_document_id", pa.string()), ("ucsf_document_page_no", pa.string()),
                        ("answers", pa.list_(pa.string())), ("data_split", pa.string())])
    rows = [{"questionId": s.id, "question": s.text, "question_types": ["synthetic"], "image": _image_struct(s),
             "docId": index, "ucsf_document_id": s.id, "ucsf_document_page_no": "1",
             "answers": [s.target["answer"]], "data_split": "validation"} for index, s in enumerate(samples)]
    _write_parquet(folder / "DocVQA" / "validation-00000-of-00001.parquet", rows, schema)


def write_refcoco(folder: Path, samples: list[SuiteSample]) -> None:
    import pyarrow as pa

    schema = pa.schema([("question_id", pa.string()), ("image", _image_type()), ("question", pa.string()),
                        ("answer", pa.list_(pa.string())), ("segmentation", pa.list_(pa.float32())),
                        ("bbox", pa.list_(pa.float32())), ("iscrowd", pa.int8()), ("file_name", pa.string())])
    rows = []
    for s in samples:
        x1, y1, x2, y2 = s.box()
        rows.append({"question_id": s.id, "image": _image_struct(s), "question": s.text,
                     "answer": [s.target.get("label") or s.text], "segmentation": [x1, y1, x2, y1, x2, y2, x1, y2],
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0, "file_name": f"{s.id}.png"})
    _write_parquet(folder / "data" / "val-00000-of-00001.parquet", rows, schema)


def write_screenspot_v2(folder: Path, samples: list[SuiteSample]) -> None:
    images = folder / "screenspot_imgs"
    images.mkdir(parents=True)
    records = []
    for s in samples:
        (images / f"{s.id}.png").write_bytes(s.png)
        x1, y1, x2, y2 = s.box()
        records.append({"img_filename": f"{s.id}.png", "bbox": [x1, y1, x2 - x1, y2 - y1], "instruction": s.text,
                        "data_type": "icon", "data_source": "synthetic"})
    _write_json(folder / "screenspot_desktop_v2.json", records)


def write_screenspot_pro(folder: Path, samples: list[SuiteSample]) -> None:
    images = folder / "images" / "synthetic"
    images.mkdir(parents=True)
    records = []
    for s in samples:
        (images / f"{s.id}.png").write_bytes(s.png)
        records.append({"id": s.id, "img_filename": f"synthetic/{s.id}.png", "bbox": s.box(),
                        "img_size": list(s.size), "instruction": s.text, "instruction_cn": s.text,
                        "platform": "synthetic", "application": "synthetic", "ui_type": "text",
                        "group": "synthetic"})
    _write_json(folder / "annotations" / "synthetic.json", records)


def write_countbench(folder: Path, samples: list[SuiteSample]) -> None:
    import pyarrow as pa

    schema = pa.schema([("image", _image_type()), ("text", pa.string()), ("question", pa.string()),
                        ("number", pa.int32())])
    rows = [{"image": _image_struct(s), "text": "", "question": s.text, "number": s.target["count"]}
            for s in samples]
    _write_parquet(folder / "data" / "test-00000-of-00001.parquet", rows, schema)


def write_mathvista(folder: Path, samples: list[SuiteSample]) -> None:
    import pyarrow as pa

    metadata = pa.struct([("category", pa.string()), ("source", pa.string()), ("split", pa.string()),
                          ("task", pa.string()), ("img_width", pa.int64()), ("img_height", pa.int64())])
    schema = pa.schema([("pid", pa.string()), ("question", pa.string()), ("image", pa.string()),
                        ("decoded_image", _image_type()), ("choices", pa.list_(pa.string())), ("unit", pa.string()),
                        ("precision", pa.float64()), ("answer", pa.string()), ("question_type", pa.string()),
                        ("answer_type", pa.string()), ("metadata", metadata), ("query", pa.string())])
    rows = []
    for s in samples:
        answer = s.target["answer"]
        _integer(answer, s)
        rows.append({"pid": s.id, "question": s.text, "image": f"images/{s.id}.png", "decoded_image": _image_struct(s),
                     "choices": None, "unit": None, "precision": None, "answer": answer,
                     "question_type": "free_form", "answer_type": "integer",
                     "metadata": {"category": "math-targeted-vqa", "source": "synthetic", "split": "testmini",
                                  "task": "arithmetic", "img_width": s.size[0], "img_height": s.size[1]},
                     "query": s.text})
    _write_parquet(folder / "data" / "testmini-00000-of-00001.parquet", rows, schema)


def write_mathvision(folder: Path, samples: list[SuiteSample]) -> None:
    import pyarrow as pa

    schema = pa.schema([("id", pa.string()), ("question", pa.string()), ("options", pa.list_(pa.string())),
                        ("image", pa.string()), ("decoded_image", _image_type()), ("answer", pa.string()),
                        ("solution", pa.string()), ("level", pa.int64()), ("subject", pa.string())])
    rows = [{"id": s.id, "question": s.text, "options": [], "image": f"images/{s.id}.png",
             "decoded_image": _image_struct(s), "answer": s.target["answer"], "solution": None, "level": 1,
             "subject": "synthetic"} for s in samples]
    _write_parquet(folder / "data" / "test-00000-of-00001.parquet", rows, schema)


def write_mmmu(folder: Path, samples: list[SuiteSample]) -> None:
    import pyarrow as pa

    schema = pa.schema([("id", pa.string()), ("question", pa.string()), ("options", pa.string()),
                        ("explanation", pa.string()), *[(f"image_{k}", _image_type()) for k in range(1, 8)],
                        ("img_type", pa.string()), ("answer", pa.string()), ("topic_difficulty", pa.string()),
                        ("question_type", pa.string()), ("subfield", pa.string())])
    rows = []
    for s in samples:
        if s.png is not None:
            raise SuiteError(f"sample {s.id}: the mmmu layout of task {s.sample.task!r} holds text questions only")
        rows.append({"id": s.id, "question": s.text, "options": "[]", "explanation": "",
                     **{f"image_{k}": None for k in range(1, 8)}, "img_type": "[]", "answer": s.target["answer"],
                     "topic_difficulty": "Easy", "question_type": "open", "subfield": "arithmetic"})
    _write_parquet(folder / "data" / "validation-00000-of-00001.parquet", rows, schema)


def _integer(answer: str, s: SuiteSample) -> None:
    try:
        int(answer)
    except ValueError:
        raise SuiteError(f"sample {s.id}: target.answer {answer!r} is not an integer (the mathvista layout "
                         f"holds free_form integer answers)") from None


# task -> (public layout, its writer)
LAYOUTS: dict[str, tuple[str, Callable[[Path, list[SuiteSample]], None]]] = {
    "vqa": ("chartqa", write_chartqa),
    "ocr": ("docvqa", write_docvqa),
    "grounding": ("refcoco", write_refcoco),
    "point": ("screenspot_v2", write_screenspot_v2),
    "gui": ("screenspot_pro", write_screenspot_pro),
    "counting": ("countbench", write_countbench),
    "math": ("mathvista", write_mathvista),
    "chart": ("chartqa", write_chartqa),
    "reasoning": ("mathvision", write_mathvision),
    "text": ("mmmu", write_mmmu),
}


def benchmark_name(task: str) -> str:
    return f"{SUITE_PREFIX}{task}"


# ---------------------------------------------------------------------------------------- the suite

def read_resize(data_root: str, storage: Storage) -> ResizeSpec:
    """The resize the data set's coordinates refer to, from its manifest's generator section."""
    uri = join(str(data_root), MANIFEST_NAME)
    try:
        manifest = json.loads(storage.read_bytes(uri))
        resize = manifest["generator"]["resize"]
        return ResizeSpec(factor=int(resize["factor"]), min_pixels=int(resize["min_pixels"]),
                          max_pixels=int(resize["max_pixels"]))
    except MissingObject as exc:
        raise SuiteError(f"{uri}: missing (the data set's manifest gives the resize of its coordinates)") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise SuiteError(f"{uri}: no generator.resize {{factor, min_pixels, max_pixels}} ({exc})") from exc


def user_text(sample: Sample, where: str) -> tuple[str, bool]:
    """(text, has_image) of a single-turn prompt [image, text] or [text]; SuiteError for any other form."""
    messages = sample.prompt_messages()
    if len(messages) != 1 or messages[0]["role"] != "user":
        raise SuiteError(f"{where}: sample {sample.id}: expected one user turn, got roles "
                         f"{[m['role'] for m in messages]}")
    kinds = [part["type"] for part in messages[0]["content"]]
    if kinds not in (["image", "text"], ["text"]):
        raise SuiteError(f"{where}: sample {sample.id}: the public layouts hold a user turn [image, text] or "
                         f"[text], got {kinds}")
    return messages[0]["content"][-1]["text"], kinds[0] == "image"


def read_split(data_root: str, split: str, storage: Storage) -> dict[str, list[SuiteSample]]:
    """The split's samples per task, in file order, each with its PNG bytes as stored."""
    from PIL import Image, UnidentifiedImageError

    resize = read_resize(data_root, storage)
    reader = SampleReader(data_root, split=split, strict=True, load_images=False, storage=storage)
    by_task: dict[str, list[SuiteSample]] = {}
    for record in reader:
        sample = record.sample
        text, has_image = user_text(sample, record.source)
        png, size, scale = None, None, (1.0, 1.0)
        if has_image:
            uri = resolve(record.source.rsplit(":", 1)[0], sample.image_refs()[0])
            try:
                png = storage.read_bytes(uri)
                with Image.open(io.BytesIO(png)) as image:
                    size = image.size
            except MissingObject as exc:
                raise SuiteError(f"{record.source}: sample {sample.id}: missing image {uri}") from exc
            except (OSError, UnidentifiedImageError) as exc:
                raise SuiteError(f"{record.source}: sample {sample.id}: unreadable image {uri} ({exc})") from exc
            resized = resize.resized(*size)
            scale = (size[0] / resized[0], size[1] / resized[1])
        by_task.setdefault(sample.task, []).append(SuiteSample(sample, text, png, size, scale))
    if not by_task:
        raise SuiteError(f"{join(str(data_root), split)}: no samples (is {split!r} a split of this data set?)")
    return by_task


def write_suite(data_root: str | Path, out_dir: str | Path, split: str = "eval",
                storage: Storage | None = None) -> dict[str, Path]:
    """Write the split of the data set at `data_root` (a folder or s3:// prefix) as the suite under
    `out_dir`; returns {synthetic_<task>: folder}. A task the layouts do not cover fails, naming it.

    Each folder is written beside its final name and renamed into place, replacing an earlier suite's
    folder of the same name; `<out_dir>/suite.json` lists the benchmarks, their layouts and item counts.
    """
    storage = storage or Storage()
    by_task = read_split(str(data_root), split, storage)
    unknown = sorted(set(by_task) - set(LAYOUTS))
    if unknown:
        raise SuiteError(f"{join(str(data_root), split)}: tasks {unknown} have no benchmark layout "
                         f"(covered: {', '.join(LAYOUTS)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folders: dict[str, Path] = {}
    index: dict[str, Any] = {}
    for task in LAYOUTS:
        if task not in by_task:
            continue
        name = benchmark_name(task)
        layout, writer = LAYOUTS[task]
        folder = out / name
        partial = out / f".{name}.partial-{uuid.uuid4().hex[:12]}"
        try:
            writer(partial, by_task[task])
            if folder.exists():
                shutil.rmtree(folder)
            partial.rename(folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        folders[name] = folder
        index[name] = {"task": task, "layout": layout, "items": len(by_task[task]), "folder": name}
    (out / SUITE_INDEX).write_text(json.dumps({"data": str(data_root), "split": split, "benchmarks": index},
                                              indent=1), encoding="utf-8")
    return folders
