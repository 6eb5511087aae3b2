"""MathVista: mathematical reasoning in visual contexts, multiple choice and free-form answers."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from evaluation.benchmarks.base import Benchmark, BenchmarkDataError, Item, ItemScore
from evaluation.benchmarks.files import embedded_image, field, find_files, read_parquet, text_id, unique_ids
from evaluation.benchmarks.prompts import choice_prompt, letters, open_prompt
from rewards.extract import final_answer
from rewards.functions import choice_letter

MULTI_CHOICE = "multi_choice"
ANSWER_TYPES = ("text", "integer", "float", "list")
_PAREN_LETTER = re.compile(r"\(([a-zA-Z])\)")


class MathVista(Benchmark):
    """MathVista (AI4Math/MathVista testmini or test with answers).

    Folder layout: parquet files anywhere under the folder, read in sorted path order, e.g.
        <root>/data/testmini-00000-of-00001-725687bf7a18d64b.parquet
    Columns read: pid (the prediction id), question, decoded_image (image struct {bytes, path}), choices
    (list of strings; empty or null for free-form), answer (for multi_choice the CHOICE TEXT, not a letter),
    question_type ("multi_choice" | "free_form"), answer_type (text | integer | float | list), precision
    (decimals of a float answer), metadata.task (the `by` key, when present).

    Rule (MathVista's extract + normalize, fork with \\boxed{}): the extraction is the content of the last
    \\boxed{}, else the response. Multi-choice: an extraction equal to a choice text is that choice; an option
    letter ("(B)", "B", "B.", "the answer is B") maps to its choice text; anything else scores 0 (officially
    it goes to the judge model, or is snapped to the nearest choice by Levenshtein distance, which for free
    text is a guess). Integer answers compare as str(int(float(x))),
    floats as str(round(float(x), precision)), text and lists as the stripped string; the normalised
    prediction must equal the answer string.
    """

    name = "mathvista"
    metric = "accuracy"

    def load(self, root: Path) -> list[Item]:
        items: list[Item] = []
        for path in find_files(root, "*.parquet", self.name):
            rows = read_parquet(path, ["pid", "question", "decoded_image", "answer", "question_type", "answer_type"])
            items.extend(self._item(row, f"{path} row {index}") for index, row in enumerate(rows))
        unique_ids([item.id for item in items], root)
        return items

    def _item(self, row: dict[str, Any], where: str) -> Item:
        item_id = text_id(row.get("pid"), where, "pid")
        question = field(row, "question", where, str)
        answer = field(row, "answer", where, str)
        question_type = field(row, "question_type", where, str)
        answer_type = field(row, "answer_type", where, str)
        if answer_type not in ANSWER_TYPES:
            raise BenchmarkDataError(f"{where}: field 'answer_type' must be one of {ANSWER_TYPES}, got {answer_type!r}")
        choices = [str(c) for c in (row.get("choices") or [])]
        multi_choice = question_type == MULTI_CHOICE
        if multi_choice:
            if answer not in choices:
                raise BenchmarkDataError(f"{where}: field 'answer' {answer!r} is not one of the choices (MathVista "
                                         "stores the choice text, not a letter)")
            text = choice_prompt(question, choices)
        else:
            text = open_prompt(question)
        precision = row.get("precision")
        if answer_type == "float" and not multi_choice:
            if not isinstance(precision, (int, float)) or isinstance(precision, bool) or precision != precision:
                raise BenchmarkDataError(f"{where}: field 'precision' must be a number for a float answer")
            precision = int(precision)
        metadata = row.get("metadata")
        task = metadata.get("task") if isinstance(metadata, dict) else None
        image = embedded_image(row, "decoded_image", where)
        return Item(id=item_id, prompt=[{"type": "image", "image": image}, {"type": "text", "text": text}],
                    gold=answer, subset=str(task) if task else None,
                    meta={"choices": choices, "multi_choice": multi_choice, "answer_type": answer_type,
                          "precision": precision})

    def score(self, item: Item, response: str) -> ItemScore:
        extraction = final_answer(response)
        if item.meta["multi_choice"]:
            prediction = _choice(extraction, item.meta["choices"])
        else:
            prediction = _normalise_free_form(extraction, item.meta["answer_type"], item.meta["precision"])
        return ItemScore(1.0 if prediction is not None and prediction == item.gold else 0.0, prediction)


def _choice(extraction: str, choices: list[str]) -> str | None:
    if not extraction:
        return None
    if extraction in choices:
        return extraction
    lowered = extraction.lower()
    for choice in choices:
        if choice.strip().lower() == lowered:
            return choice
    bracketed = _PAREN_LETTER.findall(extraction)
    letter = bracketed[0].upper() if bracketed else choice_letter(extraction)
    options = letters(len(choices))
    return choices[options.index(letter)] if letter in options else None


def _normalise_free_form(extraction: str, answer_type: str, precision: int | None) -> str | None:
    if not extraction:
        return None
    if answer_type in ("integer", "float"):
        try:
            value = float(extraction.replace(",", ""))
            return str(int(value)) if answer_type == "integer" else str(round(value, precision))  # type: ignore[arg-type]
        except (ValueError, OverflowError):
            return None
    return extraction


ADAPTER = MathVista
