"""The reward functions that run in the calling process: pure, typed, one per kind of answer.

Each takes the model's response and the item's gold target and returns a Score (reward in [0, 1] and
a reason). A malformed target raises TargetError (the router scores the item 0 with reason "error");
a response from which no answer of the expected form can be read scores 0 with reason "unparseable".

Gold targets (JSON objects):
  grounding, point  {"box": [x1, y1, x2, y2]}              absolute pixels of the image the model saw
  gui               {"box": [x1, y1, x2, y2], "action": "click"}
  counting          {"count": n}
  temporal          {"span": [start_s, end_s]}              seconds
  choice            {"answer": "B"}
  exact, ocr, chart {"answer": "text" | number | [alternatives]}
Math runs in worker processes (rewards.math_pool) and the Bradley-Terry model in rewards.preference.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final

from rapidfuzz.distance import Levenshtein

from rewards import extract
from rewards.geometry import giou, is_valid_box, point_in_box, temporal_iou
from rewards.result import OK, UNPARSEABLE_SCORE, Score, TargetError

RewardFn = Callable[[str, Any], Score]

MATH: Final = "math"
PREFERENCE: Final = "preference"

_CORRECT: Final = Score(1.0, OK)
_WRONG: Final = Score(0.0, OK)


# ----------------------------------------------------------------------------------------------- targets
def _field(target: Any, key: str) -> Any:
    if not isinstance(target, Mapping):
        raise TargetError(f"target must be a JSON object, got {type(target).__name__}")
    if key not in target:
        raise TargetError(f"target has no '{key}' (keys: {sorted(map(str, target))})")
    return target[key]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def gold_box(target: Any) -> tuple[float, float, float, float]:
    box = _field(target, "box")
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(v) for v in box):
        raise TargetError(f"target.box must be [x1, y1, x2, y2] numbers, got {box!r:.200}")
    values = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
    if not is_valid_box(values, allow_empty=False):
        raise TargetError(f"target.box must be finite with x1 < x2 and y1 < y2, got {box!r}")
    return values


def gold_answers(target: Any) -> list[str]:
    """target.answer as a list of alternatives: a string, a number, or a list of those."""
    answer = _field(target, "answer")
    answers = answer if isinstance(answer, list) else [answer]
    if not answers:
        raise TargetError("target.answer is an empty list")
    out = []
    for value in answers:
        if isinstance(value, str):
            out.append(value)
        elif _is_number(value) and math.isfinite(value):
            out.append(repr(value) if isinstance(value, float) else str(value))
        else:
            raise TargetError(f"target.answer must hold strings or finite numbers, got {value!r:.200}")
    return out


def _normalise_text(text: str) -> str:
    """Lower case, whitespace collapsed, surrounding quotes and a final full stop removed."""
    text = " ".join(text.lower().split())
    text = text.strip("\"'`")
    return text[:-1].rstrip() if text.endswith(".") else text


# --------------------------------------------------------------------------------------------- functions
def grounding_reward(response: str, target: Any) -> Score:
    """GIoU of the first predicted box and the gold box, mapped to [0, 1] as (giou + 1) / 2."""
    gold = gold_box(target)
    pred = extract.parse_box(extract.final_answer(response))
    if pred is None or not is_valid_box(pred, allow_empty=True):
        return UNPARSEABLE_SCORE
    reward = (giou(pred, gold) + 1.0) * 0.5
    if not math.isfinite(reward):  # coordinates so large that the areas overflow
        return UNPARSEABLE_SCORE
    return Score(min(1.0, max(0.0, reward)), OK)


def point_reward(response: str, target: Any) -> Score:
    """1 if the predicted point (or the centre of a predicted box) lies in the gold box."""
    gold = gold_box(target)
    point = extract.parse_point(extract.final_answer(response))
    if point is None:
        return UNPARSEABLE_SCORE
    return _CORRECT if point_in_box(point[0], point[1], gold) else _WRONG


def counting_reward(response: str, target: Any) -> Score:
    """1 if the last number in the answer (digits or words) equals the gold count."""
    count = _field(target, "count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise TargetError(f"target.count must be a non-negative integer, got {count!r:.200}")
    pred = extract.parse_count(extract.final_answer(response))
    if pred is None:
        return UNPARSEABLE_SCORE
    return _CORRECT if pred == count else _WRONG


def temporal_reward(response: str, target: Any) -> Score:
    """Temporal IoU of the predicted [mm:ss, mm:ss] span and the gold span in seconds."""
    span = _field(target, "span")
    if (not isinstance(span, (list, tuple)) or len(span) != 2 or not all(_is_number(v) for v in span)
            or not all(math.isfinite(v) for v in span) or not 0.0 <= span[0] < span[1]):
        raise TargetError(f"target.span must be [start_s, end_s] with 0 <= start < end, got {span!r:.200}")
    pred = extract.parse_span(extract.final_answer(response))
    if pred is None or pred[0] > pred[1]:
        return UNPARSEABLE_SCORE
    return Score(temporal_iou(pred, (float(span[0]), float(span[1]))), OK)


_LETTER_ALONE = re.compile(r"\s*[(\[]?([A-Za-z])[)\]]?[.:]?\s*")
_LETTER_LEADING = re.compile(r"\s*[(\[]?([A-Z])(?:[)\]]|[.:]\s)")
_LETTER_STATED = re.compile(r"(?i:answer|option|choice)\s*(?:is|:)?\s*:?\s*[(\[]?([A-Z])\b")
_LETTER_PAREN = re.compile(r"\(([A-Z])\)")


def choice_letter(text: str) -> str | None:
    """The option letter an answer gives: "B", "(B)", "B. 42", "the answer is B", or a single "(B)"."""
    match = _LETTER_ALONE.fullmatch(text) or _LETTER_LEADING.match(text)
    if match is not None:
        return match.group(1).upper()
    last = extract.last_match(_LETTER_STATED, text)
    if last is not None:
        return last.group(1)
    letters = set(_LETTER_PAREN.findall(text))
    return letters.pop() if len(letters) == 1 else None


def choice_reward(response: str, target: Any) -> Score:
    """1 if the answer's option letter equals the gold letter."""
    answer = _field(target, "answer")
    gold = answer.strip().strip("()").upper() if isinstance(answer, str) else ""
    if len(gold) != 1 or not "A" <= gold <= "Z":
        raise TargetError(f"target.answer must be one option letter, got {answer!r:.200}")
    letter = choice_letter(extract.final_answer(response))
    if letter is None:
        return UNPARSEABLE_SCORE
    return _CORRECT if letter == gold else _WRONG


