"""CountBenchQA: how many objects of a kind an image shows."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluation.benchmarks.base import Benchmark, BenchmarkDataError, Item, ItemScore
from evaluation.benchmarks.files import embedded_image, field, find_files, read_parquet
from rewards.extract import final_answer, parse_count

COUNT_INSTRUCTION = "Put your final answer in \\boxed{} using a single number."  # the fork's countbench_boxed suffix


class CountBench(Benchmark):
    """CountBenchQA (vikhyatk/CountBenchQA, test 491).

    Folder layout: parquet files anywhere under the folder, read in sorted path order, e.g.
        <root>/data/test-00000-of-00001.parquet
    Columns read: image (image struct {bytes, path}), question, number (int). The layout has no id field:
    the prediction id is the 0-based row index, counted across the files in that order.

    Rule (fork `countbench_boxed`): the content of the last \\boxed{} (else the response); its last number,
    in digits or as a number word ("zero" ... "twenty", "twenty-one"), must equal `number`.
    """

    name = "countbench"
    metric = "accuracy"

    def load(self, root: Path) -> list[Item]:
        items: list[Item] = []
        for path in find_files(root, "*.parquet", self.name):
            for index, row in enumerate(read_parquet(path, ["image", "question", "number"])):
                items.append(self._item(row, f"{path} row {index}", len(items)))
        return items

    def _item(self, row: dict[str, Any], where: str, row_index: int) -> Item:
        question = field(row, "question", where, str)
        number = field(row, "number", where, int)
        if number < 0:
            raise BenchmarkDataError(f"{where}: field 'number' must be >= 0, got {number}")
        image = embedded_image(row, "image", where)
        return Item(id=str(row_index), gold=number,
                    prompt=[{"type": "image", "image": image}, {"type": "text", "text": f"{question}\n{COUNT_INSTRUCTION}"}])

    def score(self, item: Item, response: str) -> ItemScore:
        count = parse_count(final_answer(response))
        return ItemScore(1.0 if count == item.gold else 0.0, count)


ADAPTER = CountBench
