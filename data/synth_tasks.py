"""Task builders of the synthetic data set: each draws one sample's canvases, prompt, answer and target.

A builder works on canvas descriptions (data/render.py) and never renders pixels, so the text of a
sample is known without its image and the ground truth is exact by construction: shapes sit in
distinct cells of a 3x3 grid (their position word is exact and they never overlap), and a shape's
box is its exact pixel bounding box. Coordinates in prompts, answers and targets are absolute pixels
of the image as the processor resizes it (ResizeSpec); a box [x1, y1, x2, y2] holds the pixels
x1 <= x < x2, y1 <= y < y2 (pixel-edge coordinates), a point is a pixel's column and row.

Answers follow the reference's chat format: thinking-off answers start with an empty
"<think>\\n</think>\\n" block; reasoning answers carry the whole chain of thought inside it.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from conf import ConfigError
from data.config import GRID, ResizeSpec, SynthConfig
from data.render import RGB, Box, Canvas, Rect, Shape, Text, as_rgb, text_extent

THINK_OFF = "<think>\n</think>\n"
BOXED_HINT = "Put your final answer in \\boxed{}."
POSITIONS = (("top left", "top", "top right"), ("left", "center", "right"),
             ("bottom left", "bottom", "bottom right"))
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_PROMPTS = ("Describe the image.", "What is in this picture?", "Write a short caption for the image.")
TIMES = "\u00d7"  # the multiplication sign of texts
IMAGE_TIMES = "x"  # Pillow's bundled font has no glyph for the multiplication sign


def image_form(expression: str) -> str:
    """An expression as the image shows it."""
    return expression.replace(TIMES, IMAGE_TIMES)


def position_phrase(cell: tuple[int, int]) -> str:
    """"at the top left", "in the center", "on the left", ... for a grid cell."""
    word = POSITIONS[cell[0]][cell[1]]
    if word == "center":
        return "in the center"
    if word in ("left", "right"):
        return f"on the {word}"
    return f"at the {word}"


def describe(shape: Shape, with_size: bool = True) -> str:
    return f"a {shape.size} {shape.colour} {shape.kind}" if with_size else f"a {shape.colour} {shape.kind}"


def describe_scene(shapes: list[Shape]) -> str:
    phrases = [f"{describe(s)} {position_phrase(s.cell)}" for s in sorted(shapes, key=lambda s: s.cell)]
    if len(phrases) == 1:
        return phrases[0][0].upper() + phrases[0][1:] + "."
    listed = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"{NUMBER_WORDS[len(phrases)].capitalize()} shapes: {listed}."


def image_part(index: int) -> dict[str, Any]:
    """An image part of a draft; `index` points into Draft.canvases until the file path is known."""
    return {"type": "image", "image": index}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


@dataclass
class Draft:
    """One planned sample: a single user turn, the assistant's answer and the ground truth."""

    task: str
    prompt: list[dict[str, Any]]
    answer: str
    target: dict[str, Any] | None
    canvases: list[Canvas]
    facts: dict[str, Any] = field(default_factory=dict)  # what the ground truth was derived from

    def texts(self) -> list[str]:
        prompt = "\n".join(part["text"] for part in self.prompt if part["type"] == "text")
        return [prompt, self.answer]


