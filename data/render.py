"""Drawing primitives for the synthetic images: a canvas is a plain description, rendered by Pillow.

Planning (where things go, what the ground truth is) works on these descriptions without touching
pixels, so the text of a sample can be produced without rendering its image. Pillow fills shapes
without anti-aliasing, and a shape drawn in the half-open pixel box [x1, x2) x [y1, y2) covers
exactly that box's extent, so a shape's box is its exact pixel bounding box.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]  # x1, y1, x2, y2: pixels x1 <= x < x2, y1 <= y < y2


def as_rgb(values: list[int] | tuple[int, ...]) -> RGB:
    """A config colour [r, g, b] as the tuple Pillow takes."""
    r, g, b = values
    return (int(r), int(g), int(b))


@dataclass(frozen=True)
class Shape:
    kind: str  # circle | square | triangle (apex at the top centre)
    colour: str
    rgb: RGB
    box: Box
    size: str  # small | large
    cell: tuple[int, int]  # (row, column) of the 3x3 grid


@dataclass(frozen=True)
class Rect:
    box: Box
    fill: RGB
    outline: RGB | None = None


@dataclass(frozen=True)
class Text:
    xy: tuple[int, int]
    text: str
    fill: RGB
    size: int
    anchor: str  # Pillow text anchor, e.g. "la" (left, ascender) or "mm" (centred)


@dataclass
class Canvas:
    width: int
    height: int
    background: RGB
    items: list[Shape | Rect | Text] = field(default_factory=list)

    def shapes(self) -> list[Shape]:
        return [item for item in self.items if isinstance(item, Shape)]


@lru_cache(maxsize=None)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font: identical on every machine, no system fonts needed."""
    return ImageFont.load_default(size=size)


def text_extent(text: str, size: int) -> Box:
    """Ink box of `text` drawn at the origin with anchor "la"."""
    left, top, right, bottom = font(size).getbbox(text)
    return int(left), int(top), int(right), int(bottom)


def render(canvas: Canvas) -> Image.Image:
    image = Image.new("RGB", (canvas.width, canvas.height), canvas.background)
    draw = ImageDraw.Draw(image)
    for item in canvas.items:
        if isinstance(item, Shape):
            x1, y1, x2, y2 = item.box
            corners = [x1, y1, x2 - 1, y2 - 1]  # Pillow boxes are inclusive
            if item.kind == "circle":
                draw.ellipse(corners, fill=item.rgb)
            elif item.kind == "square":
                draw.rectangle(corners, fill=item.rgb)
            elif item.kind == "triangle":
                draw.polygon([(x1, y2 - 1), (x2 - 1, y2 - 1), ((x1 + x2 - 1) / 2, y1)], fill=item.rgb)
            else:
                raise ValueError(f"unknown shape kind {item.kind!r}")
        elif isinstance(item, Rect):
            x1, y1, x2, y2 = item.box
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=item.fill, outline=item.outline)
        else:
            draw.text(item.xy, item.text, fill=item.fill, font=font(item.size), anchor=item.anchor)
    return image


def encode_png(image: Image.Image, compress_level: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
