"""Merging detections from several views (full pass, cutouts, mirrored pass) of one image.

Instances (segmenters): the reference rule of docs/reference.md §3.4 steps 5-6 — a mask from
one view that overlaps, by at least one pixel, a mask from another view is the same object:
union mask, union box, mean score, majority class (ties to the lowest class id). Unlike the
reference, the rule is applied transitively and symmetrically (union-find), every overlapping
instance is updated (not only the last), and no mask is counted twice. Detections of the same
view are never merged with each other: the model already separated them.

Boxes (detectors, test-time augmentation): NMS, weighted box fusion, or the enveloping box.

Conventions: boxes `(N, 4) float32 xyxy` in image pixels; masks are box-local bool arrays
with integer boxes `mask_boxes (N, 4) int64 x0, y0, x1, y1` (end-exclusive). Host (NumPy)
arrays: merging is control-heavy and runs on the host; device callers pass `.get()` results.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from kernels.boxes import iou_matrix

__all__ = ["MergedInstances", "merge_instances", "merge_boxes", "cluster_boxes", "class_counts", "BOX_MERGES"]

BOX_MERGES = ("nms", "wbf", "envelope")


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return [out[k] for k in sorted(out)]


@dataclass(frozen=True)
class MergedInstances:
    boxes: np.ndarray          # (M, 4) float32
    scores: np.ndarray         # (M,) float32, mean of the members
    classes: np.ndarray        # (M,) int32, majority vote, ties to the lowest id
    masks: list                # M box-local bool arrays
    mask_boxes: np.ndarray     # (M, 4) int64
    groups: list               # M lists of input indices


def _masks_overlap(ma, ba, mb, bb) -> bool:
    x0, y0 = max(ba[0], bb[0]), max(ba[1], bb[1])
    x1, y1 = min(ba[2], bb[2]), min(ba[3], bb[3])
    if x1 <= x0 or y1 <= y0:
        return False
    a = ma[y0 - ba[1]:y1 - ba[1], x0 - ba[0]:x1 - ba[0]]
    b = mb[y0 - bb[1]:y1 - bb[1], x0 - bb[0]:x1 - bb[0]]
    return bool((a & b).any())


def _majority(classes: np.ndarray) -> int:
    # bincount + argmax returns the first maximum: ties go to the lowest class id.
    return int(np.bincount(classes).argmax())


def merge_instances(boxes, scores, classes, masks: Sequence[np.ndarray], mask_boxes, views) -> MergedInstances:
    """Merge instances of different views whose masks share a pixel (see module doc).

    views (N,) int: which view each instance came from.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    mask_boxes = np.asarray(mask_boxes, np.int64).reshape(-1, 4)
    scores, classes, views = np.asarray(scores), np.asarray(classes, np.int64), np.asarray(views)
    n = len(boxes)
    uf = _UnionFind(n)
    if n > 1:
        # Vectorised prefilter: only pairs from different views whose integer boxes intersect.
        mb = mask_boxes
        inter = ((np.maximum(mb[:, None, 0], mb[None, :, 0]) < np.minimum(mb[:, None, 2], mb[None, :, 2]))
                 & (np.maximum(mb[:, None, 1], mb[None, :, 1]) < np.minimum(mb[:, None, 3], mb[None, :, 3]))
                 & (views[:, None] != views[None, :]))
        for i, j in zip(*np.nonzero(np.triu(inter, 1))):
            if uf.find(i) != uf.find(j) and _masks_overlap(masks[i], mb[i], masks[j], mb[j]):
                uf.union(int(i), int(j))
    groups = uf.groups()
    out_boxes, out_scores, out_classes, out_masks, out_mboxes = [], [], [], [], []
    for g in groups:
        gb = mask_boxes[g]
        x0, y0 = gb[:, 0].min(), gb[:, 1].min()
        x1, y1 = gb[:, 2].max(), gb[:, 3].max()
        u = np.zeros((y1 - y0, x1 - x0), bool)
        for i in g:
            bx0, by0, bx1, by1 = mask_boxes[i]
            u[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] |= masks[i]
        b = boxes[g]
        out_boxes.append([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()])
        out_scores.append(float(scores[g].mean()))
        out_classes.append(_majority(classes[g]))
        out_masks.append(u)
        out_mboxes.append([x0, y0, x1, y1])
    return MergedInstances(np.array(out_boxes, np.float32).reshape(-1, 4), np.array(out_scores, np.float32),
                           np.array(out_classes, np.int32), out_masks,
                           np.array(out_mboxes, np.int64).reshape(-1, 4), groups)


