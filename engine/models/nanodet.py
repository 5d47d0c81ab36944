"""NanoDet-m (RangiLyu/nanodet, Apache-2.0): anchor-free COCO detector with a GFL head.

Outputs per stride s in (8, 16, 32), over the (H/s) x (W/s) grid cells in row-major order:
class scores `(cells, 80)` (already sigmoid) and box distributions `(cells, 4 * (reg_max + 1))`
— for each side (left, top, right, bottom) a discrete distribution over 0..reg_max whose
expectation times the stride is the distance from the cell centre. Input `(1, 3, 416, 416)`,
BGR normalised with NanoDet's own mean and std (plain RGB/255 scored a motorcycle 0.19 instead
of 0.78).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from engine.models.base import Adapter, RawDetections
from kernels import batched_nms, get_array_module, letterbox, to_host

__all__ = ["NanoDetAdapter", "decode_gfl"]

LOG = logging.getLogger("sladd")

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
    """Views run at the card's scale (the largest that fits `input.size`), never above native
    resolution, on a canvas padded only to the next multiple of 32 (`resizable` graphs: the
    converted model computes its reshapes from the input, so any multiple of 32 works, and
    its TF-style 'same' paddings equal the 416x416 ones there). A graph whose outputs do not
    follow its input (a fixed export, the tests' stand-in) and runtimes that build one plan
    per shape (TensorRT) get every view letterboxed into `input.size`, as before."""

    family = "nanodet"
    takes_threshold = True
    strides = (8, 16, 32)
    reg_max = 10
    align = 32                   # the largest stride: input sides are multiples of it

    def __init__(self, card, model_path, runtime):
        super().__init__(card, model_path, runtime)
        self.size = tuple(card.input.size)
        self.ncls = len(card.class_names)
        self.resizable = False
        if not getattr(runtime, "dynamic_batch", False):           # not a one-plan-per-shape runtime
            self._try_resizable()
        if not self.resizable:
            self.session = runtime.session(model_path, family=self.family)
            self.input_name = self.session.get_inputs()[0].name
            outs = self.session.get_outputs()
            self.names = [o.name for o in outs]
            self._pairs(self.size, {o.name: o.shape for o in outs})    # the graph's outputs are NanoDet's

    def _pairs(self, hw, shapes: dict) -> list:
        """(stride, score output, box output) per stride, paired by their number of cells at
        input size `hw`; ValueError when the outputs do not fit that size."""
        by_cells: dict[int, dict] = {}
        for name, shape in shapes.items():
            by_cells.setdefault(shape[1], {})["cls" if shape[2] == self.ncls else "reg"] = name
        pairs = []
        for stride in self.strides:
            cells = int(np.ceil(hw[0] / stride) * np.ceil(hw[1] / stride))
            if cells not in by_cells or len(by_cells[cells]) != 2:
                raise ValueError(f"{self.model_path}: no score/box outputs with {cells} cells for stride {stride}")
            pairs.append((stride, by_cells[cells]["cls"], by_cells[cells]["reg"]))
        return pairs

    def _try_resizable(self) -> None:
        """The graph with free height and width (kept in the models cache, see
        engine.models.resolve.derived_file); used if a 64x96 probe's outputs have the cells of
        64x96 (a graph with fixed reshapes fails or answers 416x416's)."""
        from engine.models.resolve import derived_file

        try:
            path = derived_file(self.model_path, "free-size", self._free_size_graph)
            session = self.runtime.session(path, family=self.family)
            names = [o.name for o in session.get_outputs()]
            name = session.get_inputs()[0].name
            probe = session.run(names, {name: np.zeros((1, 3, 64, 96), np.float32)})
            self._pairs((64, 96), {n: a.shape for n, a in zip(names, probe)})
        except Exception as exc:        # noqa: BLE001 — any runtime error: the fixed graph is kept, and said
            LOG.info("model %s: graph runs at %dx%d only (%s)", self.card.name, *self.size, str(exc).splitlines()[0])
            return
        self.session, self.input_name, self.names, self.resizable = session, name, names, True

    def _free_size_graph(self) -> bytes:
        from engine.runtimes.onnxruntime import onnx_module
        model = onnx_module().load(str(self.model_path))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
        for o in model.graph.output:                  # output dims follow the input now
            for k, d in enumerate(o.type.tensor_type.shape.dim):
                d.dim_param = f"{o.name}_{k}"
        return model.SerializeToString()

    def view_scale(self, h: int, w: int) -> float:
        s = min(self.size[0] / h, self.size[1] / w)
        return min(1.0, s) if self.resizable else s

    def input_hw(self, h: int, w: int) -> tuple[int, int]:
        """The graph input size `(H, W)` a view of `h x w` runs at."""
        if not self.resizable:
            return self.size
        s, a = self.view_scale(h, w), self.align
        return (math.ceil(max(1, round(h * s)) / a) * a, math.ceil(max(1, round(w * s)) / a) * a)

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
        hw = self.input_hw(*view.shape[:2])
        blob, scale = self.blob(view, hw)
        # The outputs are small (about 3,500 cells): decoded on the host.
        res = {n: to_host(o) for n, o in zip(self.names, self.session.run(self.names, {self.input_name: blob}))}
        pairs = self._pairs(hw, {n: a.shape for n, a in res.items()})
        levels = [(s, res[c][0], res[r][0]) for s, c, r in pairs]
        b, sc, cl = decode_gfl(levels, input_hw=hw, reg_max=self.reg_max,
                               score_threshold=self.card.score_threshold if threshold is None else threshold,
                               iou=self.card.nms_iou)
        b = b / scale
        vh, vw = view.shape[:2]
        b[:, 0::2] = b[:, 0::2].clip(0, vw)
        b[:, 1::2] = b[:, 1::2].clip(0, vh)
        return RawDetections(b, sc, cl)
