"""MathVision (MATH-Vision): competition mathematics over images, multiple choice and free-form answers."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from evaluation.benchmarks.base import Benchmark, BenchmarkDataError, Item, ItemScore
from evaluation.benchmarks.files import embedded_image, field, find_files, read_parquet, text_id, unique_ids
from evaluation.benchmarks.prompts import choice_prompt, letters, open_prompt
from rewards.extract import final_answer
from rewards.functions import choice_letter
from rewards.math_worker import check_math


class MathVision(Benchmark):
    """MathVision (MathLLMs/MathVision, test or testmini).

    Folder layout: parquet files anywhere under the folder, read in sorted path order, e.g.
        <root>/data/testmini-00000-of-00001.parquet
    Columns read: id (the prediction id), question, options (list of strings; empty for free-form),
    answer (a letter A-E for multiple choice, else the value), decoded_image (image struct {bytes, path}),
    subject (the `by` key, when present).

    Rule (the fork's mathvision prompt, boxed): the content of the last \\boxed{} (else the response).
    Multiple choice: right when the option letter it gives ("B", "(B)", "B.", "the answer is B") or the
    option text it equals is the gold letter's. Free-form: right when it equals the answer (case and
    spaces aside), else when Math-Verify finds them equivalent (the fork's math_verify metric; its alarms
    need the main thread, so this adapter scores only there).
    """

    name = "mathvision"
    metric = "accuracy"

    def load(self, root: Path) -> list[Item]:
        items: list[Item] = []
        for path in find_files(root, "*.parquet", self.name):
            rows = read_parquet(path, ["id", "question", "answer", "decoded_image"])
            items.extend(self._item(row, f"{path} row {index}") for index, row in enumerate(rows))
        unique_ids([item.id for item in items], root)
        return items

    def _item(self, row: dict[str, Any], where: str) -> Item:
        item_id = text_id(row.get("id"), where, "id")
        question = field(row, "question", where, str)
        answer = str(field(row, "answer", where, (str, int, float))).strip()
        options = [str(o) for o in (row.get("options") or [])]
        if options:
            if answer not in letters(len(options)):
                raise BenchmarkDataError(f"{where}: field 'answer' {answer!r} is not one of the "
                                         f"{len(options)} option letters")
            text = choice_prompt(question, options)
        else:
            if not answer:
                raise BenchmarkDataError(f"{where}: field 'answer' is empty")
            text = open_prompt(question)
        subject = row.get("subject")
        image = embedded_image(row, "decoded_image", where)
        return Item(id=item_id, prompt=[{"type": "image", "image": image}, {"type": "text", "text": text}],
                    gold=answer, subset=str(subject) if subject else None, meta={"options": options})

    def score(self, item: Item, response: str) -> ItemScore:
        answer = final_answer(response)
        options = item.meta["options"]
        if options:
            letter = choice_letter(answer)
            if letter is None:
                lowered = " ".join(answer.lower().split())
                matches = [c for c, o in zip(letters(len(options)), options) if " ".join(o.lower().split()) == lowered]
                letter = matches[0] if matches else None
            return ItemScore(1.0 if letter == item.gold else 0.0, letter)
        if not answer:
            return ItemScore(0.0, None)
        if " ".join(answer.lower().split()) == " ".join(item.gold.lower().split()):
            return ItemScore(1.0, answer)
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("mathvision scores free-form answers with Math-Verify, whose timeouts need the "
                               "main thread; score it there")
        timeouts = self.scoring.math_verify
        verdict = check_math(response, item.gold, timeouts.parsing_timeout_s, timeouts.verify_timeout_s)
        return ItemScore(verdict.reward, answer)


ADAPTER = MathVision
