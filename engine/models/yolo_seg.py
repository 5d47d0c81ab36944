"""Ultralytics-style instance segmentation export (YOLOv8/11-seg).

Graph: input `(1, 3, H, W)` float32 RGB / 255, letterboxed (pad 114, top-left aligned here);
outputs `(1, 4 + nc + nm, A)` — box centre/size in input pixels, per-class scores (already
sigmoid), nm mask coefficients — and prototypes `(1, nm, mh, mw)` at a fraction of the input.
Instance mask = sigmoid(coeffs @ prototypes), cropped to its box.
"""
from __future__ import annotations

import numpy as np

from engine.models.base import Adapter, RawDetections
from engine.models.yolo_det import PAD_VALUE, decode_yolo_boxes, yolo_blob
from kernels import to_host

__all__ = ["YoloSegAdapter", "decode_yolo_seg"]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _bilinear_at(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample `grid (gh, gw)` at pixel-centre coordinates ys (n,) x xs (m,) -> (n, m)."""
    gh, gw = grid.shape
    yy = np.clip(ys - 0.5, 0, gh - 1)
    xx = np.clip(xs - 0.5, 0, gw - 1)
    y0 = np.floor(yy).astype(np.int64); y1 = np.minimum(y0 + 1, gh - 1); wy = (yy - y0)[:, None]
    x0 = np.floor(xx).astype(np.int64); x1 = np.minimum(x0 + 1, gw - 1); wx = (xx - x0)[None, :]
    top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x1] * wx
    bot = grid[y1][:, x0] * (1 - wx) + grid[y1][:, x1] * wx
    return (top * (1 - wy) + bot * wy).astype(np.float32)


def decode_yolo_seg(pred, protos, *, num_classes: int, score_threshold: float, iou: float,
                    input_hw: tuple[int, int], scale: float, view_hw: tuple[int, int]) -> RawDetections:
    """Decode raw outputs into view-pixel detections with a lazy mask sampler.

    pred (4 + nc + nm, A) float32; protos (nm, mh, mw); `scale` = model px per view px.
    """
    nc = num_classes
    keep, boxes, scores, classes = decode_yolo_boxes(pred, num_classes=nc, score_threshold=score_threshold, iou=iou)
    coeffs = pred[4 + nc:, keep].T                        # (K, nm)
    vh, vw = view_hw
    boxes_view = boxes / scale
    boxes_view[:, 0::2] = boxes_view[:, 0::2].clip(0, vw)
    boxes_view[:, 1::2] = boxes_view[:, 1::2].clip(0, vh)
    nm, mh, mw = protos.shape
    ih, iw = input_hw
    flat = protos.reshape(nm, -1)
    fy, fx = mh / ih, mw / iw                             # prototype px per model px

    def mask_prob(i: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        grid = _sigmoid(coeffs[i] @ flat).reshape(mh, mw)
        prob = _bilinear_at(grid, ys * scale * fy, xs * scale * fx)
        # Ultralytics crops every instance mask to its box.
        bx1, by1, bx2, by2 = boxes_view[i]
        inside = ((ys >= by1) & (ys < by2))[:, None] & ((xs >= bx1) & (xs < bx2))[None, :]
        return np.where(inside, prob, 0.0).astype(np.float32)

    return RawDetections(boxes_view.astype(np.float32), scores, classes, mask_prob)


class YoloSegAdapter(Adapter):
    family = "yolo-seg"

    def __init__(self, card, model_path, runtime):
        super().__init__(card, model_path, runtime)
        self.session = runtime.session(model_path, family=self.family)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.size = tuple(card.input.size)
        # Ultralytics exports have a fixed batch of 1 unless exported with dynamic=True.
        self.dynamic_batch = not (isinstance(inp.shape[0], int) and inp.shape[0] == 1)

    def view_scale(self, h: int, w: int) -> float:
        return min(self.size[0] / h, self.size[1] / w)

    def __call__(self, view: np.ndarray, view_scale: float) -> RawDetections:
        return self._run([view])[0]

    def batch(self, views: list[np.ndarray], view_scale: float, threshold: float | None = None) -> list[RawDetections]:
        if threshold is not None:
            raise ValueError("yolo-seg does not support a cascade")
        if not self.dynamic_batch:
            return [self._run([v])[0] for v in views]
        return self._run(views)

    @staticmethod
    def blob(views: list, size_hw: tuple[int, int], pad_value: float = PAD_VALUE):
        """Letterboxed `(N, 3, h, w)` float32 RGB / 255 and the scales (yolo_det.yolo_blob)."""
        return yolo_blob(views, size_hw, pad_value)

    @classmethod
    def calibration_blob(cls, pixels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        """Letterboxed with PAD_VALUE, the cards' default (calibration has no card to ask)."""
        return cls.blob([pixels], size_hw)[0][0]

    def _run(self, views: list[np.ndarray]) -> list[RawDetections]:
        blob, scales = self.blob(views, self.size, self.card.input.pad_value)
        pred, protos = (to_host(o) for o in self.session.run(None, {self.input_name: blob})[:2])
        return [decode_yolo_seg(pred[i], protos[i], num_classes=len(self.card.class_names),
                                score_threshold=self.card.score_threshold, iou=self.card.nms_iou,
                                input_hw=self.size, scale=scale, view_hw=v.shape[:2])
                for i, (scale, v) in enumerate(zip(scales, views))]
