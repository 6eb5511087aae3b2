"""Reading answers out of model responses: the final answer, \\boxed{}, numbers, boxes, points, time spans.

Every reader is linear in the response length (compiled regular expressions, no backtracking over
nested groups) so a 1 MB response or a brace bomb costs milliseconds here; only Math-Verify can be
slow, and it runs in worker processes (rewards.math_pool).
"""
from __future__ import annotations

import math
import re
import sys
from collections import deque

THINK_END = "</think>"
_BOXED_OPEN = "\\boxed{"
_BRACE = re.compile(r"[{}]")

# A decimal number with optional sign, thousands separators, fraction and exponent (a regex source).
NUMBER_PATTERN = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?"
_N = NUMBER_PATTERN
_NUMBER = re.compile(rf"(?<![\w.])(?:{_N})")
_FULL_NUMBER = re.compile(rf"\s*\$?\s*({_N})\s*(%?)\s*\.?\s*")
_SEP = r"\s*,\s*"
_BOX_KEYED = re.compile(rf'"bbox_2d"\s*:\s*\[\s*({_N}){_SEP}({_N}){_SEP}({_N}){_SEP}({_N})\s*\]')
_BOX_BARE = re.compile(rf"[\[(]\s*({_N}){_SEP}({_N}){_SEP}({_N}){_SEP}({_N})\s*[\])]")
_POINT_KEYED = re.compile(rf'"(?:start_point|point_2d|point|coordinate)"\s*:\s*\[\s*({_N}){_SEP}({_N})\s*\]')
_POINT_BARE = re.compile(rf"[\[(]\s*({_N}){_SEP}({_N})\s*[\])]")
# MiMo-VL's evaluation parser (lmms-eval fork, _task_utils/eval_utils parse_bbox / parse_bbox_from_point):
# a plain decimal per coordinate; no thousands separators, which would swallow the commas between coordinates.
_COORD = r"-?\d+(?:\.\d+)?"
_C = rf"\s*({_COORD})\s*"
_GROUNDING = (
    re.compile(rf"\[{_C},{_C},{_C},{_C}\]"),  # a box in [..] anywhere ("bbox_2d": [..] included)
    re.compile(rf"\({_C},{_C},{_C},{_C}\)"),  # else a box in (..)
    re.compile(rf"\[{_C},{_C}\]"),             # else a point in [..]
    re.compile(rf"\({_C},{_C}\)"),             # else a point in (..)
)
_TIME = r"(?:\d+:)?\d+:\d+(?:\.\d+)?|\d+(?:\.\d+)?"
_SPAN = re.compile(rf"\[\s*({_TIME}){_SEP}({_TIME})\s*\]")

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_DIGIT_WORDS = "|".join(k for k, v in _UNITS.items() if 1 <= v <= 9)
_NUMBER_WORD = re.compile(
    rf"\b(?:({'|'.join(_TENS)})(?:[- ]({_DIGIT_WORDS}))?|({'|'.join(_UNITS)}))\b", re.IGNORECASE
)


def last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last non-overlapping match of `pattern` in `text`."""
    tail = deque(pattern.finditer(text), maxlen=1)
    return tail[0] if tail else None


def answer_region(response: str) -> str:
    """The part of a response after the last </think> (the whole response when there is none)."""
    cut = response.rfind(THINK_END)
    return response if cut < 0 else response[cut + len(THINK_END):]


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} with balanced braces; None when absent or unbalanced."""
    start = text.rfind(_BOXED_OPEN)
    if start < 0:
        return None
    begin = start + len(_BOXED_OPEN)
    depth = 1
    for match in _BRACE.finditer(text, begin):
        depth += 1 if match.group() == "{" else -1
        if depth == 0:
            return text[begin:match.start()]
    return None


def final_answer(response: str) -> str:
    """The answer a response commits to: the last \\boxed{} after any reasoning, else the text after it."""
    region = answer_region(response)
    boxed = last_boxed(region)
    return (region if boxed is None else boxed).strip()


def to_float(text: str) -> float | None:
    """A finite float from a matched number literal (commas allowed); None for overflow to inf."""
    value = float(text.replace(",", ""))
    return value if math.isfinite(value) else None


