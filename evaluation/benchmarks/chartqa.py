"""ChartQA: questions about charts, numeric answers scored by relaxed accuracy."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluation.benchmarks.base import Benchmark, BenchmarkDataError, Item, ItemScore
from evaluation.benchmarks.files import field, read_json_records
from evaluation.benchmarks.prompts import SHORT_ANSWER, open_prompt
from rewards.extract import final_answer
from rewards.functions import chart_reward, gold_answers
from rewards.result import TargetError

# file stem -> the `by` key: the official report splits human-written from machine-generated questions
SPLITS = {"test_human": "human", "test_augmented": "augmented"}


class ChartQA(Benchmark):
    """ChartQA test split in its original release layout.

    Folder layout:
        <root>/test/test_human.json       a JSON list of {"imgname": "41699051005347.png", "query": ..., "label": ...}
        <root>/test/test_augmented.json   the same, machine-generated questions
        <root>/test/png/<imgname>         the chart images
    The prediction id is `<file stem>:<0-based record index>`, e.g. "test_human:0", "test_augmented:12".
    `by`: human and augmented.

    Rule (relaxed accuracy, pix2struct/lmms-lab): the content of the last \\boxed{} (else the response);
    a numeric label is matched when |pred - label| <= relative_tolerance * |label| (a trailing % divides
    by 100, on either side), any other label by case-insensitive exact match. The score is the mean over
    human + augmented.
    """

    name = "chartqa"
    metric = "relaxed_accuracy"

    def load(self, root: Path) -> list[Item]:
        folder = Path(root) / "test"
        items: list[Item] = []
        for stem, subset in SPLITS.items():
            path = folder / f"{stem}.json"
            if not path.is_file():
                raise BenchmarkDataError(f"{path}: missing (the ChartQA layout: test/test_human.json, "
                                         "test/test_augmented.json, test/png/)")
            for index, record in enumerate(read_json_records(path)):
                items.append(self._item(record, f"{path} record {index}", f"{stem}:{index}", subset, folder / "png"))
        return items

    def _item(self, record: dict[str, Any], where: str, item_id: str, subset: str, images: Path) -> Item:
        image = images / field(record, "imgname", where, str)
        if not image.is_file():
            raise BenchmarkDataError(f"{where}: field 'imgname' names {image}, which does not exist")
        query = field(record, "query", where, str)
        label = field(record, "label", where, (str, int, float, list))
        try:
            answers = gold_answers({"answer": label})
        except TargetError as exc:
            raise BenchmarkDataError(f"{where}: field 'label': {exc}") from exc
        return Item(id=item_id, gold=answers, subset=subset,
                    prompt=[{"type": "image", "image": image},
                            {"type": "text", "text": open_prompt(f"{query}\n{SHORT_ANSWER}")}])

    def score(self, item: Item, response: str) -> ItemScore:
        verdict = chart_reward(response, {"answer": item.gold}, self.scoring.chartqa.relative_tolerance)
        return ItemScore(verdict.reward, final_answer(response) or None)


ADAPTER = ChartQA
