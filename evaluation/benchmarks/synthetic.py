"""The synthetic held-out suite's benchmarks: `synthetic_<task>`, each the public adapter of its layout.

evaluation.synthetic_suite writes each task of a synthetic data set's eval split as a public benchmark
folder (the table there says which layout and rule each task gets). The adapters here are thin
subclasses of those public adapters: ids, gold answers, images and the official rule are the public
adapter's; only the prompt differs: it is the sample's own user turn (the layout's question field holds
it verbatim, after the image), not the public benchmark's instruction, so the model is asked exactly as it
was trained. Where a task has several kinds of question, `by` reports each kind (subset).

Chance level, `chance(items)`: the expected score of a responder that answers every item with an answer
drawn uniformly from the item's answer space, the distinct gold answers of the benchmark's items of the
same kind (question_kind). Exact, with no sampling:
- answered by exact match (vqa, chart, counting, math, reasoning, text: distinct answers never match each
  other): analytically, the mean over items of 1 / |answer space of its kind|; e.g. vqa colour questions
  1/6, shape 1/3, size 1/2, position 1/9 when every answer occurs among the items;
- otherwise (ocr by ANLS, grounding by IoU, point and gui by point-in-box): the mean over items of the
  mean score, by the benchmark's own rule, of every answer in the space (n x |space| scorings), the answer
  written as the training answers are (`response_for`).
"""
from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from evaluation.benchmarks.base import BenchmarkDataError, Item
from evaluation.benchmarks.chartqa import SPLITS as CHARTQA_FILES
from evaluation.benchmarks.chartqa import ChartQA
from evaluation.benchmarks.countbench import CountBench
from evaluation.benchmarks.docvqa import DocVQA
from evaluation.benchmarks.files import find_files, read_json_records, read_parquet
from evaluation.benchmarks.mathvision import MathVision
from evaluation.benchmarks.mathvista import MathVista
from evaluation.benchmarks.mmmu import MMMU
from evaluation.benchmarks.refcoco import RefCOCO
from evaluation.benchmarks.screenspot import ScreenSpotPro, ScreenSpotV2

THINK_OFF = "<think>\n</think>\n"  # the empty think block the training answers start with (data/synth_tasks.py)


class SyntheticBenchmark(ABC):
    """Mixin before a public adapter: the prompt from the layout's question field, the chance level."""

    task: ClassVar[str]
    exact_match: ClassVar[bool]        # distinct answers never score against each other: chance is analytic
    kinds: ClassVar[tuple[tuple[str, re.Pattern[str]], ...]] = ()  # (kind, pattern of its question text)

    # ---------------------------------------------------------------------------------------- items
    def load(self, root: Path) -> list[Item]:
        items = super().load(root)  # type: ignore[misc]
        texts = self.user_texts(Path(root))
        out = []
        for item in items:
            if item.id not in texts:
                raise BenchmarkDataError(f"{root}: item {item.id!r} has no question text in the layout")
            text = texts[item.id]
            images = [part for part in item.prompt if part["type"] == "image"]
            kind = self.question_kind(text)
            out.append(replace(item, prompt=[*images, {"type": "text", "text": text}],
                               subset=kind))
        return out

    @abstractmethod
    def user_texts(self, root: Path) -> dict[str, str]:
        """{item id: the question field}, read as the public adapter reads the layout's ids."""

    def question_kind(self, text: str) -> str | None:
        """The kind of question (its answer space); None: one kind."""
        for kind, pattern in self.kinds:
            if pattern.search(text):
                return kind
        return None if not self.kinds else "other"

    # --------------------------------------------------------------------------------------- chance
    @abstractmethod
    def answer(self, item: Item) -> Any:
        """The item's gold answer as one hashable value of its answer space."""

    @abstractmethod
    def response_for(self, item: Item, answer: Any) -> str:
        """A response giving `answer` to `item` the way the training answers are written."""

    def answer_spaces(self, items: Sequence[Item]) -> dict[str | None, list[Any]]:
        spaces: dict[str | None, list[Any]] = {}
        for item in items:
            space = spaces.setdefault(self._kind(item), [])
            value = self.answer(item)
            if value not in space:
                space.append(value)
        return spaces

    def chance(self, items: Sequence[Item]) -> float:
        """The expected score of the uniform responder over each kind's answer space (module docstring)."""
        if not items:
            return 0.0
        spaces = self.answer_spaces(items)
        total = 0.0
        for item in items:
            space = spaces[self._kind(item)]
            if self.exact_match:
                total += 1.0 / len(space)
            else:
                total += sum(self.score(item, self.response_for(item, a)).score for a in space) / len(space)  # type: ignore[attr-defined]
        return total / len(items)

    def _kind(self, item: Item) -> str | None:
        return self.question_kind(item.prompt[-1]["text"])


