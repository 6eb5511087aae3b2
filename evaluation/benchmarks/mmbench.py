"""MMBench: single-image multiple-choice perception and reasoning, scored by CircularEval."""
from __future__ import annotations

import base64
import binascii
import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.benchmarks.base import Benchmark, BenchmarkDataError, Item, ItemScore
from evaluation.benchmarks.files import embedded_image, find_files, read_parquet
from evaluation.benchmarks.prompts import choice_prompt, letters
from rewards.extract import final_answer

OPTION_COLUMNS = ("A", "B", "C", "D")
REUSED_IMAGE_MAX_CHARS = 64  # VLMEvalKit: an image cell this short holds the index of the row whose image it reuses
_SEPARATORS = ".()[],:;!*#{}"
_SPLIT_TABLE = str.maketrans({c: " " for c in _SEPARATORS})


class MMBench(Benchmark):
    """MMBench (DEV/TEST, EN/CN, V1.0/V1.1) with CircularEval.

    Folder layout, one of:
    - VLMEvalKit: one or more TSV files anywhere under the folder, e.g. <root>/MMBench_DEV_EN_V11.tsv, with
      columns index (int), question, hint, A, B, C, D (empty or "nan" when absent), answer (letter),
      category, image (base64 of the encoded image; a cell of <= 64 characters is the index of another row
      of the same file whose image is reused).
    - lmms-lab/MMBench: parquet files under the folder (e.g. <root>/en/dev-00000-of-00001.parquet) with
      columns index, question, hint (may be absent), A-D, answer, category, image (struct {bytes, path}).
    The prediction id is `index`. Rows with index >= circular_offset (1e6) are rotated copies of the row
    index % circular_offset (same question, options shifted); each copy is an item of its own (it needs its
    own prediction) and `Item.group` is index % circular_offset.

    Rule (VLMEvalKit): the content of the last \\boxed{} (else the response); the option letter when exactly
    one option letter stands alone in it, else the option whose text alone appears in it; anything else
    goes to a judge model officially and scores 0 here. CircularEval: a question is right only if every
    copy of it is right; the score and n are over questions (rows with index < 1e6), `by` per category.
    """

    name = "mmbench"
    metric = "circular_accuracy"

    def load(self, root: Path) -> list[Item]:
        root = Path(root)
        tsvs = sorted(p for p in root.rglob("*.tsv") if p.is_file()) if root.is_dir() else []
        files = tsvs or find_files(root, "*.parquet", self.name)
        items: list[Item] = []
        for path in files:
            rows = _read_tsv(path) if path.suffix == ".tsv" else _parquet_rows(path)
            items.extend(self._item(row, where) for row, where in rows)
        self._check_questions(items, root)
        return items

    def _item(self, row: dict[str, Any], where: str) -> Item:
        index = row["index"]
        options = [row[c] for c in OPTION_COLUMNS if _present(row.get(c))]
        options = [str(o) for o in options]
        if len(options) < 2:
            raise BenchmarkDataError(f"{where}: fewer than two options in columns A-D")
        answer = str(row.get("answer") or "").strip()
        if answer not in letters(len(options)):
            raise BenchmarkDataError(f"{where}: field 'answer' {answer!r} is not one of the {len(options)} option "
                                     "letters (the TEST split withholds answers)")
        question = row.get("question")
        if not isinstance(question, str):
            raise BenchmarkDataError(f"{where}: field 'question' is missing")
        hint = row.get("hint")
        text = choice_prompt(question, options, hint=str(hint) if _present(hint) else None)
        category = row.get("category")
        offset = self.scoring.mmbench.circular_offset
        return Item(id=str(index), prompt=[{"type": "image", "image": row["image"]}, {"type": "text", "text": text}],
                    gold=answer, subset=str(category) if _present(category) else None, group=str(index % offset),
                    meta={"options": options, "index": index})

    def _check_questions(self, items: list[Item], root: Path) -> None:
        seen: set[str] = set()
        questions = {item.group for item in items if item.meta["index"] < self.scoring.mmbench.circular_offset}
        for item in items:
            if item.id in seen:
                raise BenchmarkDataError(f"{root}: index {item.id} appears twice")
            seen.add(item.id)
            if item.group not in questions:
                raise BenchmarkDataError(f"{root}: row index {item.id} is a circular copy of index {item.group}, "
                                         "which is not in the benchmark")

    def score(self, item: Item, response: str) -> ItemScore:
        letter = option_letter(final_answer(response), item.meta["options"])
        return ItemScore(1.0 if letter == item.gold else 0.0, letter)

    def aggregate(self, items: Sequence[Item], scores: Sequence[float]) -> tuple[float, int, dict[str, float], list[float]]:
        """Per question (group): 1 only when every copy scored 1; mean over questions, `by` per category."""
        right: dict[str, bool] = {}
        category: dict[str, str | None] = {}
        for item, s in zip(items, scores):
            assert item.group is not None
            right[item.group] = right.get(item.group, True) and s >= 1.0
            if item.meta["index"] < self.scoring.mmbench.circular_offset:
                category[item.group] = item.subset
        units = [1.0 if right[g] else 0.0 for g in right]
        by_lists: dict[str, list[float]] = {}
        for group, unit in zip(right, units):
            if category.get(group) is not None:
                by_lists.setdefault(category[group], []).append(unit)  # type: ignore[index]
        by = {k: sum(v) / len(v) for k, v in sorted(by_lists.items())}
        return (sum(units) / len(units) if units else 0.0), len(units), by, units


