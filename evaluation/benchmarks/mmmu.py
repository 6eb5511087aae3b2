"""MMMU: college-level multi-discipline questions over 1-7 images, multiple choice and open answers."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from evaluation.benchmarks.base import Benchmark, BenchmarkDataError, Item, ItemScore
from evaluation.benchmarks.files import embedded_image, field, find_files, read_parquet, text_id, unique_ids
from evaluation.benchmarks.prompts import choice_prompt, letters, open_prompt
from rewards.extract import NUMBER_PATTERN, final_answer

_IMAGE_REF = re.compile(r"<image (\d+)>")
_SUBJECT = re.compile(r"^[A-Za-z]+_(.+)_\d+$")  # {split}_{Subject}_{n}
_IMAGE_COLUMNS = 7
# Numbers in an open answer. The lookbehind keeps a start from sitting inside a digit run, which keeps
# the scan linear on a long run of digits (the official three-pattern scan is quadratic there).
_NUMBER = re.compile(rf"(?<![\d.])(?:{NUMBER_PATTERN})")
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_SENTENCE_SPLIT = re.compile(r"\.\s(?=[A-Z])|\n")
_PUNCTUATION = (",", ".", "!", "?", ";", ":", "'")
MULTIPLE_CHOICE = "multiple-choice"


class MMMU(Benchmark):
    """MMMU (MMMU/MMMU per-subject configs, or lmms-lab/MMMU merged), validation or dev split.

    Folder layout: any number of parquet files anywhere under the folder, read in sorted path order, e.g.
        <root>/Art/validation-00000-of-00001.parquet ... <root>/Sociology/validation-00000-of-00001.parquet
    or  <root>/data/validation-00000-of-00001.parquet
    Columns read: id (`{split}_{Subject}_{n}`, the prediction id), question (with `<image k>` placeholders),
    options (a stringified Python list; "[]" for open questions), answer (option letter for MC, free text
    for open; must be present: the test split withholds it), question_type ("multiple-choice" or open),
    image_1 ... image_7 (image structs {bytes, path}; only those referenced by `<image k>` in the question or
    options are loaded, in order of first reference).
    `by`: the subject (from the id).

    Rule (MMMU's eval_utils, fork `mmmu_val_boxed`): the content of the last \\boxed{} (else the response).
    MC: "(A)", then "A ", then "A." in the answer; for answers of more than `long_response_words` words the
    option texts too; several candidates -> the last mentioned; none -> the official code guesses a random
    letter, which scores 0 here. Open: key sub-responses ("the answer is ...") and their numbers,
    normalised (numbers rounded to `float_decimals`, text lowercased); right when a gold text is a
    substring of a prediction or a number equals a gold number.
    """

    name = "mmmu"
    metric = "accuracy"

    def load(self, root: Path) -> list[Item]:
        items: list[Item] = []
        for path in find_files(root, "*.parquet", self.name):
            rows = read_parquet(path, ["id", "question", "options", "answer", "question_type"])
            for index, row in enumerate(rows):
                items.append(self._item(row, f"{path} row {index}"))
        unique_ids([item.id for item in items], root)
        return items

    def _item(self, row: dict[str, Any], where: str) -> Item:
        item_id = text_id(row.get("id"), where, "id")
        question = field(row, "question", where, str)
        options_text = field(row, "options", where, str)
        try:
            options = ast.literal_eval(options_text)
        except (ValueError, SyntaxError) as exc:
            raise BenchmarkDataError(f"{where}: field 'options' is not a Python list literal: {exc}") from exc
        if not isinstance(options, list):
            raise BenchmarkDataError(f"{where}: field 'options' must be a list, got {type(options).__name__}")
        options = [str(o) for o in options]
        answer = field(row, "answer", where, str).strip()
        if not answer:
            raise BenchmarkDataError(f"{where}: field 'answer' is empty (the test split withholds answers)")
        multiple_choice = field(row, "question_type", where, str) == MULTIPLE_CHOICE
        if multiple_choice:
            if answer not in letters(len(options)):
                raise BenchmarkDataError(f"{where}: field 'answer' {answer!r} is not one of the "
                                         f"{len(options)} option letters")
            text = choice_prompt(question, options)
            gold: Any = answer
        else:
            text = open_prompt(question)
            gold = _open_gold(answer)
        prompt: list[dict[str, Any]] = []
        for number in _referenced_images(question, options):
            key = f"image_{number}"
            if number > _IMAGE_COLUMNS or key not in row:
                raise BenchmarkDataError(f"{where}: the text references <image {number}> but there is no column {key!r}")
            prompt.append({"type": "image", "image": embedded_image(row, key, where)})
        prompt.append({"type": "text", "text": text})
        subject = _SUBJECT.match(item_id)
        return Item(id=item_id, prompt=prompt, gold=gold, subset=subject.group(1) if subject else None,
                    meta={"options": options, "multiple_choice": multiple_choice})

    def score(self, item: Item, response: str) -> ItemScore:
        answer = final_answer(response)
        if item.meta["multiple_choice"]:
            letter = multi_choice_letter(answer, item.meta["options"], self.scoring.mmmu.long_response_words)
            return ItemScore(1.0 if letter == item.gold else 0.0, letter)
        predictions = open_predictions(answer, self.scoring.mmmu.float_decimals)
        right = open_correct(item.gold, predictions, self.scoring.mmmu.float_decimals)
        return ItemScore(1.0 if right else 0.0, [p if isinstance(p, str) else float(p) for p in predictions])


def _referenced_images(question: str, options: list[str]) -> list[int]:
    seen: list[int] = []
    for text in [question, *options]:
        for match in _IMAGE_REF.finditer(text):
            number = int(match.group(1))
            if number not in seen:
                seen.append(number)
    return seen


def _open_gold(answer: str) -> list[str]:
    """An open answer, or its alternatives when it is a stringified list ("['24', '24.0']")."""
    if answer.startswith("["):
        try:
            value = ast.literal_eval(answer)
        except (ValueError, SyntaxError):
            return [answer]
        if isinstance(value, list) and value:
            return [str(v) for v in value]
    return [answer]


def multi_choice_letter(response: str, options: list[str], long_response_words: int) -> str | None:
    """MMMU's parse_multi_choice_response without the random guess: None when no letter is found."""
    choices = letters(len(options))
    for char in _PUNCTUATION:
        response = response.strip(char)
    response = f" {response} "
    candidates: list[str] = []
    bracketed = False
    by_letter = True
    for choice in choices:
        if f"({choice})" in response:
            candidates.append(choice)
            bracketed = True
    if not candidates:
        candidates = [c for c in choices if f"{c} " in response]
    if not candidates:
        candidates = [c for c in choices if f"{c}." in response]
    if not candidates and len(response.split()) > long_response_words:
        lowered = response.lower()
        candidates = [c for c, text in zip(choices, options) if text and text.lower() in lowered]
        by_letter = False
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    if by_letter:
        marks = [response.rfind(f"({c})" if bracketed else f" {c} ") for c in candidates]
    else:
        lowered = response.lower()
        marks = [lowered.rfind(options[choices.index(c)].lower()) for c in candidates]
    return candidates[max(range(len(candidates)), key=lambda i: (marks[i], -i))]


def _normalise(text: str, decimals: int) -> list[str | float]:
    """MMMU's normalize_str: a number -> [rounded float]; text -> [lowercased] (one letter padded)."""
    text = text.strip()
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        value = None
    if value is not None:
        return [round(value, decimals)]
    text = text.lower()
    return [f" {text}", f"{text} "] if len(text) == 1 else [text]


def _key_subresponses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    parts = _SENTENCE_SPLIT.split(response)
    keys: list[str] = []
    for index, part in enumerate(parts):
        indicators = _KEY_INDICATORS + (("=",) if index == len(parts) - 1 else ())
        shortest: str | None = None
        for indicator in indicators:
            if indicator in part:
                tail = part.rsplit(indicator, 1)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _PUNCTUATION:
            keys.append(shortest)
    return keys or [response]


def open_predictions(response: str, decimals: int) -> list[str | float]:
    """MMMU's parse_open_response: normalised key phrases and the numbers in them."""
    keys = _key_subresponses(response)
    candidates = list(keys)
    for key in keys:
        candidates.extend(m.group() for m in _NUMBER.finditer(key))
    out: list[str | float] = []
    for candidate in candidates:
        for value in _normalise(candidate, decimals):
            if value not in out:
                out.append(value)
    return out


def open_correct(golds: list[str], predictions: list[str | float], decimals: int) -> bool:
    """MMMU's eval_open: a gold text inside a predicted text, or a predicted number equal to a gold one."""
    normalised = [value for gold in golds for value in _normalise(gold, decimals)]
    for prediction in predictions:
        if isinstance(prediction, str):
            if any(isinstance(g, str) and g in prediction for g in normalised):
                return True
        elif any(isinstance(g, float) and g == prediction for g in normalised):
            return True
    return False


ADAPTER = MMMU
