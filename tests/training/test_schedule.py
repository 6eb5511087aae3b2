"""lr_factor: linear warm-up, then cosine, linear or constant down to the floor, at known steps."""
from __future__ import annotations

import math

import pytest

from training.config import ScheduleConfig
from training.schedule import lr_factor


def schedule(kind: str, warmup: int = 4, floor: float = 0.1) -> ScheduleConfig:
    return ScheduleConfig(kind=kind, warmup_steps=warmup, min_lr_ratio=floor)


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_warm_up_rises_linearly_to_the_peak(kind):
    assert [lr_factor(s, 14, schedule(kind)) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_decays_from_the_peak_through_the_midpoint_to_the_floor():
    cfg = schedule("cosine")   # 10 decay steps after 4 warm-up steps
    assert lr_factor(4, 14, cfg) == pytest.approx(1.0)
    assert lr_factor(9, 14, cfg) == pytest.approx(0.1 + 0.9 * 0.5)                            # halfway
    assert lr_factor(6, 14, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    assert lr_factor(14, 14, cfg) == pytest.approx(0.1)
    assert lr_factor(40, 14, cfg) == pytest.approx(0.1)                                       # stays there


def test_linear_decays_in_equal_steps_to_the_floor():
    cfg = schedule("linear", floor=0.0)
    assert [lr_factor(s, 14, cfg) for s in (4, 6, 9, 14)] == pytest.approx([1.0, 0.8, 0.5, 0.0])


def test_constant_holds_the_peak_after_warm_up():
    assert [lr_factor(s, 14, schedule("constant")) for s in (4, 9, 13, 20)] == [1.0, 1.0, 1.0, 1.0]


def test_no_warm_up_starts_at_the_peak():
    assert lr_factor(0, 10, schedule("cosine", warmup=0)) == pytest.approx(1.0)
    assert lr_factor(5, 10, schedule("linear", warmup=0, floor=0.0)) == pytest.approx(0.5)
