"""extract.parse_grounding: MiMo-VL's evaluation parser for grounding answers, case by case."""
from __future__ import annotations

import pytest

from rewards import extract


@pytest.mark.parametrize("text,box", [
    ('[{"bbox_2d": [10, 20, 30, 40], "label": "the cat"}]', (10.0, 20.0, 30.0, 40.0)),
    ("The box is [1.5, 2, 3.25, 4].", (1.5, 2.0, 3.25, 4.0)),
    ("(100,200,300,400)", (100.0, 200.0, 300.0, 400.0)),
    ("[ 1 , 2 , 3 , 4 ]", (1.0, 2.0, 3.0, 4.0)),
    # [..] anywhere wins over an earlier (..): the fork searches square brackets first
    ("(1, 2, 3, 4) or [5, 6, 7, 8]", (5.0, 6.0, 7.0, 8.0)),
    ("[5, 6, 7, 8] then [1, 2, 3, 4]", (5.0, 6.0, 7.0, 8.0)),
    # a box anywhere wins over an earlier point
    ("click [3, 4], box (1, 2, 5, 6)", (1.0, 2.0, 5.0, 6.0)),
    ("click [3, 4]", (3.0, 4.0, 3.0, 4.0)),
    ("click (0.25, 0.5)", (0.25, 0.5, 0.25, 0.5)),
    ("[-1, -1]", (-1.0, -1.0, -1.0, -1.0)),
    # commas separate coordinates: never a thousands separator
    ("[1,000,2,000]", (1.0, 0.0, 2.0, 0.0)),
])
def test_parses_the_first_box_then_the_first_point(text, box):
    assert extract.parse_grounding(text) == box


@pytest.mark.parametrize("text", [
    "", "no numbers", "[1, 2, 3]", "[1, 2, 3, 4, 5]", "(1, 2]", "[1; 2; 3; 4]", "[a, b, c, d]", "[1e3, 2e3]",
    "[" + "9" * 400 + ", 1]",  # overflows to inf
])
def test_nothing_to_read(text):
    assert extract.parse_grounding(text) is None


def test_linear_on_pathological_input():
    digits = "1" * 200_000
    assert extract.parse_grounding("[" + digits) is None
    assert extract.parse_grounding("[1," * 100_000) is None
    assert extract.parse_grounding("(" + " " * 200_000) is None
    assert extract.parse_grounding("[" * 100_000 + "]" * 100_000) is None