def _area(boxes: np.ndarray, convention: str) -> np.ndarray:
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    if convention == "int":                   # pixel-inclusive integer boxes: (x2 - x1 + 1)
        w, h = w + 1, h + 1
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def _iou(a: np.ndarray, b: np.ndarray, convention: str) -> np.ndarray:
    if convention == "float":
        return iou_matrix(a, b)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl + 1, 0, None).prod(-1)
    union = _area(a, "int")[:, None] + _area(b, "int")[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _ios(a: np.ndarray, b: np.ndarray, convention: str) -> np.ndarray:
    """Intersection over the smaller box: 1 when one box lies inside the other."""
    d = 1 if convention == "int" else 0
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl + d, 0, None).prod(-1)
    small = np.minimum(_area(a, convention)[:, None], _area(b, convention)[None, :])
    return np.where(small > 0, inter / np.where(small > 0, small, 1), 0.0)


def merge_boxes(boxes, scores, classes, *, method: str = "nms", iou_threshold: float = 0.5,
                pre_score: float = 0.0, post_score: float = 0.0, area: str = "float",
                num_passes: Optional[int] = None, overlap: str = "iou", views=None):
    """Merge boxes of the same class: `nms` keeps the best of each cluster, `wbf` averages a
    cluster's boxes weighted by score (score = mean over `num_passes` if given, as WBF does for
    several models/passes), `envelope` takes the cluster's enclosing box (score = max).

    pre_score drops boxes before merging, post_score after. area: "float" (x2 - x1) or "int"
    (x2 - x1 + 1, pixel-inclusive integer boxes). overlap: "iou", or "ios" (intersection over
    the smaller box: a partial box from a tile edge lies inside the whole one). views: (N,)
    view ids; boxes of the same view are never merged. Returns (boxes, scores, classes, groups).
    """
    if method not in BOX_MERGES:
        raise ValueError(f"unknown box merge {method!r}; valid: {', '.join(BOX_MERGES)}")
    if overlap not in ("iou", "ios"):
        raise ValueError(f"overlap must be 'iou' or 'ios', got {overlap!r}")
    if area not in ("float", "int"):
        raise ValueError(f"area must be 'float' or 'int', got {area!r}")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores, classes = np.asarray(scores, np.float32), np.asarray(classes, np.int64)
    idx = np.nonzero(scores >= pre_score)[0]
    out_b, out_s, out_c, out_g = [], [], [], []
    for c in np.unique(classes[idx]):
        members = idx[classes[idx] == c]
        order = members[np.argsort(-scores[members], kind="stable")]
        iou = (_ios if overlap == "ios" else _iou)(boxes[order], boxes[order], area)
        if views is not None:
            v = np.asarray(views)[order]
            iou = np.where((v[:, None] == v[None, :]) & ~np.eye(len(order), dtype=bool), 0.0, iou)
        taken = np.zeros(len(order), bool)
        for k in range(len(order)):               # greedy clustering around the best box
            if taken[k]:
                continue
            cluster = np.nonzero(~taken & (iou[k] >= iou_threshold))[0]
            cluster = np.union1d(cluster, [k])
            taken[cluster] = True
            g = order[cluster]
            b, s = boxes[g], scores[g]
            if method == "nms":
                box, score = boxes[order[k]], scores[order[k]]
            elif method == "envelope":
                box = np.array([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()], np.float32)
                score = s.max()
            else:
                box = (b * s[:, None]).sum(0) / s.sum()
                # WBF's confidence: the mean, lowered when fewer passes than `num_passes` agree.
                score = s.mean() * min(len(g), num_passes) / num_passes if num_passes else s.mean()
            out_b.append(box); out_s.append(score); out_c.append(c); out_g.append(g.tolist())
    keep = [i for i, s in enumerate(out_s) if s >= post_score]
    return (np.array([out_b[i] for i in keep], np.float32).reshape(-1, 4), np.array([out_s[i] for i in keep], np.float32),
            np.array([out_c[i] for i in keep], np.int32), [out_g[i] for i in keep])


def cluster_boxes(boxes, classes, views, *, threshold: float = 0.5, overlap: str = "ios") -> list[list[int]]:
    """Group boxes of the same class from *different* views that overlap (>= threshold),
    transitively: the box-detector counterpart of `merge_instances`, used to count each object
    once when a full pass and several tiles (or a mirrored pass) all saw it."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes, views = np.asarray(classes), np.asarray(views)
    uf = _UnionFind(len(boxes))
    if len(boxes) > 1:
        ov = (_ios if overlap == "ios" else _iou)(boxes, boxes, "float")
        ok = (ov >= threshold) & (views[:, None] != views[None, :]) & (classes[:, None] == classes[None, :])
        for i, j in zip(*np.nonzero(np.triu(ok, 1))):
            uf.union(int(i), int(j))
    return uf.groups()


def class_counts(classes, names) -> dict[str, str]:
    """`{name: count as string}` ordered by class id (the reference's detekterte_objekter).

    `names` maps class id -> name (a dict or a sequence); ids without a name are skipped.
    """
    classes = np.asarray(classes, np.int64)
    lookup = names if isinstance(names, dict) else dict(enumerate(names))
    out = {}
    for c in sorted(set(classes.tolist())):
        if c in lookup:
            out[lookup[c]] = str(int((classes == c).sum()))
    return out

