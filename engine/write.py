"""Write stage: anonymise and encode, keep the input's metadata segments, write atomically."""
from __future__ import annotations

import time

import numpy as np

from engine.config import Config
from engine.decode import turbojpeg
from engine.fsutil import copy_atomic, write_atomic
from engine.jpeg import set_orientation
from engine.mask import Masker
from engine.types import Detections, Frame, Result
from engine.jpeg import splice_segments

__all__ = ["Writer", "ENCODERS", "TurboEncoder"]


class TurboEncoder:
    name = "turbojpeg"

    def __init__(self):
        self.tj = turbojpeg()

    def encode(self, pixels: np.ndarray, quality: int, subsampling: int) -> bytes:
        from turbojpeg import TJFLAG_ACCURATEDCT, TJPF_RGB

        return self.tj.encode(pixels, quality=quality, pixel_format=TJPF_RGB,
                              jpeg_subsample=subsampling, flags=TJFLAG_ACCURATEDCT)


ENCODERS = {"turbojpeg": TurboEncoder}


class Writer:
    """One per write worker. `decoder` re-decodes at full size frames decoded at a DCT scale."""

    def __init__(self, cfg: Config, decoder, encoder=None):
        self.cfg = cfg
        self.decoder = decoder
        self.encoder = encoder or TurboEncoder()
        self.masker = Masker(cfg)

    def quality(self, frame: Frame) -> int:
        q = self.cfg.output.quality
        if q == "auto":
            # Fix 13: match the input (never PIL's silent 75); unknown tables -> min_quality.
            return frame.quality if frame.quality is not None else self.cfg.output.min_quality
        return int(q)

    def render(self, frame: Frame, dets: Detections) -> tuple[bytes, bool]:
        """The output JPEG bytes and whether pixels were changed."""
        if len(dets) == 0 or not self.cfg.draw_mask:
            if self.cfg.output.copy_unmasked:
                return frame.data, False
            pixels = self.decoder.full_pixels(frame)
            masked = False
        else:
            t0 = time.perf_counter()
            # The frame owns its decoded pixels and nothing reads them after this: draw in place.
            pixels = self.masker(self.decoder.full_pixels(frame), dets, inplace=True)
            frame.timings["mask"] = time.perf_counter() - t0
            masked = True
        t0 = time.perf_counter()
        encoded = self.encoder.encode(np.ascontiguousarray(pixels), self.quality(frame), frame.subsampling)
        segments = frame.segments
        if frame.orientation != 1:
            # Pixels are upright now; keep every EXIF byte but the orientation value.
            segments = [set_orientation(s, 1) if s[4:10] == b"Exif\x00\x00" else s for s in segments]
        data = splice_segments(encoded, segments)
        frame.timings["encode"] = time.perf_counter() - t0
        return data, masked

    def __call__(self, frame: Frame, dets: Detections) -> Result:
        data, masked = self.render(frame, dets)
        t0 = time.perf_counter()
        job = frame.job
        outputs = []
        write_atomic(job.output, data)
        outputs.append(str(job.output))
        if job.archive is not None:
            copy_atomic(job.path, job.archive)
            outputs.append(str(job.archive))
        frame.timings["write"] = time.perf_counter() - t0
        return Result(job=job, outputs=outputs, detections=dets.counts(), masked=masked,
                      timings=dict(frame.timings))
