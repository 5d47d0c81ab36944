"""What every model-family adapter provides."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

__all__ = ["RawDetections", "Adapter", "set_dims"]


def set_dims(value_info, dims, names=None) -> None:
    """Set the shape of an ONNX graph input/output in place (None: a dynamic dim, named by
    `names` at its position, else `batch`)."""
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for k, v in enumerate(dims):
        if v is None:
            shape.dim.add().dim_param = (names[k] if names and names[k] else "batch")
        else:
            shape.dim.add().dim_value = int(v)


@dataclass
class RawDetections:
    """Detections in the coordinates of the view the adapter was given.

    boxes (N, 4) float32 xyxy view pixels; scores (N,); classes (N,) int32 model class ids.
    mask_prob: None for box detectors, else `f(i, ys, xs) -> (len(ys), len(xs)) float32`
    giving instance i's mask probability at view pixel coordinates (float arrays).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    mask_prob: Optional[Callable] = None


class Adapter:
    """Turns a view `(h, w, 3) uint8 RGB` into RawDetections. One instance per worker."""

    family = ""
    takes_threshold = False      # batch() honours `threshold` (a lower candidate threshold)

    def __init__(self, card, model_path, runtime):
        self.card = card
        self.model_path = model_path
        self.runtime = runtime

    def view_scale(self, h: int, w: int) -> float:
        """Resolution factor the model runs this view at (needed decode scale)."""
        raise NotImplementedError

    def __call__(self, view: np.ndarray, view_scale: float) -> RawDetections:
        raise NotImplementedError

    @classmethod
    def calibration_blob(cls, pixels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        """`(3, h, w)` float32 host model input for one decoded image `(H, W, 3)` uint8 RGB, made
        as this family feeds a graph whose input is `size_hw`: TensorRT's INT8 calibration data
        (engine.runtimes.trt_plan). Families that support INT8 override this."""
        raise ValueError(f"no calibration preprocessing for family {cls.family!r}")

    def batch(self, views: list[np.ndarray], view_scale: float, threshold: float | None = None) -> list[RawDetections]:
        """Several views of one shape. Families whose graph takes a batch override this.
        `threshold` (a lower candidate threshold for cascades) is honoured by families that
        support it (centerface)."""
        if threshold is not None:
            raise ValueError(f"family {self.family!r} does not support a cascade (threshold override)")
        return [self(v, view_scale) for v in views]
