"""DocVQA: questions about document images, scored by ANLS."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rapidfuzz.distance import Levenshtein

from evaluation.benchmarks.base import Benchmark, BenchmarkDataError, Item, ItemScore
from evaluation.benchmarks.files import embedded_image, field, find_files, read_parquet, text_id, unique_ids
from evaluation.benchmarks.prompts import SHORT_ANSWER, open_prompt
from rewards.extract import final_answer


class DocVQA(Benchmark):
    """DocVQA (lmms-lab/DocVQA config DocVQA, validation split; the test split withholds answers).

    Folder layout: parquet files anywhere under the folder, read in sorted path order, e.g.
        <root>/DocVQA/validation-00000-of-00006.parquet ... validation-00005-of-00006.parquet
    Columns read: questionId (the prediction id), question, image (image struct {bytes, path}),
    answers (list of strings, at least one).

    Rule (ANLS, the DocVQA challenge / lmms-lab): the content of the last \\boxed{} (else the response) and
    each answer are lowercased with whitespace collapsed; NL = Levenshtein(answer, pred) / max(len(answer),
    len(pred)); the item scores 1 - min NL over the answers, or 0 when that is below anls_threshold.
    The score is the mean (a continuous score: normal-approximation interval).
    """

    name = "docvqa"
    metric = "anls"
    binary = False

    def load(self, root: Path) -> list[Item]:
        items: list[Item] = []
        for path in find_files(root, "*.parquet", self.name):
            rows = read_parquet(path, ["questionId", "question", "image", "answers"])
            items.extend(self._item(row, f"{path} row {index}") for index, row in enumerate(rows))
        unique_ids([item.id for item in items], root)
        return items

    def _item(self, row: dict[str, Any], where: str) -> Item:
        item_id = text_id(row.get("questionId"), where, "questionId")
        question = field(row, "question", where, str)
        answers = field(row, "answers", where, list)
        if not answers or not all(isinstance(a, str) for a in answers):
            raise BenchmarkDataError(f"{where}: field 'answers' must be a non-empty list of strings "
                                     "(the test split withholds answers)")
        image = embedded_image(row, "image", where)
        return Item(id=item_id, gold=list(answers),
                    prompt=[{"type": "image", "image": image},
                            {"type": "text", "text": open_prompt(f"{question}\n{SHORT_ANSWER}")}])

    def score(self, item: Item, response: str) -> ItemScore:
        prediction = final_answer(response)
        similarity = anls(prediction, item.gold)
        return ItemScore(similarity if similarity >= self.scoring.docvqa.anls_threshold else 0.0, prediction or None)


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str, answers: list[str]) -> float:
    """1 - the smallest normalised Levenshtein distance between the prediction and any answer."""
    pred = _normalise(prediction)
    best = 0.0
    for answer in answers:
        gold = _normalise(answer)
        length = max(len(gold), len(pred))
        best = max(best, 1.0 if length == 0 else 1.0 - Levenshtein.distance(gold, pred) / length)
    return best
ADAPTER = DocVQA