def _kinds(*pairs: tuple[str, str]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    return tuple((kind, re.compile(pattern)) for kind, pattern in pairs)


def _parquet_texts(root: Path, benchmark: str, id_column: str | None, text_column: str) -> dict[str, str]:
    """{id: text} from the parquet files in the public adapter's order (id None: the row index across files)."""
    texts: dict[str, str] = {}
    for path in find_files(root, "*.parquet", benchmark):
        for row in read_parquet(path, [c for c in (id_column, text_column) if c]):
            key = str(len(texts)) if id_column is None else str(row[id_column])
            texts[key] = row[text_column]
    return texts


def _boxed(answer: str) -> str:
    return f"{THINK_OFF}The answer is \\boxed{{{answer}}}."


# --------------------------------------------------------------------------------------- text answers

class _ChartQALayout(SyntheticBenchmark, ChartQA):
    exact_match = True

    def user_texts(self, root: Path) -> dict[str, str]:
        texts = {}
        for stem in CHARTQA_FILES:
            for index, record in enumerate(read_json_records(root / "test" / f"{stem}.json")):
                texts[f"{stem}:{index}"] = record["query"]
        return texts

    def answer(self, item: Item) -> Any:
        return item.gold[0]

    def response_for(self, item: Item, answer: Any) -> str:
        return THINK_OFF + str(answer)


class SyntheticVQA(_ChartQALayout):
    """vqa in the chartqa layout: one-word answers (colour, shape, size, position), exact match."""

    name = "synthetic_vqa"
    task = "vqa"
    kinds = _kinds(("colour", r"^What colour is the "), ("shape", r"^What shape is the "),
                   ("size", r" small or large\?$"), ("position", r"^Where in the image is the "))


class SyntheticChart(_ChartQALayout):
    """chart in the chartqa layout: the highest bar's label, or a bar's value (relaxed accuracy)."""

    name = "synthetic_chart"
    task = "chart"
    kinds = _kinds(("highest", r"^Which bar has the highest value\?"), ("value", r"^What is the value of bar "))


class SyntheticOCR(SyntheticBenchmark, DocVQA):
    """ocr in the docvqa layout: the rendered words, ANLS."""

    name = "synthetic_ocr"
    task = "ocr"
    exact_match = False

    def user_texts(self, root: Path) -> dict[str, str]:
        return _parquet_texts(root, self.name, "questionId", "question")

    def answer(self, item: Item) -> Any:
        return item.gold[0]

    def response_for(self, item: Item, answer: Any) -> str:
        return THINK_OFF + str(answer)


class SyntheticCounting(SyntheticBenchmark, CountBench):
    """counting in the countbench layout: a count, exact match."""

    name = "synthetic_counting"
    task = "counting"
    exact_match = True

    def user_texts(self, root: Path) -> dict[str, str]:
        return _parquet_texts(root, self.name, None, "question")

    def answer(self, item: Item) -> Any:
        return item.gold

    def response_for(self, item: Item, answer: Any) -> str:
        return THINK_OFF + str(answer)


class SyntheticMath(SyntheticBenchmark, MathVista):
    """math in the mathvista layout: free-form integer answers in \\boxed{}."""

    name = "synthetic_math"
    task = "math"
    exact_match = True

    def user_texts(self, root: Path) -> dict[str, str]:
        return _parquet_texts(root, self.name, "pid", "question")

    def answer(self, item: Item) -> Any:
        return item.gold

    def response_for(self, item: Item, answer: Any) -> str:
        return _boxed(answer)


class SyntheticReasoning(SyntheticBenchmark, MathVision):
    """reasoning in the mathvision layout: free-form integer answers in \\boxed{} after a chain of thought.
    Integers that differ are never Math-Verify-equivalent, so exact match holds for the chance level."""

    name = "synthetic_reasoning"
    task = "reasoning"
    exact_match = True
    kinds = _kinds(("points", r"^Each \w+ shape is worth "), ("expression", r"^Compute the value of the expression"))

    def user_texts(self, root: Path) -> dict[str, str]:
        return _parquet_texts(root, self.name, "id", "question")

    def answer(self, item: Item) -> Any:
        return item.gold

    def response_for(self, item: Item, answer: Any) -> str:
        return f"<think>\n</think>\nThe answer is \\boxed{{{answer}}}."


class SyntheticText(SyntheticBenchmark, MMMU):
    """text in the mmmu layout: open word problems without an image, integer answers in \\boxed{}."""

    name = "synthetic_text"
    task = "text"
    exact_match = True

    def user_texts(self, root: Path) -> dict[str, str]:
        return _parquet_texts(root, self.name, "id", "question")

    def answer(self, item: Item) -> Any:
        return item.gold[0]

    def response_for(self, item: Item, answer: Any) -> str:
        return _boxed(answer)


# --------------------------------------------------------------------------------------- localisation

def _box_json(box: Sequence[float]) -> list[float]:
    return [int(v) if float(v).is_integer() else v for v in box]


class SyntheticGrounding(SyntheticBenchmark, RefCOCO):
    """grounding in the refcoco layout: the shape's box ([{"bbox_2d": ...}] answers), Acc@0.5."""

    name = "synthetic_grounding"
    task = "grounding"
    exact_match = False

    def user_texts(self, root: Path) -> dict[str, str]:
        return _parquet_texts(root, self.name, "question_id", "question")

    def answer(self, item: Item) -> Any:
        return tuple(item.gold)

    def response_for(self, item: Item, answer: Any) -> str:
        return THINK_OFF + json.dumps([{"bbox_2d": _box_json(answer), "label": ""}])


def _centre(box: Sequence[float]) -> list[float]:
    return _box_json([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


class SyntheticPoint(SyntheticBenchmark, ScreenSpotV2):
    """point in the screenspot_v2 layout: a point ([{"point_2d": ...}] answers) inside the shape's box."""

    name = "synthetic_point"
    task = "point"
    exact_match = False

    def user_texts(self, root: Path) -> dict[str, str]:
        texts = {}
        for path in sorted(root.glob("screenspot_*_v2.json")):
            for index, record in enumerate(read_json_records(path)):
                texts[f"{path.stem}:{index}"] = record["instruction"]
        return texts

    def answer(self, item: Item) -> Any:
        return tuple(item.gold)

    def response_for(self, item: Item, answer: Any) -> str:
        return THINK_OFF + json.dumps([{"point_2d": _centre(answer), "label": ""}])


class SyntheticGUI(SyntheticBenchmark, ScreenSpotPro):
    """gui in the screenspot_pro layout: a click ({"action": "click", "start_point": ...}) inside the button."""

    name = "synthetic_gui"
    task = "gui"
    exact_match = False

    def user_texts(self, root: Path) -> dict[str, str]:
        texts = {}
        for path in find_files(root / "annotations", "*.json", self.name):
            for index, record in enumerate(read_json_records(path)):
                key = str(record["id"]) if record.get("id") is not None else f"{path.stem}:{index}"
                texts[key] = record["instruction"]
        return texts

    def answer(self, item: Item) -> Any:
        return tuple(item.gold)

    def response_for(self, item: Item, answer: Any) -> str:
        return THINK_OFF + json.dumps({"action": "click", "start_point": _centre(answer)})


ADAPTERS = {cls.name: cls for cls in (SyntheticVQA, SyntheticOCR, SyntheticGrounding, SyntheticPoint, SyntheticCounting,
                                      SyntheticMath, SyntheticChart, SyntheticGUI, SyntheticReasoning, SyntheticText)}
TASK_BENCHMARKS = {cls.task: name for name, cls in ADAPTERS.items()}
