"""Box arithmetic: IoU, non-maximum suppression, scaling, rasterising box/ellipse masks.

Boxes are `(N, 4) float32 xyxy` in pixels; a box covers pixel centres `x + 0.5` inside
`[x1, x2) x [y1, y2)`.
"""
from __future__ import annotations

import math

from kernels._xp import get_array_module

__all__ = ["iou_matrix", "nms", "batched_nms", "scale_boxes", "box_to_int", "shape_mask"]


def iou_matrix(a, b):
    """(N, 4) x (M, 4) xyxy -> (N, M) IoU (float areas)."""
    xp = get_array_module(a, b)
    tl = xp.maximum(a[:, None, :2], b[None, :, :2])
    br = xp.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = xp.clip(br - tl, 0, None).prod(-1)
    area_a = xp.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = xp.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return xp.where(union > 0, inter / xp.where(union > 0, union, 1), 0)


def nms(boxes, scores, iou_threshold: float):
    """Greedy NMS. Returns kept indices (int64), highest score first.

    Suppresses a box when IoU with a kept, higher-scoring box is >= iou_threshold. Each kept
    box's IoU row is computed against the boxes after it only (the values of the full IoU
    matrix's row, without the N x N matrix: 15,000 low-threshold candidates of a 32 MP image
    needed gigabytes).
    """
    xp = get_array_module(boxes, scores)
    order = xp.argsort(-scores, kind="stable")
    if order.size == 0:
        return order.astype(xp.int64)
    ordered = boxes[order]
    host = ordered.get() if hasattr(ordered, "get") else ordered   # the greedy loop is sequential
    import numpy as np
    n = order.size
    sup = np.zeros(n, dtype=bool)
    keep = []
    if n <= 1024:                                  # a few MB: the whole matrix at once is faster
        iou = iou_matrix(host, host)
        for i in range(n):
            if not sup[i]:
                keep.append(i)
                sup |= iou[i] >= iou_threshold
        return order[xp.asarray(keep, dtype=xp.int64)]
    for i in range(n):
        if sup[i]:
            continue
        keep.append(i)
        if i + 1 < n:
            rest = np.flatnonzero(~sup[i + 1:]) + i + 1
            if rest.size:
                sup[rest[iou_matrix(host[i:i + 1], host[rest])[0] >= iou_threshold]] = True
    return order[xp.asarray(keep, dtype=xp.int64)]


def batched_nms(boxes, scores, classes, iou_threshold: float):
    """NMS per class: boxes of different classes never suppress each other."""
    xp = get_array_module(boxes, scores)
    if boxes.shape[0] == 0:
        return xp.zeros((0,), xp.int64)
    span = float(boxes.max()) + 1.0
    shifted = boxes + (classes.astype(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold)


def scale_boxes(boxes, factor: float):
    """Scale boxes about their centres by `factor` (e.g. 1.3 to cover a whole head)."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (factor / 2)
    xp = get_array_module(boxes)
    return xp.concatenate([c - half, c + half], axis=1)


def box_to_int(box, h: int, w: int):
    """xyxy float -> (x0, y0, x1, y1) ints covering every touched pixel, clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (max(0, math.floor(x1)), max(0, math.floor(y1)),
            min(w, math.ceil(x2)), min(h, math.ceil(y2)))


def shape_mask(xp, box, ibox, shape: str):
    """Box-local bool mask of `shape` ("box" or "ellipse") for float `box` on int box `ibox`.

    returns (y1-y0, x1-x0) bool on the module `xp`.
    """
    x0, y0, x1, y1 = ibox
    hh, ww = y1 - y0, x1 - x0
    if shape == "box":
        return xp.ones((hh, ww), dtype=bool)
    if shape != "ellipse":
        raise ValueError(f"unknown mask shape {shape!r}; valid: box, ellipse")
    bx1, by1, bx2, by2 = (float(v) for v in box)
    cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
    rx, ry = max((bx2 - bx1) / 2, 0.5), max((by2 - by1) / 2, 0.5)
    ys = (xp.arange(y0, y1, dtype=xp.float32) + 0.5 - cy) / ry
    xs = (xp.arange(x0, x1, dtype=xp.float32) + 0.5 - cx) / rx
    return (ys[:, None] ** 2 + xs[None, :] ** 2) <= 1.0
