"""The worker in memory: JPEG bytes in, anonymised JPEG bytes and detections out, no files.

The HTTP service (engine.service) holds one: the batch run's decoder, detector and renderer
(engine.worker.build), split into the three steps the service schedules apart — decode and
render in a thread pool, detection batched across requests on one thread. The output is always
upright (EXIF orientation 1): lossless outside the masks (engine.lossless) where the file
allows it, else re-encoded at the input's quality as `sladd run` does.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from engine.jpeg import parse_jpeg
from engine.lossless import patch_render
from engine.types import Detections, Frame, ImageError, Job

__all__ = ["MemoryWorker", "Rendered", "BadInput"]

LOG = logging.getLogger("sladd")


class BadInput(ImageError):
    """The request's picture cannot be anonymised (not a JPEG, corrupt, too large): the client's fault."""


@dataclass
class Rendered:
    """One anonymised picture. `lossless`: the pixels outside the re-encoded MCUs are the input's
    (patched, turned upright losslessly, or copied); `regions`: per detection, [x, y, w, h] of
    what was re-encoded for it (whole MCUs when lossless, else the masked area; None when its
    mask is empty), in the upright image."""

    data: bytes
    dets: Detections
    masked: bool
    lossless: bool
    size: tuple[int, int]                       # (width, height) upright
    regions: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)


class MemoryWorker:
    """`worker`: an engine.worker.Worker built by build_worker (its `cfg`); `lossless`: patch
    only the touched MCUs; `max_pixels`: refuse larger pictures before decoding them."""

    def __init__(self, worker, cfg, *, lossless: bool = True, max_pixels: Optional[int] = None):
        self.worker, self.cfg, self.lossless = worker, cfg, lossless
        self.max_pixels = min(max_pixels or cfg.engine.max_image_pixels, cfg.engine.max_image_pixels)
        self._tls = threading.local()

    def decode(self, data: bytes, name: str = "upload.jpg") -> Frame:
        """Host or device Frame; BadInput for anything the client sent wrong."""
        if not data:
            raise BadInput("empty picture (0 bytes)")
        try:
            info = parse_jpeg(data)
        except ImageError as exc:
            raise BadInput(str(exc)) from None
        if info.width * info.height > self.max_pixels:
            raise BadInput(f"picture is {info.width}x{info.height} = {info.width * info.height} pixels, above the "
                           f"limit of {self.max_pixels} (service.max_image_pixels)")
        job = Job(path=Path(name), key=name, output=Path(name), archive=None, error_dir=Path("."),
                  size=len(data), mtime_ns=0)
        try:
            return self.worker.decoder().decode(job, data)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the decoder says of these bytes is the input's fault
            raise BadInput(str(exc) if isinstance(exc, ImageError) else f"cannot decode: {exc}") from None

    def detect_batch(self, frames: list[Frame]) -> list[Detections]:
        return self.worker.detector.detect_batch(frames)

    @property
    def model(self) -> dict:
        """{"name", "version"} of the detector's models (the x-sgblur header's `model`)."""
        from engine import __version__

        cards = [s.card.name for s in self.worker.detector.slots]
        return {"name": "+".join(cards), "version": __version__}

    def render(self, frame: Frame, dets: Detections) -> Rendered:
        """The anonymised, upright JPEG of `frame` with its cleaned metadata."""
        t0 = time.perf_counter()
        renderer = self.worker.writer().renderer
        draw = len(dets) > 0 and self.cfg.draw_mask
        h, w = frame.full_size
        # Nothing to mask but stored sideways: turned upright losslessly too, whatever `lossless` says.
        patch = (draw and self.lossless) or (not draw and frame.orientation != 1)
        res = patch_render(renderer, frame, dets, draw=draw) if patch else None
        if res is not None:
            lossless = res.mcus is not None
            regions = _mcu_regions(renderer, dets, h, w, res.mcu) if lossless else _mask_regions(renderer, dets, h, w)
            out = Rendered(res.data, dets, res.masked, lossless, (w, h), regions)
        else:
            # Re-encoded; with nothing to mask and upright already, copied (cleaned) as `sladd run` does.
            r = self._reencoder(renderer) if frame.orientation != 1 else renderer
            data, masked, _ = r.render(frame, dets)
            out = Rendered(data, dets, masked, not draw and r is renderer, (w, h), _mask_regions(renderer, dets, h, w))
        out.timings = dict(frame.timings, render=time.perf_counter() - t0)
        return out

    def _reencoder(self, renderer):
        """A renderer like the writer's that never copies: its output is always upright."""
        if getattr(self._tls, "reencoder", None) is None:
            from engine.worker.render import Renderer

            cfg = self.cfg.model_copy(update={"output": self.cfg.output.model_copy(update={"copy_unmasked": False})})
            self._tls.reencoder = Renderer(cfg, renderer.decoder, renderer.encoder, renderer.preview_encoder)
        return self._tls.reencoder


def _bbox(region, h: int, w: int) -> Optional[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of a masker region's set pixels, clipped to the image; None if empty."""
    from kernels import to_host

    y0, x0, m = region
    ys, xs = np.nonzero(to_host(m))
    if ys.size == 0:
        return None
    return (max(0, x0 + int(xs.min())), max(0, y0 + int(ys.min())),
            min(w, x0 + int(xs.max()) + 1), min(h, y0 + int(ys.max()) + 1))


def _mask_regions(renderer, dets: Detections, h: int, w: int) -> list:
    out = []
    for i in range(len(dets)):
        boxes = [b for b in (_bbox(r, h, w) for r in renderer.masker.regions(dets, h, w, [i])) if b]
        out.append([min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes) -
                    min(b[0] for b in boxes), max(b[3] for b in boxes) - min(b[1] for b in boxes)] if boxes else None)
    return out


def _mcu_regions(renderer, dets: Detections, h: int, w: int, mcu: tuple[int, int]) -> list:
    mh, mw = mcu
    out = []
    for r in _mask_regions(renderer, dets, h, w):
        if r is None:
            out.append(None)
            continue
        x0, y0 = r[0] // mw * mw, r[1] // mh * mh
        x1, y1 = min(w, -(-(r[0] + r[2]) // mw) * mw), min(h, -(-(r[1] + r[3]) // mh) * mh)
        out.append([x0, y0, x1 - x0, y1 - y0])
    return out