class TaskContext:
    """The configuration plus what builders derive from it once (colours, resized canvas sizes)."""

    def __init__(self, cfg: SynthConfig, resize: ResizeSpec):
        self.cfg = cfg
        self.resize = resize
        self.background = as_rgb(cfg.background)
        self.colours: list[tuple[str, RGB]] = [(name, as_rgb(rgb)) for name, rgb in cfg.colours.items()]
        self.pairs = [(colour, kind) for colour, _ in self.colours for kind in cfg.shapes]
        self._rgb = dict(self.colours)
        self._resized = {tuple(size): resize.resized(*size)
                         for size in (cfg.canvas.scene, cfg.canvas.text_line, cfg.canvas.chart, cfg.canvas.gui)}
        self._check_text_fits()

    def _check_text_fits(self) -> None:
        cfg = self.cfg
        width = cfg.canvas.text_line[0]
        widest = max(cfg.ocr.words, key=lambda w: text_extent(w, cfg.font_size)[2])
        if text_extent(widest, cfg.font_size)[2] > width - 2 * cfg.ocr.margin:
            raise ConfigError(f"data.ocr.words: {widest!r} does not fit canvas.text_line ({width} px)")
        big = str(max(cfg.math.add_max, cfg.reasoning.operand_max, cfg.math.mul_max))
        expression = f" {IMAGE_TIMES} ".join([big] * cfg.reasoning.terms[1]) + " = ?"
        if text_extent(expression, cfg.font_size)[2] > width - 2 * cfg.math.margin:
            raise ConfigError(f"data.reasoning.terms: {expression!r} does not fit canvas.text_line ({width} px)")
        height = cfg.canvas.text_line[1]
        extent = text_extent(expression, cfg.font_size)
        if extent[3] - extent[1] > height - 2 * max(cfg.ocr.margin, cfg.math.margin):
            raise ConfigError(f"data.font_size: {cfg.font_size} px text does not fit canvas.text_line ({height} px)")
        slot = cfg.canvas.gui[0] // cfg.gui.columns
        for label in cfg.gui.labels:
            if text_extent(label, cfg.font_size)[2] + 2 * cfg.gui.padding[1] > slot:
                raise ConfigError(f"data.gui.labels: button {label!r} does not fit a slot of {slot} px")

    def canvas(self, kind: str, background: RGB | None = None) -> Canvas:
        width, height = getattr(self.cfg.canvas, kind)
        return Canvas(width, height, background or self.background)

    def model_box(self, canvas: Canvas, box: Box) -> list[int]:
        """A box in absolute pixels of the processor-resized image."""
        sx, sy = self._scale(canvas)
        return [round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)]

    def model_point(self, canvas: Canvas, box: Box) -> list[int]:
        """The centre pixel of a box, in absolute pixels of the processor-resized image."""
        sx, sy = self._scale(canvas)
        return [round((box[0] + box[2]) // 2 * sx), round((box[1] + box[3]) // 2 * sy)]

    def _scale(self, canvas: Canvas) -> tuple[float, float]:
        width, height = self._resized[(canvas.width, canvas.height)]
        return width / canvas.width, height / canvas.height

    def rgb(self, colour: str) -> RGB:
        return self._rgb[colour]


# ---------------------------------------------------------------------------------------------- scenes

def place_shapes(ctx: TaskContext, rng: random.Random, canvas: Canvas, looks: list[tuple[str, str]]) -> list[Shape]:
    """Put one shape per (colour, kind) into distinct grid cells of `canvas`, each fully inside its cell."""
    cells = rng.sample(range(GRID * GRID), len(looks))
    shapes = []
    for (colour, kind), cell in zip(looks, cells):
        row, col = divmod(cell, GRID)
        size = rng.choice(("small", "large"))
        low, high = getattr(ctx.cfg.scene, size)
        side = rng.randint(low, high)
        x0, x1 = col * canvas.width // GRID, (col + 1) * canvas.width // GRID
        y0, y1 = row * canvas.height // GRID, (row + 1) * canvas.height // GRID
        x, y = rng.randint(x0, x1 - side), rng.randint(y0, y1 - side)
        shapes.append(Shape(kind, colour, ctx.rgb(colour), (x, y, x + side, y + side), size, (row, col)))
    canvas.items.extend(shapes)
    return shapes


def random_looks(ctx: TaskContext, rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n (colour, kind) pairs, repeats allowed."""
    return [rng.choice(ctx.pairs) for _ in range(n)]


def distinct_looks(ctx: TaskContext, rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n distinct (colour, kind) pairs: "the red circle" names exactly one shape."""
    return rng.sample(ctx.pairs, n)


def place_text(ctx: TaskContext, rng: random.Random, canvas: Canvas, text: str, fill: RGB, margin: int) -> Text:
    """Put one line of text at a random position with its whole ink inside the margins."""
    size = ctx.cfg.font_size
    left, top, right, bottom = text_extent(text, size)
    x = rng.randint(margin - left, canvas.width - margin - right)
    y = rng.randint(margin - top, canvas.height - margin - bottom)
    item = Text((x, y), text, fill, size, "la")
    canvas.items.append(item)
    return item


# -------------------------------------------------------------------------------------------- builders

def build_caption(ctx: TaskContext, rng: random.Random) -> Draft:
    canvas = ctx.canvas("scene")
    shapes = place_shapes(ctx, rng, canvas, random_looks(ctx, rng, rng.randint(1, ctx.cfg.scene.max_shapes)))
    return Draft("caption", [image_part(0), text_part(rng.choice(CAPTION_PROMPTS))],
                 THINK_OFF + describe_scene(shapes), None, [canvas])


def build_vqa(ctx: TaskContext, rng: random.Random) -> Draft:
    n = rng.randint(1, min(3, len(ctx.cfg.shapes), len(ctx.colours)))
    colours = rng.sample([c for c, _ in ctx.colours], n)
    kinds = rng.sample(ctx.cfg.shapes, n)
    canvas = ctx.canvas("scene")
    shape = rng.choice(place_shapes(ctx, rng, canvas, list(zip(colours, kinds))))
    position = POSITIONS[shape.cell[0]][shape.cell[1]]
    # Colours and kinds are distinct within the scene, so every question names exactly one shape.
    question, answer = rng.choice((
        (f"What colour is the {shape.kind}?", shape.colour),
        (f"What shape is the {shape.colour} object?", shape.kind),
        (f"Is the {shape.colour} {shape.kind} small or large?", shape.size),
        (f"Where in the image is the {shape.colour} {shape.kind}?", position),
        (f"What colour is the shape at the {position}?", shape.colour),
    ))
    return Draft("vqa", [image_part(0), text_part(question)], THINK_OFF + answer, {"answer": answer}, [canvas],
                 {"shape": shape})


def build_interleaved(ctx: TaskContext, rng: random.Random) -> Draft:
    il = ctx.cfg.interleaved
    prompt, canvases, sentences, total = [], [], [], 0
    for i in range(rng.randint(il.min_images, il.max_images)):
        canvas = ctx.canvas("scene")
        shapes = place_shapes(ctx, rng, canvas, random_looks(ctx, rng, rng.randint(1, il.max_shapes)))
        prompt += [text_part(f"Picture {i + 1}:"), image_part(i)]
        description = describe_scene(shapes)
        sentences.append(f"Picture {i + 1} shows {description[0].lower()}{description[1:]}")
        canvases.append(canvas)
        total += len(shapes)
    prompt.append(text_part("Describe each picture and count the shapes in all of them."))
    answer = " ".join(sentences) + f" In total there are {total} shapes."
    return Draft("interleaved", prompt, THINK_OFF + answer, None, canvases, {"total": total})


def build_ocr(ctx: TaskContext, rng: random.Random) -> Draft:
    cfg = ctx.cfg.ocr
    canvas = ctx.canvas("text_line")
    words = rng.sample(cfg.words, rng.randint(1, cfg.max_words))
    text = " ".join(words)
    if text_extent(text, ctx.cfg.font_size)[2] > canvas.width - 2 * cfg.margin:
        text = words[0]
    place_text(ctx, rng, canvas, text, as_rgb(rng.choice(cfg.text_colours)), cfg.margin)
    return Draft("ocr", [image_part(0), text_part("What text is written in the image?")], THINK_OFF + text,
                 {"answer": text}, [canvas])


def _arithmetic(rng: random.Random, add_max: int, mul_max: int) -> tuple[int, str, int]:
    op = rng.choice(("+", "-", TIMES))
    if op == TIMES:
        return rng.randint(2, mul_max), op, rng.randint(2, mul_max)
    a, b = rng.randint(0, add_max), rng.randint(0, add_max)
    return (max(a, b), op, min(a, b)) if op == "-" else (a, op, b)


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def build_math(ctx: TaskContext, rng: random.Random) -> Draft:
    a, op, b = _arithmetic(rng, ctx.cfg.math.add_max, ctx.cfg.math.mul_max)
    result = _apply(a, op, b)
    canvas = ctx.canvas("text_line")
    place_text(ctx, rng, canvas, image_form(f"{a} {op} {b} = ?"), (0, 0, 0), ctx.cfg.math.margin)
    answer = f"{a} {op} {b} = {result}, so the answer is \\boxed{{{result}}}."
    return Draft("math", [image_part(0), text_part(f"Solve the problem in the image. {BOXED_HINT}")],
                 THINK_OFF + answer, {"answer": str(result)}, [canvas], {"expression": f"{a} {op} {b}"})


def build_chart(ctx: TaskContext, rng: random.Random) -> Draft:
    cfg = ctx.cfg.chart
    canvas = ctx.canvas("chart")
    n = rng.randint(cfg.min_bars, cfg.max_bars)
    labels = sorted(rng.sample(cfg.labels, n), key=cfg.labels.index)
    values = [rng.randint(1, cfg.max_value) for _ in labels]
    left, right = cfg.margin, canvas.width - cfg.margin
    axis_y = canvas.height - cfg.label_band
    unit = (axis_y - cfg.margin - cfg.value_band) // cfg.max_value
    slot = (right - left) / n
    bar_width = max(1, int(slot * cfg.bar_fill))
    axis_rgb, text_rgb = as_rgb(cfg.axis_colour), as_rgb(cfg.text_colour)
    bars = []
    for i, (label, value) in enumerate(zip(labels, values)):
        x1 = left + int(i * slot + (slot - bar_width) / 2)
        box = (x1, axis_y - value * unit, x1 + bar_width, axis_y)
        centre = (box[0] + box[2]) // 2
        canvas.items += [
            Rect(box, rng.choice(ctx.colours)[1]),
            Text((centre, box[1] - 2), str(value), text_rgb, ctx.cfg.font_size, "mb"),
            Text((centre, axis_y + 3), label, text_rgb, ctx.cfg.font_size, "mt"),
        ]
        bars.append({"label": label, "value": value, "box": box})
    canvas.items.append(Rect((left, axis_y, right, axis_y + 1), axis_rgb))
    top = max(values)
    if values.count(top) == 1 and rng.random() < 0.5:
        question, answer = "Which bar has the highest value?", labels[values.index(top)]
    else:
        bar = rng.randrange(n)
        question, answer = f"What is the value of bar {labels[bar]}?", str(values[bar])
    return Draft("chart", [image_part(0), text_part(question)], THINK_OFF + answer, {"answer": answer}, [canvas],
                 {"bars": bars, "unit": unit})


def build_gui(ctx: TaskContext, rng: random.Random) -> Draft:
    cfg = ctx.cfg.gui
    canvas = ctx.canvas("gui", as_rgb(cfg.screen_colour))
    canvas.items.append(Rect((0, 0, canvas.width, cfg.title_bar), as_rgb(cfg.title_colour)))
    slot_w = canvas.width // cfg.columns
    slot_h = (canvas.height - cfg.title_bar) // cfg.rows
    n = rng.randint(cfg.min_buttons, cfg.max_buttons)
    buttons = []
    for label, slot in zip(rng.sample(cfg.labels, n), rng.sample(range(cfg.columns * cfg.rows), n)):
        row, col = divmod(slot, cfg.columns)
        width = text_extent(label, ctx.cfg.font_size)[2] + 2 * rng.randint(*cfg.padding)
        height = rng.randint(*cfg.height)
        x = col * slot_w + rng.randint(0, slot_w - width)
        y = cfg.title_bar + row * slot_h + rng.randint(0, slot_h - height)
        box = (x, y, x + width, y + height)
        canvas.items += [
            Rect(box, as_rgb(cfg.button_colour), as_rgb(cfg.border_colour)),
            Text(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2), label, as_rgb(cfg.text_colour),
                 ctx.cfg.font_size, "mm"),
        ]
        buttons.append({"label": label, "box": box})
    button = rng.choice(buttons)
    box = ctx.model_box(canvas, button["box"])
    action = {"action": "click", "start_point": ctx.model_point(canvas, button["box"])}
    prompt = f'Click the "{button["label"]}" button. Answer with the action in JSON.'
    return Draft("gui", [image_part(0), text_part(prompt)], THINK_OFF + json.dumps(action),
                 {"box": box, "action": "click", "label": button["label"]}, [canvas],
                 {"buttons": buttons, "button": button})


def _grounded_scene(ctx: TaskContext, rng: random.Random) -> tuple[Canvas, Shape, list[int], str]:
    canvas = ctx.canvas("scene")
    shapes = place_shapes(ctx, rng, canvas, distinct_looks(ctx, rng, rng.randint(1, ctx.cfg.scene.max_shapes)))
    shape = rng.choice(shapes)
    return canvas, shape, ctx.model_box(canvas, shape.box), f"{shape.colour} {shape.kind}"


def build_grounding(ctx: TaskContext, rng: random.Random) -> Draft:
    canvas, shape, box, label = _grounded_scene(ctx, rng)
    prompt = f"Locate the {label} in the image and output its bbox coordinates in JSON format."
    answer = json.dumps([{"bbox_2d": box, "label": label}])
    return Draft("grounding", [image_part(0), text_part(prompt)], THINK_OFF + answer,
                 {"box": box, "label": label}, [canvas], {"shape": shape})


def build_point(ctx: TaskContext, rng: random.Random) -> Draft:
    canvas, shape, box, label = _grounded_scene(ctx, rng)
    prompt = f"Point to the {label} in the image and output its coordinates in JSON format."
    answer = json.dumps([{"point_2d": ctx.model_point(canvas, shape.box), "label": label}])
    return Draft("point", [image_part(0), text_part(prompt)], THINK_OFF + answer,
                 {"box": box, "label": label}, [canvas], {"shape": shape})


def build_counting(ctx: TaskContext, rng: random.Random) -> Draft:
    canvas = ctx.canvas("scene")
    shapes = place_shapes(ctx, rng, canvas, random_looks(ctx, rng, rng.randint(1, ctx.cfg.scene.max_count)))
    if rng.random() < 0.5:
        question, count = "How many shapes are there in the image?", len(shapes)
    else:
        kind = rng.choice(shapes).kind
        question, count = f"How many {kind}s are there in the image?", sum(s.kind == kind for s in shapes)
    return Draft("counting", [image_part(0), text_part(question)], THINK_OFF + str(count), {"count": count},
                 [canvas])


def _reason_points(ctx: TaskContext, rng: random.Random) -> Draft:
    cfg = ctx.cfg.reasoning
    canvas = ctx.canvas("scene")
    shapes = place_shapes(ctx, rng, canvas, random_looks(ctx, rng, rng.randint(cfg.min_shapes, cfg.max_shapes)))
    # The scoring colours are drawn from the shapes' own colours first, so most puzzles score something.
    present = sorted({s.colour for s in shapes}, key=[c for c, _ in ctx.colours].index)
    scorers = rng.sample(present, min(2, len(present)))
    scorers += rng.sample([c for c, _ in ctx.colours if c not in scorers], 2 - len(scorers))
    scoring = {colour: rng.randint(1, cfg.max_points) for colour in scorers}
    (c1, p1), (c2, p2) = scoring.items()
    question = (f"Each {c1} shape is worth {p1} points and each {c2} shape is worth {p2} points. Shapes of "
                f"other colours are worth nothing. How many points are the shapes in the image worth in total? "
                f"{BOXED_HINT}")
    lines = ["I will go through the shapes row by row, starting at the top left."]
    for s in sorted(shapes, key=lambda s: s.cell):
        worth = (f"{s.colour} shapes are worth {scoring[s.colour]} points" if s.colour in scoring
                 else f"{s.colour} shapes are worth nothing")
        lines.append(f"{position_phrase(s.cell).capitalize()} there is {describe(s)}: {worth}.")
    counts = {colour: sum(s.colour == colour for s in shapes) for colour in scoring}
    lines.append(f"So there are {counts[c1]} {c1} and {counts[c2]} {c2} shapes.")
    subtotals = {colour: counts[colour] * points for colour, points in scoring.items()}
    for colour, points in scoring.items():
        lines.append(f"The {colour} shapes give {counts[colour]} {TIMES} {points} = {subtotals[colour]} points.")
    total = subtotals[c1] + subtotals[c2]
    lines.append(f"Together: {subtotals[c1]} + {subtotals[c2]} = {total} points.")
    answer = "<think>\n" + "\n".join(lines) + f"\n</think>\nThe shapes are worth \\boxed{{{total}}} points."
    return Draft("reasoning", [image_part(0), text_part(question)], answer, {"answer": str(total)}, [canvas],
                 {"scoring": scoring})


def _reason_expression(ctx: TaskContext, rng: random.Random) -> Draft:
    cfg = ctx.cfg.reasoning
    numbers = [rng.randint(1, cfg.operand_max) for _ in range(rng.randint(*cfg.terms))]
    ops = [rng.choice(("+", "-", TIMES)) for _ in numbers[1:]]
    expression = " ".join([str(numbers[0])] + [f"{op} {n}" for op, n in zip(ops, numbers[1:])])
    canvas = ctx.canvas("text_line")
    place_text(ctx, rng, canvas, image_form(f"{expression} = ?"), (0, 0, 0), ctx.cfg.math.margin)
    lines = [f"The image shows the expression {image_form(expression)}."]
    if TIMES in ops:
        lines.append(f"{IMAGE_TIMES} is multiplication ({TIMES}), which comes before addition and subtraction.")
        while TIMES in ops:
            i = ops.index(TIMES)
            product = numbers[i] * numbers[i + 1]
            lines.append(f"{numbers[i]} {TIMES} {numbers[i + 1]} = {product}.")
            numbers[i:i + 2] = [product]
            del ops[i]
        if ops:
            rest = " ".join([str(numbers[0])] + [f"{op} {n}" for op, n in zip(ops, numbers[1:])])
            lines.append(f"Now the expression is {rest}.")
    if ops:
        lines.append("Addition and subtraction go from left to right.")
    value = numbers[0]
    for op, n in zip(ops, numbers[1:]):
        lines.append(f"{value} {op} {n} = {_apply(value, op, n)}.")
        value = _apply(value, op, n)
    lines.append(f"So the value is {value}.")
    answer = "<think>\n" + "\n".join(lines) + f"\n</think>\nThe answer is \\boxed{{{value}}}."
    question = f"Compute the value of the expression in the image step by step. {BOXED_HINT}"
    return Draft("reasoning", [image_part(0), text_part(question)], answer, {"answer": str(value)}, [canvas],
                 {"expression": expression})


def build_reasoning(ctx: TaskContext, rng: random.Random) -> Draft:
    return _reason_points(ctx, rng) if rng.random() < 0.5 else _reason_expression(ctx, rng)


def build_text(ctx: TaskContext, rng: random.Random) -> Draft:
    cfg = ctx.cfg.text
    a, b = rng.sample(cfg.names, 2)
    item = rng.choice(cfg.items)
    kind = rng.randrange(4)
    if kind == 0:
        x, y = rng.randint(1, cfg.max_number), rng.randint(1, cfg.max_number)
        result = x + y
        question = f"{a} has {x} {item}. {b} gives {a} {y} more {item}. How many {item} does {a} have now?"
        working = f"{a} has {x} + {y} = {result} {item}."
    elif kind == 1:
        x, y = sorted((rng.randint(1, cfg.max_number), rng.randint(1, cfg.max_number)), reverse=True)
        result = x - y
        question = f"{a} has {x} {item} and gives {y} of them to {b}. How many {item} does {a} have left?"
        working = f"{a} has {x} - {y} = {result} {item} left."
    elif kind == 2:
        x, y = rng.randint(2, cfg.mul_max), rng.randint(2, cfg.mul_max)
        result = x * y
        question = f"{a} buys {x} packs of {item} with {y} {item} in each pack. How many {item} does {a} buy?"
        working = f"{a} buys {x} {TIMES} {y} = {result} {item}."
    else:
        x, y = rng.randint(1, cfg.max_number), rng.randint(1, cfg.max_number)
        z = rng.randint(1, x + y)
        result = x + y - z
        question = (f"{a} has {x} {item} and {b} has {y} {item}. Together they give {z} {item} away. "
                    f"How many {item} do they have left?")
        working = f"Together they have {x} + {y} = {x + y} {item}. After giving {z} away: {x + y} - {z} = {result}."
    answer = f"{working} The answer is \\boxed{{{result}}}."
    return Draft("text", [text_part(f"{question} {BOXED_HINT}")], THINK_OFF + answer, {"answer": str(result)}, [])


BUILDERS: dict[str, Callable[[TaskContext, random.Random], Draft]] = {
    "caption": build_caption,
    "vqa": build_vqa,
    "interleaved": build_interleaved,
    "ocr": build_ocr,
    "grounding": build_grounding,
    "point": build_point,
    "counting": build_counting,
    "math": build_math,
    "chart": build_chart,
    "gui": build_gui,
    "reasoning": build_reasoning,
    "text": build_text,
}
