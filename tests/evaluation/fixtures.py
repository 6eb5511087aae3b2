"""Tiny benchmark folders in the public layouts, written by the tests (parquet with embedded PNG structs,
VLMEvalKit TSV with base64 images, ChartQA's JSON + png folder), and record generators for them.

Each writer takes the records in the benchmark's own fields and returns the folder; the `*_records`
generators make n seeded records for the model doubles of the tests.
"""
from __future__ import annotations

import base64
import csv
import json
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
LETTERS = "ABCDE"


def png_bytes(shade: int = 0, width: int = 2, height: int = 2) -> bytes:
    """A valid grey PNG of width x height (no imaging library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes([shade % 256]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def image_struct(shade: int = 0) -> dict[str, Any]:
    return {"bytes": png_bytes(shade), "path": f"image_{shade}.png"}


def write_parquet(path: Path, records: list[dict[str, Any]], schema: pa.Schema) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records, schema=schema), path)
    return path


# -------------------------------------------------------------------------------------------------- MMMU
MMMU_SCHEMA = pa.schema([("id", pa.string()), ("question", pa.string()), ("options", pa.string()),
                         ("explanation", pa.string()),
                         *[(f"image_{k}", IMAGE) for k in range(1, 8)],
                         ("img_type", pa.string()), ("answer", pa.string()), ("topic_difficulty", pa.string()),
                         ("question_type", pa.string()), ("subfield", pa.string())])


def mmmu_record(item_id: str, question: str, options: list[str], answer: str, images: int = 1) -> dict[str, Any]:
    record = {"id": item_id, "question": question, "options": repr(options), "explanation": "",
              "img_type": "['Diagrams']", "answer": answer, "topic_difficulty": "Medium",
              "question_type": "multiple-choice" if options else "open", "subfield": "x"}
    for k in range(1, 8):
        record[f"image_{k}"] = image_struct(k) if k <= images else None
    return record


def mmmu_records(n: int, seed: int) -> list[dict[str, Any]]:
    """n multiple-choice questions with 4 options each, spread over two subjects."""
    rng = random.Random(seed)
    return [mmmu_record(f"validation_{'Art' if i % 2 else 'Math'}_{i}", f"<image 1> Which one? ({i})",
                        [f"option {i}-{k}" for k in range(4)], rng.choice("ABCD")) for i in range(n)]


def write_mmmu(root: Path, records: list[dict[str, Any]], per_file: int = 10) -> Path:
    """Per-subject-config layout: <root>/<chunk>/validation-00000-of-00001.parquet."""
    for start in range(0, len(records), per_file):
        write_parquet(root / f"part{start // per_file:02d}" / "validation-00000-of-00001.parquet",
                      records[start:start + per_file], MMMU_SCHEMA)
    return root


# ------------------------------------------------------------------------------------------------ MMBench
MMBENCH_COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "split",
                   "image"]


def mmbench_rows(questions: int, seed: int, options: int = 4, copies: bool = True) -> list[dict[str, Any]]:
    """VLMEvalKit MMBench rows: each question plus its circular copies (index + k * 1e6, options rotated
    by k, answer letter moved with its option); copies reuse the question's image by index."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for q in range(questions):
        texts = [f"thing {q}-{k}" for k in range(options)]
        answer = rng.randrange(options)
        for shift in range(options if copies else 1):
            rotated = texts[shift:] + texts[:shift]
            row = {"index": q + shift * 1_000_000, "question": f"What is shown? ({q})", "hint": "nan" if q % 2 else "a hint",
                   "answer": LETTERS[rotated.index(texts[answer])], "category": "cat_even" if q % 2 == 0 else "cat_odd",
                   "l2-category": "l2", "split": "dev",
                   "image": base64.b64encode(png_bytes(q)).decode() if shift == 0 else str(q)}
            for k, letter in enumerate("ABCD"):
                row[letter] = rotated[k] if k < options else "nan"
            rows.append(row)
    return rows


def write_mmbench_tsv(root: Path, rows: list[dict[str, Any]], name: str = "MMBench_DEV_EN_V11.tsv") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with (root / name).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MMBENCH_COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return root