def whole_number(text: str) -> float | None:
    """The number when the whole text is one ("42", " $1,200 ", "45%" -> 0.45, "3."), else None."""
    whole = _FULL_NUMBER.fullmatch(text)
    if whole is None:
        return None
    value = to_float(whole.group(1))
    if value is not None and whole.group(2):
        value /= 100.0
    return value


def parse_number(text: str) -> float | None:
    """The number a short answer states: the whole answer when it is one (see whole_number),
    otherwise the last number in it; None when there is none or it is not finite."""
    if _FULL_NUMBER.fullmatch(text) is not None:
        return whole_number(text)
    last = last_match(_NUMBER, text)
    return None if last is None else to_float(last.group())


def parse_count(text: str) -> int | float | None:
    """The last number in the answer, written in digits ("3", "1,000", "3.0") or, when no digits are
    present, in words ("three", "twenty-one"). Integral values come back as exact ints; a fractional
    one ("2.5") comes back as a float, which equals no count."""
    last = last_match(_NUMBER, text)
    if last is not None:
        token = last.group().replace(",", "")
        if token.lstrip("+-").isdigit():
            # Past Python's int-from-string digit limit no count is meant; int() would raise.
            limit = sys.get_int_max_str_digits()
            return int(token) if limit == 0 or len(token) <= limit else None
        value = float(token)
        if not math.isfinite(value):
            return None
        return int(value) if value.is_integer() else value
    last = last_match(_NUMBER_WORD, text)
    if last is None:
        return None
    tens, unit, single = last.groups()
    if single is not None:
        return _UNITS[single.lower()]
    return _TENS[tens.lower()] + (_UNITS[unit.lower()] if unit else 0)


def _floats(groups: tuple[str, ...]) -> tuple[float, ...] | None:
    values = tuple(float(g.replace(",", "")) for g in groups)
    return values if all(math.isfinite(v) for v in values) else None


def parse_box(text: str) -> tuple[float, ...] | None:
    """The first box in the text: a JSON "bbox_2d": [x1, y1, x2, y2] if any, else a bare [x1, y1, x2, y2]."""
    match = _BOX_KEYED.search(text) or _BOX_BARE.search(text)
    return None if match is None else _floats(match.groups())


def parse_point(text: str) -> tuple[float, ...] | None:
    """The first point in the text: "start_point" (MiMo-VL's GUI action space)/"point_2d"/"point"/"coordinate":
    [x, y], else the centre of a box,
    else a bare [x, y] or (x, y)."""
    match = _POINT_KEYED.search(text)
    if match is not None:
        return _floats(match.groups())
    box = parse_box(text)
    if box is not None:
        return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
    match = _POINT_BARE.search(text)
    return None if match is None else _floats(match.groups())


def parse_grounding(text: str) -> tuple[float, float, float, float] | None:
    """The box a grounding answer gives, read as MiMo-VL's evaluation does: the first [x1, y1, x2, y2] in the
    text, else the first (x1, y1, x2, y2), else the first [x, y], else (x, y), a point being the zero-size box
    (x, y, x, y). Coordinates as written (no normalisation here); None when there is none or it overflows."""
    for pattern in _GROUNDING:
        match = pattern.search(text)
        if match is not None:
            values = _floats(match.groups())
            if values is None:
                return None
            return values if len(values) == 4 else (values[0], values[1], values[0], values[1])
    return None


def parse_timestamp(text: str) -> float | None:
    """Seconds from "ss", "mm:ss" or "hh:mm:ss" (fractions allowed); None when minutes/seconds exceed 59."""
    parts = text.split(":")
    seconds = float(parts[-1])
    if len(parts) > 1 and seconds >= 60.0:
        return None
    total = seconds
    scale = 60.0
    for index, part in enumerate(reversed(parts[:-1])):
        value = int(part)
        if index == 0 and len(parts) == 3 and value >= 60:
            return None
        total += value * scale
        scale *= 60.0
    return total if math.isfinite(total) else None


def parse_span(text: str) -> tuple[float, float] | None:
    """The last [start, end] time span in the text, each end "mm:ss" (or hh:mm:ss, or seconds)."""
    last = last_match(_SPAN, text)
    if last is None:
        return None
    start, end = parse_timestamp(last.group(1)), parse_timestamp(last.group(2))
    if start is None or end is None:
        return None
    return (start, end)
