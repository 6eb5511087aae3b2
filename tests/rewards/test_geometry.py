"""GIoU and temporal IoU against independent implementations."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from rewards.geometry import giou, iou, point_in_box, point_in_polygon, temporal_iou


def reference_giou(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Vectorised GIoU in the style of torchvision.ops.generalized_box_iou (clamped widths)."""
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_g = (gold[:, 2] - gold[:, 0]) * (gold[:, 3] - gold[:, 1])
    wh = np.clip(np.minimum(pred[:, 2:], gold[:, 2:]) - np.maximum(pred[:, :2], gold[:, :2]), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    union = area_p + area_g - inter
    hull_wh = np.maximum(pred[:, 2:], gold[:, 2:]) - np.minimum(pred[:, :2], gold[:, :2])
    hull = hull_wh[:, 0] * hull_wh[:, 1]
    return inter / union - (hull - union) / hull


def random_boxes(rng: np.random.Generator, n: int, allow_empty: bool) -> np.ndarray:
    corners = rng.uniform(-50, 1000, size=(n, 2))
    sizes = rng.uniform(0 if allow_empty else 0.5, 400, size=(n, 2))
    if allow_empty:
        sizes[rng.random(n) < 0.1, 0] = 0.0  # some zero-width predictions
    return np.concatenate([corners, corners + sizes], axis=1)


def test_giou_matches_reference_on_random_boxes():
    rng = np.random.default_rng(0)
    pred, gold = random_boxes(rng, 20_000, True), random_boxes(rng, 20_000, False)
    gold[:500] = pred[:500] + rng.uniform(-5, 5, size=(500, 4))  # many overlapping pairs too
    gold[:500, 2:] = np.maximum(gold[:500, 2:], gold[:500, :2] + 1)
    ours = np.array([giou(p.tolist(), g.tolist()) for p, g in zip(pred, gold)])
    np.testing.assert_allclose(ours, reference_giou(pred, gold), rtol=1e-12, atol=1e-12)
    assert ours.min() >= -1.0 and ours.max() <= 1.0
    assert (ours[:500] > -1).all() and (ours > 0).sum() > 100


def _exact_giou(p: list[int], g: list[int]) -> Fraction:
    inter_w = max(0, min(p[2], g[2]) - max(p[0], g[0]))
    inter_h = max(0, min(p[3], g[3]) - max(p[1], g[1]))
    inter = Fraction(inter_w * inter_h)
    union = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
    hull = (max(p[2], g[2]) - min(p[0], g[0])) * (max(p[3], g[3]) - min(p[1], g[1]))
    return inter / union - (hull - union) / Fraction(hull)


def test_giou_matches_exact_rational_arithmetic_on_integer_boxes():
    rng = np.random.default_rng(1)
    for _ in range(3_000):
        x1, y1, x2, y2 = (int(v) for v in rng.integers(0, 60, size=4))
        p = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
        a, b = (int(v) for v in rng.integers(0, 50, size=2))
        g = [a, b, a + int(rng.integers(1, 20)), b + int(rng.integers(1, 20))]
        assert giou(p, g) == pytest.approx(float(_exact_giou(p, g)), abs=1e-12)


def test_giou_identity_and_symmetry():
    box = [3.0, 4.0, 10.5, 20.0]
    assert giou(box, box) == 1.0
    other = [5.0, 1.0, 30.0, 12.0]
    assert giou(box, other) == pytest.approx(giou(other, box), abs=1e-15)


def test_giou_approaches_minus_one_far_apart():
    assert giou([0, 0, 1, 1], [1e6, 1e6, 1e6 + 1, 1e6 + 1]) == pytest.approx(-1.0, abs=1e-6)


def test_temporal_iou_matches_sampled_reference():
    rng = np.random.default_rng(2)
    grid = np.arange(0, 100, 0.01) + 0.005  # cell centres of 0.01 s cells
    for _ in range(200):
        s1, e1 = sorted(rng.uniform(0, 100, 2).round(2))
        s2, e2 = sorted(rng.uniform(0, 100, 2).round(2))
        if e2 - s2 < 0.01:
            continue
        a, b = (grid > s1) & (grid < e1), (grid > s2) & (grid < e2)
        overlap = (a & b).sum()
        expected = overlap / ((grid > min(s1, s2)) & (grid < max(e1, e2))).sum() if overlap else 0.0
        assert temporal_iou((s1, e1), (s2, e2)) == pytest.approx(expected, abs=2e-3)


def test_point_in_box_edges():
    box = [0.0, 0.0, 10.0, 5.0]
    assert point_in_box(0.0, 0.0, box) and point_in_box(10.0, 5.0, box)
    assert not point_in_box(10.0001, 1.0, box) and not point_in_box(1.0, -0.0001, box)


def reference_iou(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Vectorised IoU in the style of torchvision.ops.box_iou (clamped intersection)."""
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_g = (gold[:, 2] - gold[:, 0]) * (gold[:, 3] - gold[:, 1])
    wh = np.clip(np.minimum(pred[:, 2:], gold[:, 2:]) - np.maximum(pred[:, :2], gold[:, :2]), 0, None)
    inter = wh[:, 0] * wh[:, 1]
    return inter / (area_p + area_g - inter)


def test_iou_matches_reference_on_random_boxes():
    rng = np.random.default_rng(3)
    pred, gold = random_boxes(rng, 20_000, True), random_boxes(rng, 20_000, False)
    gold[:500] = pred[:500] + rng.uniform(-5, 5, size=(500, 4))
    gold[:500, 2:] = np.maximum(gold[:500, 2:], gold[:500, :2] + 1)
    ours = np.array([iou(p.tolist(), g.tolist()) for p, g in zip(pred, gold)])
    np.testing.assert_allclose(ours, reference_iou(pred, gold), rtol=1e-12, atol=1e-12)
    assert ours.min() >= 0.0 and ours.max() <= 1.0 and (ours[:500] > 0).sum() > 100


def test_iou_hand_cases():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0   # touching edges: no area in common
    assert iou([3, 3, 3, 3], [0, 0, 10, 10]) == 0.0      # a point has no area


def test_point_in_polygon_matches_matplotlib_off_the_edges():
    from matplotlib.path import Path as MplPath

    rng = np.random.default_rng(4)
    for _ in range(200):
        count = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, count))
        radii = rng.uniform(5, 50, count)  # star-shaped, often concave
        vertices = np.stack([100 + radii * np.cos(angles), 100 + radii * np.sin(angles)], axis=1)
        path = MplPath(vertices, closed=False)
        points = rng.uniform(40, 160, size=(50, 2))
        expected = path.contains_points(points)
        # a point within 1e-6 of an edge is where the two may differ (matplotlib leaves edges undefined)
        near = MplPath(vertices).contains_points(points, radius=1e-6) != MplPath(vertices).contains_points(
            points, radius=-1e-6)
        ours = np.array([point_in_polygon(x, y, [tuple(v) for v in vertices]) for x, y in points])
        assert (ours[~near] == expected[~near]).all()


def test_point_in_polygon_edges_and_concavity():
    # an L shape: the notch (6, 6) is outside, the arms are inside
    shape = [(0, 0), (10, 0), (10, 4), (4, 4), (4, 10), (0, 10)]
    assert point_in_polygon(2, 8, shape) and point_in_polygon(8, 2, shape)
    assert not point_in_polygon(6, 6, shape) and not point_in_polygon(-0.001, 5, shape)
    for vertex in shape:
        assert point_in_polygon(*vertex, shape)
    assert point_in_polygon(7, 4, shape) and point_in_polygon(4, 7, shape) and point_in_polygon(0, 5, shape)
    triangle = [(0, 0), (10, 0), (0, 10)]
    assert point_in_polygon(5, 5, triangle) and not point_in_polygon(5.01, 5.01, triangle)
