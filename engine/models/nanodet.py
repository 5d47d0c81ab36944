"""NanoDet-m (RangiLyu/nanodet, Apache-2.0): anchor-free COCO detector with a GFL head.

Outputs per stride s in (8, 16, 32), over the (H/s) x (W/s) grid cells in row-major order:
class scores `(cells, 80)` (already sigmoid) and box distributions `(cells, 4 * (reg_max + 1))`
— for each side (left, top, right, bottom) a discrete distribution over 0..reg_max whose
expectation times the stride is the distance from the cell centre. Input `(1, 3, 416, 416)`,
BGR normalised with NanoDet's own mean and std (plain RGB/255 scored a motorcycle 0.19 instead
of 0.78).
"""
from __future__ import annotations

import numpy as np

from engine.models.base import Adapter, RawDetections
from kernels import batched_nms, get_array_module, letterbox, to_host

__all__ = ["NanoDetAdapter", "decode_gfl"]

MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def decode_gfl(levels, *, input_hw, reg_max: int, score_threshold: float, iou: float, max_det: int = 300):
    """levels: [(stride, scores (cells, C), dists (cells, 4*(reg_max+1)))] -> boxes in input px."""
    ih, iw = input_hw
    boxes, scores, classes = [], [], []
    for stride, cls, dist in levels:
        gh, gw = int(np.ceil(ih / stride)), int(np.ceil(iw / stride))
        best = cls.argmax(1)
        score = cls[np.arange(cls.shape[0]), best]
        keep = np.nonzero(score > score_threshold)[0]
        if keep.size == 0:
            continue
        d = _softmax(dist[keep].reshape(-1, 4, reg_max + 1)) @ np.arange(reg_max + 1, dtype=np.float32)
        d *= stride
        cy = (keep // gw + 0.5) * stride
        cx = (keep % gw + 0.5) * stride
        b = np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], 1)
        b[:, 0::2] = b[:, 0::2].clip(0, iw)
        b[:, 1::2] = b[:, 1::2].clip(0, ih)
        boxes.append(b); scores.append(score[keep]); classes.append(best[keep])
        _ = gh
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    b, s, c = np.concatenate(boxes), np.concatenate(scores), np.concatenate(classes)
    k = batched_nms(b, s, c, iou)[:max_det]
    return b[k].astype(np.float32), s[k].astype(np.float32), c[k].astype(np.int32)


class NanoDetAdapter(Adapter):
    family = "nanodet"
    takes_threshold = True
    strides = (8, 16, 32)
    reg_max = 10

    def __init__(self, card, model_path, runtime):
        super().__init__(card, model_path, runtime)
        self.session = runtime.session(model_path, family=self.family)
        self.input_name = self.session.get_inputs()[0].name
        self.size = tuple(card.input.size)
        # Pair score and distribution outputs by their number of cells (one pair per stride).
        outs = self.session.get_outputs()
        by_cells: dict[int, dict] = {}
        for o in outs:
            cells, width = o.shape[1], o.shape[2]
            by_cells.setdefault(cells, {})["cls" if width == len(card.class_names) else "reg"] = o.name
        self.pairs = []
        for stride in self.strides:
            cells = int(np.ceil(self.size[0] / stride) * np.ceil(self.size[1] / stride))
            if cells not in by_cells or len(by_cells[cells]) != 2:
                raise ValueError(f"{model_path}: no score/box outputs with {cells} cells for stride {stride}")
            self.pairs.append((stride, by_cells[cells]["cls"], by_cells[cells]["reg"]))
        self.names = [o.name for o in outs]

    def view_scale(self, h: int, w: int) -> float:
        return min(self.size[0] / h, self.size[1] / w)

    @staticmethod
    def blob(view, size_hw: tuple[int, int]):
        """(`(1, 3, h, w)` float32 BGR normalised with NanoDet's mean and std, letterboxed to
        `size_hw` with 0 padding; the letterbox scale). On the device for a device view."""
        xp = get_array_module(view)              # device views are prepared on the device
        canvas, scale = letterbox(view, size_hw, pad_value=0.0)
        bgr = canvas[..., ::-1]
        return xp.ascontiguousarray(((bgr - xp.asarray(MEAN_BGR)) / xp.asarray(STD_BGR))
                                    .transpose(2, 0, 1)[None].astype(xp.float32)), scale

    @classmethod
    def calibration_blob(cls, pixels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        return cls.blob(pixels, size_hw)[0][0]

    def batch(self, views: list[np.ndarray], view_scale: float, threshold: float | None = None) -> list[RawDetections]:
        """`threshold` lowers the score threshold (search regions for plates, kept apart from
        what is anonymised by the detect stage)."""
        return [self(v, view_scale, threshold) for v in views]

    def __call__(self, view: np.ndarray, view_scale: float, threshold: float | None = None) -> RawDetections:
        blob, scale = self.blob(view, self.size)
        # The outputs are small (about 3,500 cells): decoded on the host.
        res = {n: to_host(o) for n, o in zip(self.names, self.session.run(self.names, {self.input_name: blob}))}
        levels = [(s, res[c][0], res[r][0]) for s, c, r in self.pairs]
        b, sc, cl = decode_gfl(levels, input_hw=self.size, reg_max=self.reg_max,
                               score_threshold=self.card.score_threshold if threshold is None else threshold,
                               iou=self.card.nms_iou)
        b = b / scale
        vh, vw = view.shape[:2]
        b[:, 0::2] = b[:, 0::2].clip(0, vw)
        b[:, 1::2] = b[:, 1::2].clip(0, vh)
        return RawDetections(b, sc, cl)
