from __future__ import annotations

import random

import pytest

from rewards import extract
from rewards.functions import FUNCTION_NAMES, MATH, PREFERENCE, in_process_functions
from rewards.result import REASONS, TargetError
from tests.rewards.vectors import BAD_TARGETS, BRACE_BOMB, MEGABYTE_FILLER, VECTORS


@pytest.fixture(scope="module")
def functions(rewards_cfg):
    by_name = in_process_functions(rewards_cfg.chart.relative_tolerance)
    return {task: by_name[route.fn] for task, route in rewards_cfg.routes.items() if route.fn in by_name}


@pytest.mark.parametrize("task,response,target,reward,reason", VECTORS,
                         ids=[f"{v[0]}:{v[1][:30]!r}" for v in VECTORS])
def test_hand_vectors(functions, task, response, target, reward, reason):
    score = functions[task](response, target)
    assert score.reason == reason
    assert score.reward == pytest.approx(reward, abs=1e-12)


@pytest.mark.parametrize("task,response,target", BAD_TARGETS, ids=[f"{t[0]}:{t[2]!r}" for t in BAD_TARGETS])
def test_malformed_targets_raise(functions, task, response, target):
    with pytest.raises(TargetError):
        functions[task](response, target)


def test_every_function_name_is_implemented():
    assert set(in_process_functions(0.05)) | {MATH, PREFERENCE} == FUNCTION_NAMES


def test_rewards_stay_in_range_on_random_garbage(functions):
    rng = random.Random(0)
    alphabet = "[](){}\\boxed,.:-+e0123456789 abcxyz\"'\n点🐱" + "bbox_2d" + "point_2d" + "</think>"
    targets = {
        "grounding": {"box": [1, 2, 30, 40]}, "point": {"box": [1, 2, 30, 40]}, "counting": {"count": 3},
        "temporal": {"span": [1.0, 4.5]}, "choice": {"answer": "B"}, "vqa": {"answer": "red"},
        "ocr": {"answer": "hello"}, "chart": {"answer": "12%"}, "gui": {"action": "click", "box": [1, 2, 30, 40]},
    }
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        for task, target in targets.items():
            score = functions[task](text, target)
            assert 0.0 <= score.reward <= 1.0 and score.reason in REASONS, (task, text)


def test_chart_tolerance_comes_from_config():
    strict = in_process_functions(0.0)["chart"]
    loose = in_process_functions(0.1)["chart"]
    assert strict("46", {"answer": "45"}).reward == 0.0
    assert loose("49", {"answer": "45"}).reward == 1.0


def test_last_boxed_balances_braces():
    assert extract.last_boxed("\\boxed{1} and \\boxed{\\frac{1}{2}} end") == "\\frac{1}{2}"
    assert extract.last_boxed("\\boxed{{a}{b}}") == "{a}{b}"
    assert extract.last_boxed("\\boxed{unclosed") is None
    assert extract.last_boxed("no box") is None
    bomb = "\\boxed{" + "{" * 100_000 + "}" * 100_000 + "}"
    assert extract.last_boxed(bomb) == "{" * 100_000 + "}" * 100_000


def test_answer_region_and_final_answer():
    assert extract.answer_region("<think>a</think>b</think>c") == "c"
    assert extract.answer_region("plain") == "plain"
    assert extract.final_answer("<think>\\boxed{1}</think> so \\boxed{ 2 } ") == "2"
    assert extract.final_answer("<think>x</think>  the end  ") == "the end"


@pytest.mark.parametrize("text,seconds", [("07", 7.0), ("01:05", 65.0), ("1:02:03", 3723.0), ("00:05.5", 5.5),
                                          ("00:60", None), ("1:60:00", None)])
def test_parse_timestamp(text, seconds):
    assert extract.parse_timestamp(text) == seconds


@pytest.mark.parametrize("text,count", [("zero", 0), ("nineteen", 19), ("ninety nine", 99), ("forty", 40),
                                        ("-2", -2), ("2.50", 2.5), ("x2 and 4", 4), ("one or 2", 2)])
def test_parse_count(text, count):
    assert extract.parse_count(text) == count


@pytest.mark.parametrize("text,value", [("$1,200", 1200.0), ("45%", 0.45), ("3.", 3.0), (" -0.5 ", -0.5),
                                        ("1e3", 1000.0), ("1e999", None), ("abc", None)])
def test_whole_number(text, value):
    assert extract.whole_number(text) == value


def test_readers_are_linear_on_pathological_input():
    # Each would take seconds to minutes with a backtracking pattern; here they return at once.
    digits = "1" * 200_000
    assert extract.parse_box("[" + digits) is None
    assert extract.parse_span("[" + digits + ":" + digits) is None
    assert extract.parse_point("(" + " " * 200_000) is None
    assert extract.parse_number(digits) is None  # overflows to inf: no finite number
    assert extract.parse_count(digits + " and 3") == 3


@pytest.mark.parametrize("task", ["grounding", "point", "counting", "temporal", "choice", "vqa", "ocr", "chart", "gui"])
def test_megabyte_and_brace_bomb_responses(functions, task):
    targets = {
        "grounding": {"box": [1, 2, 30, 40]}, "point": {"box": [1, 2, 30, 40]}, "counting": {"count": 3},
        "temporal": {"span": [1.0, 4.5]}, "choice": {"answer": "B"}, "vqa": {"answer": "red"},
        "ocr": {"answer": "hello"}, "chart": {"answer": "12"}, "gui": {"action": "click", "box": [1, 2, 30, 40]},
    }
    for response in (MEGABYTE_FILLER, BRACE_BOMB, "{" * 100_000, "[" * 100_000):
        score = functions[task](response, targets[task])
        assert score.reason in ("ok", "unparseable") and 0.0 <= score.reward < 1e-3, (task, response[:20])