MMBENCH_PARQUET_SCHEMA = pa.schema([("index", pa.int64()), ("question", pa.string()), ("hint", pa.string()),
                                    ("answer", pa.string()), *[(c, pa.string()) for c in "ABCD"],
                                    ("category", pa.string()), ("image", IMAGE), ("source", pa.string()),
                                    ("L2-category", pa.string()), ("comment", pa.string()), ("split", pa.string())])


def write_mmbench_parquet(root: Path, rows: list[dict[str, Any]]) -> Path:
    """lmms-lab/MMBench layout (<root>/en/dev-00000-of-00001.parquet) from VLMEvalKit-style rows."""
    records = []
    for row in rows:
        q = row["index"] % 1_000_000
        records.append({"index": row["index"], "question": row["question"], "hint": None if row["hint"] == "nan" else row["hint"],
                        "answer": row["answer"], **{c: None if row[c] == "nan" else row[c] for c in "ABCD"},
                        "category": row["category"], "image": image_struct(q), "source": "s",
                        "L2-category": row["l2-category"], "comment": None, "split": "dev"})
    return write_parquet(root / "en" / "dev-00000-of-00001.parquet", records, MMBENCH_PARQUET_SCHEMA).parent.parent


# ---------------------------------------------------------------------------------------------- MathVista
MATHVISTA_SCHEMA = pa.schema([("pid", pa.string()), ("question", pa.string()), ("image", pa.string()),
                              ("decoded_image", IMAGE), ("choices", pa.list_(pa.string())), ("unit", pa.string()),
                              ("precision", pa.float64()), ("answer", pa.string()), ("question_type", pa.string()),
                              ("answer_type", pa.string()),
                              ("metadata", pa.struct([("task", pa.string()), ("category", pa.string())])),
                              ("query", pa.string())])


def mathvista_record(pid: str, answer: str, choices: list[str] | None = None, answer_type: str = "text",
                     precision: float | None = None, task: str = "figure question answering") -> dict[str, Any]:
    return {"pid": pid, "question": f"Question {pid}?", "image": f"images/{pid}.jpg", "decoded_image": image_struct(1),
            "choices": choices, "unit": None, "precision": precision, "answer": answer,
            "question_type": "multi_choice" if choices else "free_form", "answer_type": answer_type,
            "metadata": {"task": task, "category": "math-targeted-vqa"}, "query": f"Question {pid}?"}


