"""The grounding rule the localisation adapters share (refcoco, screenspot_v2, screenspot_pro, osworld_g).

The raw response is read with MiMo-VL's evaluation parser (rewards.extract.parse_grounding: the first
[x1, y1, x2, y2], else (..), else a two-number point, which is the zero-size box (x, y, x, y)). Answers are
absolute pixels of the image as stored; only a prediction whose four values all lie in [0, 1] is read as
normalised and multiplied by the image's width and height. Gold boxes are (x1, y1, x2, y2) pixels.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from evaluation.benchmarks.base import BenchmarkDataError, ImageRef
from rewards.extract import parse_grounding

Box = tuple[float, float, float, float]

# The fork's prompts (XiaomiMiMo/lmms-eval): the label placeholder is literal text in them.
REFERRING_PROMPT = ('Based on the description: "{text}", locate all regions matching the description. Output a '
                    'JSON in the format [{{"bbox_2d": [...], "label": "{{the_whole_description}}"}}, ...].')
GUI_PROMPT = ('Locate UI components that match the command: "{text}". Output a JSON in the format '
              '[{{"bbox_2d": [...], "label": "{{the_whole_command}}"}}, ...].')


def grounding_prompt(image: ImageRef, template: str, text: str) -> list[dict]:
    """The user turn: the image, then the fork's instruction for `text`."""
    return [{"type": "image", "image": image}, {"type": "text", "text": template.format(text=text)}]


def image_size(image: ImageRef, where: str) -> tuple[int, int]:
    """(width, height) from the image file's header (PIL opens lazily: the pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as opened:
            width, height = opened.size
    except (OSError, UnidentifiedImageError) as exc:
        raise BenchmarkDataError(f"{where}: the image is not readable: {exc}") from exc
    return int(width), int(height)


def size_field(value: object, where: str, key: str) -> tuple[int, int]:
    """A [width, height] field in pixels, both positive."""
    if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2
            or not all(_is_number(v) and v > 0 for v in value)):
        raise BenchmarkDataError(f"{where}: field {key!r} must be [width, height] in pixels, got {value!r:.200}")
    return int(value[0]), int(value[1])


def numbers(value: object, where: str, key: str, count: int | None = None) -> list[float]:
    """A list of finite numbers (exactly `count` of them when given)."""
    if (not isinstance(value, Sequence) or isinstance(value, str) or (count is not None and len(value) != count)
            or not all(_is_number(v) and math.isfinite(v) for v in value)):
        wanted = f"{count} finite numbers" if count is not None else "a list of finite numbers"
        raise BenchmarkDataError(f"{where}: field {key!r} must be {wanted}, got {value!r:.200}")
    return [float(v) for v in value]


def xywh_box(value: object, where: str, key: str) -> Box:
    """A gold [x, y, w, h] pixel box (COCO, ScreenSpot) as (x1, y1, x2, y2); width and height positive."""
    x, y, w, h = numbers(value, where, key, 4)
    if w <= 0 or h <= 0:
        raise BenchmarkDataError(f"{where}: field {key!r} [x, y, w, h] must have w, h > 0, got {value!r:.200}")
    return (x, y, x + w, y + h)


def xyxy_box(value: object, where: str, key: str) -> Box:
    """A gold [x1, y1, x2, y2] pixel box with x1 < x2 and y1 < y2."""
    x1, y1, x2, y2 = numbers(value, where, key, 4)
    if not (x1 < x2 and y1 < y2):
        raise BenchmarkDataError(f"{where}: field {key!r} [x1, y1, x2, y2] must have x1 < x2, y1 < y2, "
                                 f"got {value!r:.200}")
    return (x1, y1, x2, y2)


def predicted_box(response: str, size: tuple[int, int]) -> Box | None:
    """The response's box in pixels of the image as stored; None when it gives none."""
    box = parse_grounding(response)
    if box is None:
        return None
    if all(0.0 <= v <= 1.0 for v in box):
        width, height = size
        box = (box[0] * width, box[1] * height, box[2] * width, box[3] * height)
    return box


def centre(box: Box) -> tuple[float, float]:
    """The centre of a box (the point itself for a zero-size box)."""
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def image_path(folder: Path, name: object, where: str, key: str) -> Path:
    """An image file named by a record, relative to `folder`; it must exist."""
    if not isinstance(name, str) or not name:
        raise BenchmarkDataError(f"{where}: field {key!r} must name an image file, got {name!r:.200}")
    path = folder / name
    if not path.is_file():
        raise BenchmarkDataError(f"{where}: field {key!r}: no image file {path}")
    return path