def option_letter(answer: str, options: list[str]) -> str | None:
    """VLMEvalKit's can_infer_option, then can_infer_text; None where it would ask a judge."""
    choices = letters(len(options))
    splits = answer.translate(_SPLIT_TABLE).split()
    found = [c for c in choices if c in splits]
    if len(found) == 1:
        return found[0]
    lowered = answer.lower()
    texts = [c for c, text in zip(choices, options) if text.lower() in lowered]
    return texts[0] if len(texts) == 1 else None


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float):
        return not math.isnan(value)
    return not (isinstance(value, str) and value.strip().lower() in ("", "nan"))


def _int_index(value: Any, where: str) -> int:
    try:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not float(number).is_integer():
            raise ValueError
        return int(number)
    except (ValueError, OverflowError):
        raise BenchmarkDataError(f"{where}: field 'index' must be an integer, got {value!r:.80}") from None


def _read_tsv(path: Path) -> list[tuple[dict[str, Any], str]]:
    """VLMEvalKit's TSV rows with the image decoded to bytes (reused images resolved by index)."""
    csv.field_size_limit(sys.maxsize)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            header = reader.fieldnames or []
            raw = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BenchmarkDataError(f"{path}: not a readable TSV file: {exc}") from exc
    for column in ("index", "question", "answer", "image", "A", "B"):
        if column not in header:
            raise BenchmarkDataError(f"{path}: no column {column!r} (columns: {', '.join(header)})")
    rows: list[tuple[dict[str, Any], str]] = []
    images: dict[int, str] = {}
    for number, row in enumerate(raw):
        where = f"{path} row {number} (line {number + 2})"
        row_dict: dict[str, Any] = dict(row)
        row_dict["index"] = _int_index(row.get("index"), where)
        images[row_dict["index"]] = row.get("image") or ""
        rows.append((row_dict, where))
    for row_dict, where in rows:
        cell = images[row_dict["index"]].strip()
        if len(cell) <= REUSED_IMAGE_MAX_CHARS:
            source = _int_index(cell, f"{where}: field 'image' (a reused-image index)")
            if source not in images or len(images[source].strip()) <= REUSED_IMAGE_MAX_CHARS:
                raise BenchmarkDataError(f"{where}: field 'image' reuses the image of index {source}, "
                                         "which has no image of its own in this file")
            cell = images[source].strip()
        try:
            row_dict["image"] = base64.b64decode(cell, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BenchmarkDataError(f"{where}: field 'image' is not base64: {exc}") from exc
    return rows


def _parquet_rows(path: Path) -> list[tuple[dict[str, Any], str]]:
    rows = []
    for number, row in enumerate(read_parquet(path, ["index", "question", "answer", "image", "A", "B"])):
        where = f"{path} row {number}"
        row["index"] = _int_index(row.get("index"), where)
        row["image"] = embedded_image(row, "image", where)
        rows.append((row, where))
    return rows


ADAPTER = MMBench