def exact_reward(response: str, target: Any) -> Score:
    """1 if the answer equals a gold alternative after normalisation (case, spaces, quotes, final
    full stop), or both are numbers of equal value."""
    golds = gold_answers(target)
    pred = _normalise_text(extract.final_answer(response))
    if not pred:
        return UNPARSEABLE_SCORE
    pred_number = extract.whole_number(pred)
    for gold in golds:
        if _normalise_text(gold) == pred:
            return _CORRECT
        if pred_number is not None and extract.whole_number(gold) == pred_number:
            return _CORRECT
    return _WRONG


def ocr_reward(response: str, target: Any) -> Score:
    """Normalised edit similarity 1 - lev(a, b) / max(|a|, |b|), best over the gold alternatives."""
    golds = [_normalise_text(g) for g in gold_answers(target)]
    if not all(golds):
        raise TargetError("target.answer must not be empty for ocr")
    pred = _normalise_text(extract.final_answer(response))
    if not pred:
        return UNPARSEABLE_SCORE
    return Score(max(Levenshtein.normalized_similarity(pred, gold) for gold in golds), OK)


def chart_reward(response: str, target: Any, relative_tolerance: float) -> Score:
    """ChartQA relaxed accuracy: a numeric gold is matched within |pred - gold| <= tol * |gold|
    (a trailing % divides by 100); a text gold by case-insensitive exact match."""
    golds = gold_answers(target)
    answer = extract.final_answer(response)
    if not answer:
        return UNPARSEABLE_SCORE
    pred_text = _normalise_text(answer)
    pred_number = extract.parse_number(answer)
    for gold in golds:
        gold_number = extract.whole_number(gold)
        if gold_number is None:
            if _normalise_text(gold) == pred_text:
                return _CORRECT
        elif pred_number is not None and abs(pred_number - gold_number) <= relative_tolerance * abs(gold_number):
            return _CORRECT
    if pred_number is None and all(extract.whole_number(g) is not None for g in golds):
        return UNPARSEABLE_SCORE
    return _WRONG


_GUI_ACTION = re.compile(r'"action(?:_type)?"\s*:\s*"([A-Za-z_]+)"')
_GUI_CALL = re.compile(
    rf"\b([A-Za-z_]+)\s*\(\s*(?:x\s*=\s*)?({extract.NUMBER_PATTERN})\s*,\s*(?:y\s*=\s*)?({extract.NUMBER_PATTERN})\s*\)"
)


def gui_reward(response: str, target: Any) -> Score:
    """1 if the action type equals the gold action and its point lies in the gold box.

    Read from JSON ({"action": "click", "point_2d": [x, y]}; "action_type", "point", "coordinate" or a
    "bbox_2d" whose centre counts are accepted too) or from a call such as click(120, 45)."""
    gold = gold_box(target)
    gold_action = _field(target, "action")
    if not isinstance(gold_action, str) or not gold_action.strip():
        raise TargetError(f"target.action must be a non-empty string, got {gold_action!r:.200}")
    answer = extract.final_answer(response)
    keyed = _GUI_ACTION.search(answer)
    if keyed is not None:
        action, point = keyed.group(1), extract.parse_point(answer)
    else:
        call = _GUI_CALL.search(answer)
        if call is None:
            return UNPARSEABLE_SCORE
        action = call.group(1)
        x, y = extract.to_float(call.group(2)), extract.to_float(call.group(3))
        point = None if x is None or y is None else (x, y)
    if action.lower() != gold_action.strip().lower():
        return _WRONG
    if point is None:
        return UNPARSEABLE_SCORE
    return _CORRECT if point_in_box(point[0], point[1], gold) else _WRONG


def in_process_functions(chart_relative_tolerance: float) -> dict[str, RewardFn]:
    """The reward functions by the name conf/rl routes use, bound to their settings."""
    return {
        "grounding": grounding_reward,
        "point": point_reward,
        "counting": counting_reward,
        "temporal": temporal_reward,
        "choice": choice_reward,
        "exact": exact_reward,
        "ocr": ocr_reward,
        "chart": partial(chart_reward, relative_tolerance=chart_relative_tolerance),
        "gui": gui_reward,
    }


# Every function name a route may use (in_process_functions' keys plus the two out-of-process ones).
FUNCTION_NAMES: Final = frozenset(
    {"grounding", "point", "counting", "temporal", "choice", "exact", "ocr", "chart", "gui", MATH, PREFERENCE}
)
