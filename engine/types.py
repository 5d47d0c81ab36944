"""Data contracts between the stages (small frozen dataclasses)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = ["Job", "Frame", "Detections", "Result", "Failure", "ImageError"]


class ImageError(Exception):
    """One image cannot be processed; the message is the reason recorded for it."""


@dataclass(frozen=True)
class Job:
    """One input image and where its outputs go.

    `key` is the path relative to the input root with `/` separators (the ledger key).
    """

    path: Path
    key: str
    output: Path
    archive: Optional[Path]
    error_dir: Path
    size: int
    mtime_ns: int


@dataclass
class Frame:
    """A decoded image.

    `pixels`: `(H, W, 3) uint8 RGB`, display orientation (EXIF orientation applied), host NumPy
    or device CuPy. `scale` is the DCT scale it was decoded at (1.0 = full resolution; the
    mask stage decodes the full image again when something must be drawn). `data` holds the
    original JPEG bytes, `segments` its APPn/COM segments to carry into the output.
    """

    job: Job
    data: bytes
    pixels: Any
    scale: float
    full_size: tuple[int, int]             # (H, W) at full resolution, display orientation
    orientation: int
    segments: list[bytes]
    quality: Optional[int]
    subsampling: int
    timings: dict[str, float] = field(default_factory=dict)
    exif: Optional[bytes] = None           # TIFF payload of the EXIF APP1 segment
    icc: Optional[bytes] = None            # a PNG input's ICC profile (JPEG: in `segments`)
    coefficients: Any = None               # engine.codecs.coefjpeg.Coefficients, for the lossless writer

    @property
    def stored_size(self) -> tuple[int, int]:
        """(W, H) as stored in the file (before EXIF orientation), as the reference reported."""
        h, w = self.full_size
        return (w, h) if self.orientation < 5 else (h, w)


@dataclass(frozen=True)
class Detections:
    """Detections of one image in full-resolution display-orientation pixels.

    boxes   (N, 4) float32 xyxy, full-image pixels (x1, y1 exclusive-free float edges)
    scores  (N,) float32
    classes (N,) int32, indices into `names`
    masks   None (box detectors: the model card's shape is drawn in each box) or a list of N
            box-local bool arrays; mask i covers the integer box `mask_boxes[i]` (x0, y0, x1, y1,
            end-exclusive). Full-frame per-instance masks are never materialised.
    shapes  (N,) per-detection drawing shape: "box" or "ellipse" (box detectors), "mask"
    counted indices of the detections that count as distinct objects (duplicates seen by
            several views are all drawn, but counted once); None = all
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: tuple[str, ...]
    masks: Optional[list[np.ndarray]] = None
    mask_boxes: Optional[np.ndarray] = None
    shapes: tuple[str, ...] = ()
    counted: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty(names: tuple[str, ...] = ()) -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                          np.zeros((0,), np.int32), names)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        idx = self.counted if self.counted is not None else np.arange(len(self))
        for c in self.classes[idx].tolist():
            name = self.names[c] if 0 <= c < len(self.names) else str(c)
            out[name] = out.get(name, 0) + 1
        return out


@dataclass
class Result:
    """What the write stage produced for one image."""

    job: Job
    outputs: list[str]
    detections: dict[str, int]
    masked: bool
    timings: dict[str, float]
    record: Optional[dict] = None          # the metadata JSON record (for database rows)


@dataclass
class Failure:
    """An image that failed; `stage` names where."""

    job: Job
    stage: str
    reason: str
    timings: dict[str, float] = field(default_factory=dict)
