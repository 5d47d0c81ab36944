"""The DCT-scale policy: decode each image at the smallest scale every model still needs."""
from __future__ import annotations

from typing import Callable

from engine.codecs.png import decode_png, is_png
from engine.jpeg import parse_jpeg
from engine.types import ImageError

__all__ = ["ScaledDecoder"]


class ScaledDecoder:
    """Wraps a decoder from `engine.codecs.create_decoder`. For a decoder that can decode at a
    DCT scale (`scalable`: TurboJPEG) the scale is chosen per image from its header as
    `needed_scale(height, width)` (the detector's `needed_scale`: the largest fraction of the
    full resolution any model needs); other decoders (DALI) decode at full resolution.
    `decode_batch` and `batch` are the inner decoder's where it has them (DALI)."""

    def __init__(self, inner, needed_scale: Callable[[int, int], float]):
        self._inner = inner
        self.name = inner.name
        self.needed_scale = needed_scale
        if hasattr(inner, "decode_batch"):
            self.decode_batch = inner.decode_batch          # DALI: several images per run
            self.batch = inner.batch

    def decode(self, job, data: bytes):
        if str(job.path).lower().endswith(".png"):         # output.extensions with ".png"
            if not is_png(data):
                raise ImageError(f"not a PNG file (starts with {data[:8]!r})")
            return decode_png(job, data, self._inner.max_pixels)
        if not self._inner.scalable:
            return self._inner.decode(job, data)
        info = parse_jpeg(data)
        self._inner.scale = self._inner.scale_for(self.needed_scale(info.height, info.width))
        return self._inner.decode(job, data, info)          # the header is parsed once

    def full_pixels(self, frame):
        return self._inner.full_pixels(frame)
