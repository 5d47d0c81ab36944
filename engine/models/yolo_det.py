"""Ultralytics-style detection export (YOLOv8/11 `detect`), and what the segmentation family
shares with it.

Graph: input `(N, 3, H, W)` float32 RGB / 255, letterboxed (pad 114, top-left aligned here);
output `(N, 4 + nc, A)`: box centre and size (cx, cy, w, h) in input pixels, then per-class
scores (already sigmoid), for A anchors; no NMS in the graph. An export made with
`dynamic=True` takes any H and W that are multiples of the stride (32): views no larger than
the card's `input.size` then run at their own resolution, padded to the stride (the plate
cascade's crops at native resolution); larger views, and every view of a fixed-size export,
are letterboxed into `input.size` (Ultralytics' own preprocessing).
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np

from engine.models.base import Adapter, RawDetections, set_dims
from engine.runtimes.onnxruntime import onnx_module
from kernels import batched_nms, get_array_module, letterbox, resize_bilinear, to_host

__all__ = ["YoloDetAdapter", "decode_yolo_boxes", "yolo_blob", "PAD_VALUE", "STRIDE"]

PAD_VALUE = 114.0            # Ultralytics' letterbox grey (InputSpec.pad_value's default)
STRIDE = 32                  # the largest stride of YOLOv8/11 heads: input sides are multiples of it


def decode_yolo_boxes(pred: np.ndarray, *, num_classes: int, score_threshold: float, iou: float):
    """The anchors of one image that survive the score threshold and per-class NMS.

    pred `(4 + nc [+ extra], A)` float32 host. Returns (keep `(K,)` int64 anchor indices,
    boxes `(K, 4)` float32 xyxy in model input pixels, scores `(K,)` float32, classes `(K,)`
    int32), ordered by score."""
    nc = num_classes
    cls_scores = pred[4:4 + nc]                           # (nc, A)
    classes = cls_scores.argmax(0)
    scores = cls_scores[classes, np.arange(pred.shape[1])]
    idx = np.nonzero(scores > score_threshold)[0]
    cx, cy, bw, bh = pred[0, idx], pred[1, idx], pred[2, idx], pred[3, idx]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32).reshape(-1, 4)
    scores, classes = scores[idx].astype(np.float32), classes[idx].astype(np.int32)
    order = batched_nms(boxes, scores, classes, iou)
    return idx[order], boxes[order], scores[order], classes[order]


def yolo_blob(views: list, size_hw: tuple[int, int], pad_value: float = PAD_VALUE, scale: float | None = None):
    """(`(N, 3, h, w)` float32 RGB / 255 of N views letterboxed to `size_hw`; their letterbox
    scales). `scale`: resize by exactly this factor (not the largest that fits) and pad the
    rest. On the device for device views. Allocates."""
    xp = get_array_module(views[0])          # device views are prepared on the device
    if scale is None:
        boxed = [letterbox(v, size_hw, pad_value) for v in views]
    else:
        boxed = [(_scaled_canvas(xp, v, size_hw, pad_value, scale), scale) for v in views]
    return (xp.stack([c.transpose(2, 0, 1) for c, _ in boxed]) / 255.0).astype(xp.float32), [s for _, s in boxed]


def _scaled_canvas(xp, view, size_hw, pad_value: float, scale: float):
    h, w = view.shape[:2]
    nh, nw = min(size_hw[0], max(1, round(h * scale))), min(size_hw[1], max(1, round(w * scale)))
    canvas = xp.full((*size_hw, view.shape[2]), pad_value, xp.float32)
    canvas[:nh, :nw] = resize_bilinear(view, nh, nw) if (nh, nw) != (h, w) else view
    return canvas


def _is_dim(d) -> bool:
    return isinstance(d, int) and d > 0


def _set_input_dims(model, name: str, dims) -> None:
    """Fix the dims of graph input `name` in place (None: a dynamic dimension named `batch`)."""
    for i in model.graph.input:
        if i.name == name:
            set_dims(i, dims)


class YoloDetAdapter(Adapter):
    family = "yolo-det"
    takes_threshold = True
    max_sessions = 12        # runtimes that need fixed shapes (TensorRT): one graph per size

    def __init__(self, card, model_path, runtime):
        super().__init__(card, model_path, runtime)
        self.size = tuple(card.input.size)
        self._sessions: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._proto = None
        base = runtime.session(model_path, family=self.family)
        inp = base.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        # Ultralytics exports have a fixed batch of 1 and a fixed size unless dynamic=True.
        self.dynamic_batch = not _is_dim(shape[0]) or shape[0] != 1
        self.dynamic_hw = not (_is_dim(shape[2]) and _is_dim(shape[3]))
        if not self.dynamic_hw and tuple(shape[2:]) != self.size:
            raise ValueError(f"model card {card.name}: input.size {list(self.size)} but {model_path} takes "
                             f"{shape[2]}x{shape[3]}; set input.size to [{shape[2]}, {shape[3]}]")
        self._fixed_shapes = self.dynamic_hw and getattr(runtime, "dynamic_batch", False)
        if not self._fixed_shapes:
            self._sessions[None] = base

    def view_scale(self, h: int, w: int) -> float:
        s = min(self.size[0] / h, self.size[1] / w)
        return min(1.0, s) if self.dynamic_hw else s

    def input_hw(self, h: int, w: int) -> tuple[tuple[int, int], float]:
        """The graph input size `(H, W)` a view of `h x w` runs at, and its scale."""
        s = self.view_scale(h, w)
        if not self.dynamic_hw:
            return self.size, s
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        return (math.ceil(nh / STRIDE) * STRIDE, math.ceil(nw / STRIDE) * STRIDE), s

    def _session(self, n: int, hw: tuple[int, int]):
        if not self._fixed_shapes:
            return self._sessions[None]
        with self._lock:                       # detect threads share the adapter (engine.worker.build)
            return self._sized_session(hw)

    def _sized_session(self, hw: tuple[int, int]):
        key = hw                               # one plan per size, any batch (dynamic_batch runtimes)
        if key not in self._sessions:
            if self._proto is None:
                self._proto = onnx_module().load(str(self.model_path))
            m = onnx_module().ModelProto()
            m.CopyFrom(self._proto)
            _set_input_dims(m, self.input_name, [None if self.dynamic_batch else 1, 3, *hw])
            self._sessions[key] = self.runtime.session(m.SerializeToString(), family=self.family)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(key)
        return self._sessions[key]

    def __call__(self, view: np.ndarray, view_scale: float) -> RawDetections:
        return self.batch([view], view_scale)[0]

    def batch(self, views: list[np.ndarray], view_scale: float, threshold: float | None = None) -> list[RawDetections]:
        """Views of one shape `(h, w, 3)`; boxes in view pixels. `threshold` overrides the
        card's score threshold."""
        hw, s = self.input_hw(*views[0].shape[:2])
        blob, scales = yolo_blob(views, hw, self.card.input.pad_value, s if self.dynamic_hw else None)
        thr = self.card.score_threshold if threshold is None else threshold
        if self.dynamic_batch:
            preds = [to_host(self._session(len(views), hw).run(None, {self.input_name: blob})[0])]
        else:
            preds = [to_host(self._session(1, hw).run(None, {self.input_name: blob[i:i + 1]})[0])
                     for i in range(len(views))]
        pred = np.concatenate(preds)
        out = []
        for i, (scale, v) in enumerate(zip(scales, views)):
            _, boxes, scores, classes = decode_yolo_boxes(pred[i], num_classes=len(self.card.class_names),
                                                          score_threshold=thr, iou=self.card.nms_iou)
            boxes /= scale
            vh, vw = v.shape[:2]
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, vw)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, vh)
            out.append(RawDetections(boxes, scores, classes))
        return out

    @classmethod
    def calibration_blob(cls, pixels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        """Letterboxed with PAD_VALUE, the cards' default (calibration has no card to ask)."""
        return yolo_blob([pixels], size_hw)[0][0]
