"""Box and interval overlap: IoU, GIoU (Rezatofighi et al., 2019), point-in-box, point-in-polygon and
temporal IoU.

Boxes are (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2 in absolute pixels; plain floats, no numpy, so
one call costs about a microsecond.
"""
from __future__ import annotations

import math
from collections.abc import Sequence


def is_valid_box(box: Sequence[float], allow_empty: bool) -> bool:
    """Four finite coordinates, not inverted; zero width or height only when `allow_empty`."""
    x1, y1, x2, y2 = box
    if not (math.isfinite(x1) and math.isfinite(y1) and math.isfinite(x2) and math.isfinite(y2)):
        return False
    if allow_empty:
        return x1 <= x2 and y1 <= y2
    return x1 < x2 and y1 < y2


def iou(pred: Sequence[float], gold: Sequence[float]) -> float:
    """Intersection over union in [0, 1]. `gold` must have positive area; `pred` may be empty (a point: 0)."""
    px1, py1, px2, py2 = pred
    gx1, gy1, gx2, gy2 = gold
    inter_w = min(px2, gx2) - max(px1, gx1)
    inter_h = min(py2, gy2) - max(py1, gy1)
    if inter_w <= 0.0 or inter_h <= 0.0:
        return 0.0
    inter = inter_w * inter_h
    return inter / ((px2 - px1) * (py2 - py1) + (gx2 - gx1) * (gy2 - gy1) - inter)


def giou(pred: Sequence[float], gold: Sequence[float]) -> float:
    """Generalised IoU in [-1, 1]. `gold` must have positive area; `pred` may be empty (a point)."""
    px1, py1, px2, py2 = pred
    gx1, gy1, gx2, gy2 = gold
    inter_w = min(px2, gx2) - max(px1, gx1)
    inter_h = min(py2, gy2) - max(py1, gy1)
    inter = inter_w * inter_h if inter_w > 0.0 and inter_h > 0.0 else 0.0
    union = (px2 - px1) * (py2 - py1) + (gx2 - gx1) * (gy2 - gy1) - inter
    hull = (max(px2, gx2) - min(px1, gx1)) * (max(py2, gy2) - min(py1, gy1))
    return inter / union - (hull - union) / hull


def point_in_box(x: float, y: float, box: Sequence[float]) -> bool:
    """Whether (x, y) lies in the box, edges included."""
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def point_in_polygon(x: float, y: float, vertices: Sequence[tuple[float, float]]) -> bool:
    """Whether (x, y) lies in the simple polygon with these vertices (in order, not closed), edges included.

    Even-odd ray casting to +x; a point on any edge (within float rounding of the cross product) counts as in.
    """
    inside = False
    count = len(vertices)
    for index in range(count):
        ax, ay = vertices[index]
        bx, by = vertices[(index + 1) % count]
        cross = (bx - ax) * (y - ay) - (by - ay) * (x - ax)
        scale = max(abs(bx - ax), abs(by - ay), 1.0) * max(abs(x - ax), abs(y - ay), 1.0)
        if (abs(cross) <= 1e-12 * scale and min(ax, bx) <= x <= max(ax, bx)
                and min(ay, by) <= y <= max(ay, by)):
            return True
        if (ay > y) != (by > y) and x < ax + (y - ay) * (bx - ax) / (by - ay):
            inside = not inside
    return inside


def temporal_iou(pred: tuple[float, float], gold: tuple[float, float]) -> float:
    """IoU of two [start, end] spans: overlap / (latest end - earliest start); gold must have length."""
    overlap = min(pred[1], gold[1]) - max(pred[0], gold[0])
    if overlap <= 0.0:
        return 0.0
    return overlap / (max(pred[1], gold[1]) - min(pred[0], gold[0]))