def mathvista_records(n: int, seed: int) -> list[dict[str, Any]]:
    """n multiple-choice problems, 4 choices each; the answer is the choice text."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        choices = [f"{10 * i + k}" if i % 2 else f"shape {i}-{k}" for k in range(4)]
        records.append(mathvista_record(str(i + 1), rng.choice(choices), choices, "integer" if i % 2 else "text"))
    return records


def write_mathvista(root: Path, records: list[dict[str, Any]]) -> Path:
    write_parquet(root / "data" / "testmini-00000-of-00001.parquet", records, MATHVISTA_SCHEMA)
    return root


# --------------------------------------------------------------------------------------------- MathVision
MATHVISION_SCHEMA = pa.schema([("id", pa.string()), ("question", pa.string()), ("options", pa.list_(pa.string())),
                               ("image", pa.string()), ("decoded_image", IMAGE), ("answer", pa.string()),
                               ("solution", pa.string()), ("level", pa.int64()), ("subject", pa.string())])


def mathvision_record(item_id: str, answer: str, options: list[str] | None = None,
                      subject: str = "metric geometry - length") -> dict[str, Any]:
    return {"id": item_id, "question": f"Problem {item_id}", "options": options or [], "image": f"images/{item_id}.jpg",
            "decoded_image": image_struct(2), "answer": answer, "solution": None, "level": 2, "subject": subject}


def mathvision_records(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [mathvision_record(str(i + 1), rng.choice("ABCDE"), [f"{i}.{k}" for k in range(5)]) for i in range(n)]


def write_mathvision(root: Path, records: list[dict[str, Any]]) -> Path:
    write_parquet(root / "data" / "testmini-00000-of-00001.parquet", records, MATHVISION_SCHEMA)
    return root


# --------------------------------------------------------------------------------------------- CountBench
COUNTBENCH_SCHEMA = pa.schema([("image_url", pa.string()), ("text", pa.string()), ("number", pa.int32()),
                               ("question", pa.string()), ("image", IMAGE)])


def countbench_records(n: int, seed: int, low: int = 2, high: int = 10) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"image_url": f"http://x/{i}.jpg", "text": "some dogs", "number": rng.randint(low, high),
             "question": "How many dogs are there?", "image": image_struct(i)} for i in range(n)]


def write_countbench(root: Path, records: list[dict[str, Any]]) -> Path:
    write_parquet(root / "data" / "test-00000-of-00001.parquet", records, COUNTBENCH_SCHEMA)
    return root


# ------------------------------------------------------------------------------------------------ ChartQA
def write_chartqa(root: Path, human: list[dict[str, Any]], augmented: list[dict[str, Any]]) -> Path:
    """The original release: test/test_human.json, test/test_augmented.json, test/png/<imgname>."""
    (root / "test" / "png").mkdir(parents=True, exist_ok=True)
    for name, records in (("test_human", human), ("test_augmented", augmented)):
        (root / "test" / f"{name}.json").write_text(json.dumps(records), encoding="utf-8")
        for record in records:
            (root / "test" / "png" / record["imgname"]).write_bytes(png_bytes(3))
    return root


def chart_record(imgname: str, label: Any, query: str = "What is the value?") -> dict[str, Any]:
    return {"imgname": imgname, "query": query, "label": label}


# ------------------------------------------------------------------------------------------------- DocVQA
DOCVQA_SCHEMA = pa.schema([("questionId", pa.string()), ("question", pa.string()),
                           ("question_types", pa.list_(pa.string())), ("image", IMAGE), ("docId", pa.int64()),
                           ("ucsf_document_id", pa.string()), ("ucsf_document_page_no", pa.string()),
                           ("answers", pa.list_(pa.string())), ("data_split", pa.string())])


def docvqa_record(question_id: str, answers: list[str] | None) -> dict[str, Any]:
    return {"questionId": question_id, "question": f"What is field {question_id}?", "question_types": ["form"],
            "image": image_struct(4), "docId": 7, "ucsf_document_id": "abc", "ucsf_document_page_no": "1",
            "answers": answers, "data_split": "validation"}


def write_docvqa(root: Path, records: list[dict[str, Any]]) -> Path:
    write_parquet(root / "DocVQA" / "validation-00000-of-00001.parquet", records, DOCVQA_SCHEMA)
    return root


# ------------------------------------------------------------------------------------- hostile responses
# Responses no scorer may raise on; each must score 0 against any gold these fixtures write.
HOSTILE_RESPONSES = [
    "",
    " \n\t ",
    "lorem ipsum " * (1_000_000 // 12),          # about 1 MB without an answer
    "\\boxed{" * 2000,                            # unbalanced boxes
    "\\boxed{" + "{" * 5000 + "}" * 5000 + "}",   # a brace bomb with nothing inside
    "1" * 100_000 + ",",                          # a long digit run (quadratic for naive number scans)
    "\x00\ufffd\u202e garbage \udcff",            # control, replacement, bidi and lone surrogate characters
    '{"bbox_2d": [1e999, nan, "x"]}',
]


def scoring():
    from evaluation.scoring_config import load_scoring_config

    return load_scoring_config("official")


def score_responses(name: str, root: Path, responses: dict[str, str]):
    """(report, rows) of `responses` ({id: response}) on benchmark `name` in `root`, official rules."""
    from evaluation.benchmarks import benchmark
    from evaluation.score import score_predictions

    return score_predictions(benchmark(name, scoring()), root, [{"id": k, "response": v} for k, v in responses.items()])


def within_chance(score: float, chance: float, n: int) -> bool:
    """A seeded random answerer's score lies within 4 binomial standard deviations of chance."""
    return abs(score - chance) <= 4.0 * (chance * (1.0 - chance) / n) ** 0.5
