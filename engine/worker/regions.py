"""Regions masked besides the detections: static camera masks and recorded corrections; and the
detections record written for every image (the audit trail and the input to corrections).

- Static masks (`static_masks:`): a binary PNG (white = mask) drawn on every image whose path
  relative to the input root matches `where` (a glob, `**` across folders) and, if given, whose
  EXIF camera model equals `camera_model`. The mask is in the upright image's pixels; a size
  that differs from the image is an error naming both (the image fails: a mask that cannot be
  placed must not be skipped silently).
- Corrections (`OUTPUT/.sladd/corrections/<key>.json`, written by `sladd correct`): `add` boxes are
  masked, `remove` boxes drop the model's detections they overlap. A rerun applies them again.
- The record (`OUTPUT/.sladd/detections/<key>.json`): every masked region with its box in the
  upright image's pixels, class, score, shape, source and what was drawn.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np

from engine.types import Detections, ImageError
from kernels import blur_ksize, region_ksize

__all__ = ["StaticMasks", "Corrections", "merge", "record_for", "output_root", "record_path", "corrections_path",
           "glob_regex", "RECORD_VERSION"]

RECORD_VERSION = 1


def output_root(job) -> Path:
    """The output root of a job (its output path minus its relative key)."""
    return Path(job.output).parents[len(PurePosixPath(job.key).parts) - 1]


def record_path(output: Path, key: str, *, beside: bool = False) -> Path:
    if beside:
        p = Path(output) / key
        return p.with_name(p.stem + ".detections.json")
    return Path(output) / ".sladd" / "detections" / f"{key}.json"


def corrections_path(output: Path, key: str) -> Path:
    return Path(output) / ".sladd" / "corrections" / f"{key}.json"


def glob_regex(pattern: str) -> re.Pattern:
    """A glob over '/'-separated relative paths: `**` any folders (or none), `*` and `?` within
    one name, `[...]` a character class."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(c) or (c if c == "[" or c == "]" else re.escape(c)))
        i += 1
    return re.compile("".join(out) + r"\Z")


@lru_cache(maxsize=32)
def _load_mask(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")) >= 128
    except (OSError, ValueError) as exc:
        raise ImageError(f"static mask {path} cannot be read: {exc}") from None


class StaticMasks:
    """`static_masks` of the configuration: [{mask, where, camera_model}]."""

    def __init__(self, specs):
        self.specs = [(s.mask, glob_regex(s.where), s.camera_model) for s in (specs or ())]

    def __bool__(self) -> bool:
        return bool(self.specs)

    def for_image(self, key: str, h: int, w: int, camera_model: Optional[str] = None) -> list[tuple[str, np.ndarray]]:
        """[(mask path, (h, w) bool)] of the masks that apply to this image."""
        out = []
        for path, where, model in self.specs:
            if not where.match(key) or (model is not None and model != camera_model):
                continue
            m = _load_mask(str(path))
            if m.shape != (h, w):
                raise ImageError(f"static mask {path} is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h} "
                                 "(upright); make a mask of the image's size")
            out.append((str(path), m))
        return out


class Corrections:
    """The corrections kept for one image: add boxes, remove boxes."""

    def __init__(self, add=(), remove=()):
        self.add = [list(map(float, b)) for b in add]
        self.remove = [list(map(float, b)) for b in remove]

    @staticmethod
    def load(output: Path, key: str) -> "Corrections":
        p = corrections_path(output, key)
        if not p.is_file():
            return Corrections()
        data = json.loads(p.read_text(encoding="utf-8"))
        return Corrections(data.get("add", ()), data.get("remove", ()))

    def removes(self, box) -> bool:
        x1, y1, x2, y2 = (float(v) for v in box)
        return any(min(x2, b[2]) > max(x1, b[0]) and min(y2, b[3]) > max(y1, b[1]) for b in self.remove)


def merge(dets: Detections, extra: list[tuple[str, np.ndarray, str, Optional[np.ndarray]]],
          keep: Optional[np.ndarray] = None) -> tuple[Detections, list[str]]:
    """Detections `keep` (default all) plus `extra` regions [(class, box xyxy, shape, mask or
    None (box-local bool over the integer box))]; the extra ones are drawn but not counted.
    Returns (detections, the source kind per detection: "model" or the extra's class)."""
    idx = np.arange(len(dets)) if keep is None else np.asarray(keep, dtype=np.int64)
    names = list(dets.names)
    boxes, scores, classes, shapes, masks, mboxes, kinds = [], [], [], [], [], [], []
    for i in idx.tolist():
        boxes.append(dets.boxes[i])
        scores.append(dets.scores[i])
        classes.append(dets.classes[i])
        shapes.append(dets.shapes[i] if dets.shapes else "box")
        has = dets.masks is not None and dets.masks[i] is not None
        masks.append(dets.masks[i] if has else None)
        mboxes.append(dets.mask_boxes[i] if has else np.zeros(4))
        kinds.append("model")
    for cls, box, shape, mask in extra:
        if cls not in names:
            names.append(cls)
        boxes.append(np.asarray(box, np.float32))
        scores.append(1.0)
        classes.append(names.index(cls))
        shapes.append(shape)
        masks.append(mask)
        mboxes.append(np.asarray(box, np.float32) if mask is not None else np.zeros(4))
        kinds.append(cls)
    counted = None
    if dets.counted is not None or extra:
        kept = set(dets.counted.tolist()) if dets.counted is not None else set(idx.tolist())
        counted = np.asarray([k for k, i in enumerate(idx.tolist()) if i in kept], np.int64)
    n = len(boxes)
    out = Detections(np.asarray(boxes, np.float32).reshape(n, 4), np.asarray(scores, np.float32),
                     np.asarray(classes, np.int32), tuple(names),
                     masks=masks if any(m is not None for m in masks) else None,
                     mask_boxes=np.asarray(mboxes, np.float32).reshape(n, 4) if any(m is not None for m in masks)
                     else None, shapes=tuple(shapes), counted=counted)
    return out, kinds


def record_for(key: str, h: int, w: int, dets: Detections, kinds: list[str], sources: dict, masker,
               static_paths: list[str]) -> dict:
    """The detections record of one image (see the module doc)."""
    k0 = blur_ksize(masker.blur, w) if masker.blur else 3
    p = masker.dilation
    regions, static_i = [], 0
    for i in range(len(dets)):
        # Exact float32 values (they round-trip): a correction re-renders exactly the same masks.
        x1, y1, x2, y2 = (float(v) for v in np.asarray(dets.boxes[i], np.float32))
        cls = dets.names[int(dets.classes[i])]
        kind = kinds[i]
        if kind == "model":
            source = dict(sources.get(cls, {"kind": "model"}))
        elif kind == "static":
            source = {"kind": "static", "mask": static_paths[static_i] if static_i < len(static_paths) else None}
            static_i += 1
        else:
            source = {"kind": "correction"}
        kh, kw = (y2 - y1) + 2 * p, (x2 - x1) + 2 * p
        kernel = region_ksize(k0, int(kh), int(kw), masker.min_fraction) if masker.mode != "fill" else None
        regions.append({"box": [x1, y1, x2, y2], "class": cls, "score": round(float(dets.scores[i]), 4),
                        "shape": dets.shapes[i] if dets.shapes else "box", "source": source,
                        "drawn": {"mode": masker.mode, "kernel": kernel, "dilation": p}})
    return {"image": key, "width": w, "height": h, "regions": regions, "version": RECORD_VERSION}
