"""Builders of the synthetic preference pairs: a task's draft (data/synth_tasks.py) whose true answer is `chosen`
and whose `rejected` is that answer with exactly one fact changed.

The facts (conf/data/synthetic.yaml `preference.kinds`) and the drafts they change:
- colour: one shape of a caption takes another colour; a vqa colour answer becomes another colour;
- count: a counting answer becomes another count;
- position: one shape of a caption moves to an empty cell of the grid; a vqa position answer becomes another one;
- number: the result of a math problem (image) or of a text word problem (text only), where the working states it
  last and in the box, or a chart bar's value, becomes another number.
A changed count or number is the true one plus or minus 1..max_offset, inside the range the true ones take
(counts 1..scene.max_count, bar values 1..chart.max_value, results >= 0), and a moved shape is described again in
reading order, as every caption is: the rejected answer keeps the chosen one's template and vocabulary, so only the
fact tells them apart. It is false by construction: each grid cell holds one shape, counts and numbers are exact.
"""
from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from typing import Any, Callable

from data.config import GRID
from data.render import Canvas
from data.synth_tasks import BUILDERS, POSITIONS, THINK_OFF, Draft, TaskContext, describe_scene

POSITION_WORDS = tuple(word for row in POSITIONS for word in row)


@dataclass
class PairDraft:
    """One planned preference pair: the task's draft (prompt, canvases, true answer) and the changed answer."""

    kind: str  # the fact changed: colour | count | position | number
    draft: Draft
    rejected: str

    @property
    def prompt(self) -> list[dict[str, Any]]:
        return self.draft.prompt

    @property
    def canvases(self) -> list[Canvas]:
        return self.draft.canvases

    @property
    def chosen(self) -> str:
        return self.draft.answer

    @property
    def source(self) -> str:
        return f"synthetic:{self.kind}"


def offset(rng: random.Random, value: int, max_offset: int, low: int = 0, high: int | None = None) -> int | None:
    """`value` plus or minus 1..max_offset inside [low, high]; None when no such number exists."""
    choices = [value + d for d in range(-max_offset, max_offset + 1)
               if d and low <= value + d and (high is None or value + d <= high)]
    return rng.choice(choices) if choices else None


def _other(rng: random.Random, value: str, choices: list[str] | tuple[str, ...]) -> str:
    return rng.choice([c for c in choices if c != value])


def _caption_colour(ctx: TaskContext, rng: random.Random, draft: Draft, max_offset: int) -> str | None:
    shapes = draft.canvases[0].shapes()
    i = rng.randrange(len(shapes))
    new = _other(rng, shapes[i].colour, [c for c, _ in ctx.colours])
    shapes[i] = dataclasses.replace(shapes[i], colour=new, rgb=ctx.rgb(new))
    return THINK_OFF + describe_scene(shapes)


def _caption_position(ctx: TaskContext, rng: random.Random, draft: Draft, max_offset: int) -> str | None:
    shapes = draft.canvases[0].shapes()
    free = sorted({divmod(cell, GRID) for cell in range(GRID * GRID)} - {s.cell for s in shapes})
    if not free:
        return None
    i = rng.randrange(len(shapes))
    # Described again in reading order, as every caption is: the order of the phrases gives nothing away.
    shapes[i] = dataclasses.replace(shapes[i], cell=rng.choice(free))
    return THINK_OFF + describe_scene(shapes)


def _vqa_colour(ctx: TaskContext, rng: random.Random, draft: Draft, max_offset: int) -> str | None:
    answer = draft.target["answer"]
    colours = [c for c, _ in ctx.colours]
    return THINK_OFF + _other(rng, answer, colours) if answer in colours else None


def _vqa_position(ctx: TaskContext, rng: random.Random, draft: Draft, max_offset: int) -> str | None:
    answer = draft.target["answer"]
    return THINK_OFF + _other(rng, answer, POSITION_WORDS) if answer in POSITION_WORDS else None


def _count(ctx: TaskContext, rng: random.Random, draft: Draft, max_offset: int) -> str | None:
    wrong = offset(rng, draft.target["count"], max_offset, 1, ctx.cfg.scene.max_count)
    return None if wrong is None else THINK_OFF + str(wrong)


def _chart_value(ctx: TaskContext, rng: random.Random, draft: Draft, max_offset: int) -> str | None:
    answer = draft.target["answer"]
    if not answer.isdigit():  # "Which bar has the highest value?"
        return None
    wrong = offset(rng, int(answer), max_offset, 1, ctx.cfg.chart.max_value)
    return None if wrong is None else THINK_OFF + str(wrong)


def _result(ctx: TaskContext, rng: random.Random, draft: Draft, max_offset: int) -> str | None:
    """The answer with its result (the working's last "= N" and the boxed N) changed."""
    truth = int(draft.target["answer"])
    boxed = f"\\boxed{{{truth}}}"
    if draft.answer.count(boxed) != 1:
        return None
    head, tail = draft.answer.split(boxed)
    stated = list(re.finditer(rf"= {truth}(?!\d)", head))
    if not stated:
        return None
    wrong = offset(rng, truth, max_offset)
    if wrong is None:
        return None
    last = stated[-1]
    return f"{head[:last.start()]}= {wrong}{head[last.end():]}\\boxed{{{wrong}}}{tail}"


Rejecter = Callable[[TaskContext, random.Random, Draft, int], str | None]
# Fact kind -> the tasks whose answers state it, and how each changes it.
REJECTERS: dict[str, dict[str, Rejecter]] = {
    "colour": {"caption": _caption_colour, "vqa": _vqa_colour},
    "count": {"counting": _count},
    "position": {"caption": _caption_position, "vqa": _vqa_position},
    "number": {"math": _result, "chart": _chart_value, "text": _result},
}


def build_pair(ctx: TaskContext, rng: random.Random, kind: str) -> PairDraft:
    """A pair whose rejected answer changes a fact of `kind`. A draft that does not state the fact (a vqa question
    about a shape's kind, a count with no other count in range) is drawn again, up to `max_attempts` times."""
    rejecters = REJECTERS[kind]
    for _ in range(ctx.cfg.max_attempts):
        task = rng.choice(sorted(rejecters))
        draft = BUILDERS[task](ctx, rng)
        rejected = rejecters[task](ctx, rng, draft, ctx.cfg.preference.max_offset)
        if rejected is not None:
            return PairDraft(kind, draft, rejected)
    raise RuntimeError(f"no '{kind}' pair after {ctx.cfg.max_attempts} drafts: its tasks' settings leave no other "
                       f"value to state (e.g. scene.max_count 1)")


def pair_builder(kind: str) -> Callable[[TaskContext, random.Random], PairDraft]:
    return lambda ctx, rng: build_pair(ctx, rng, kind)
