"""Mask and encode stage: the anonymised JPEG of one frame, with the input's metadata segments
(without the pictures they may hide: engine.embedded). Rendering replaces `frame.exif` by the
EXIF payload the output carries (cleaned), so that the metadata record built after it
(engine.worker.write) never shows what the image no longer holds."""
from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from engine.config import Config
from engine.codecs.png import encode_png, is_png
from engine.codecs.turbo import decode_cmyk, rgb_to_cmyk
from engine.embedded import NotCopyable, carried_segments, rebuild_file
from engine.lossless import render_lossless
from engine.jpeg import apply_orientation, parse_jpeg, splice_segments
from engine.mask import Masker
from engine.types import Detections, Frame
from kernels import group_regions, to_host

__all__ = ["Renderer"]

LOG = logging.getLogger("sladd")


class Renderer:
    """One per write worker. `decoder` re-decodes at full size frames decoded at a DCT scale;
    `encoder` takes host (or, when it says so, device) RGB pixels; CMYK and previews go through
    `host_encoder` (TurboJPEG)."""

    def __init__(self, cfg: Config, decoder, encoder, host_encoder):
        self.cfg = cfg
        self.decoder = decoder
        self.encoder = encoder
        self.preview_encoder = host_encoder
        self.masker = Masker(cfg)

    def quality(self, frame: Frame) -> int:
        q = self.cfg.output.quality
        if q == "auto":
            # Fix 13: match the input (never PIL's silent 75); unknown tables -> min_quality.
            return frame.quality if frame.quality is not None else self.cfg.output.min_quality
        return int(q)

    def render(self, frame: Frame, dets: Detections, need_pixels: bool = False):
        """(output JPEG bytes, pixels changed?, anonymised display pixels on the host or None).

        Device frames (the GPU path) are masked on the device; an encoder that takes device
        arrays (nvImageCodec on cuda) encodes them there and only the JPEG comes back, else the
        pixels are copied to the host once, for the host encoder. No picture the input hides
        besides its main image (thumbnails, MPO frames, trailers) reaches the output. An
        image with nothing to mask that cannot be rebuilt losslessly without doubt is re-encoded.
        The DCT coefficients the decoder kept (`frame.coefficients`) are freed here either way."""
        try:
            return self._render(frame, dets, need_pixels)
        finally:
            if frame.coefficients is not None:
                frame.coefficients.close()
                frame.coefficients = None

    def _render(self, frame: Frame, dets: Detections, need_pixels: bool):
        draw = len(dets) > 0 and self.cfg.draw_mask
        if is_png(frame.data):
            return self._render_png(frame, dets if draw else None, need_pixels)
        info = parse_jpeg(frame.data) if frame.data[:2] == b"\xff\xd8" else None
        if not draw and self.cfg.output.copy_unmasked:
            copied = self._unmasked_copy(frame, info)
            if copied is not None:
                return copied, False, to_host(self.decoder.full_pixels(frame)) if need_pixels else None
        if self.cfg.output.lossless:
            # Only the blocks a mask touches are re-encoded (engine.lossless); None: render as below.
            done = render_lossless(self, frame, dets, need_pixels)
            if done is not None:
                return done
        if info is not None and info.cmyk:
            return self._render_cmyk(frame, dets if draw else None, info, need_pixels)
        if draw:
            t0 = time.perf_counter()
            # The frame owns its decoded pixels and nothing reads them after this: draw in place.
            pixels = self.masker(self.decoder.full_pixels(frame), dets, inplace=True)
            frame.timings["mask"] = time.perf_counter() - t0
        else:
            pixels = self.decoder.full_pixels(frame)
        t0 = time.perf_counter()
        if not getattr(self.encoder, "accepts_device_arrays", False):
            pixels = np.ascontiguousarray(to_host(pixels))
        encoded = self.encoder.encode(pixels, self.quality(frame), frame.subsampling)
        data = splice_segments(encoded, self._carried(frame))
        frame.timings["encode"] = time.perf_counter() - t0
        return data, draw, (to_host(pixels) if need_pixels else None)

    def _render_png(self, frame: Frame, dets: Optional[Detections], need_pixels: bool):
        """PNG in, PNG out, always from the pixels (engine.codecs.png)."""
        pixels = to_host(self.decoder.full_pixels(frame))
        if dets is not None:
            t0 = time.perf_counter()
            pixels = self.masker(pixels, dets, inplace=True)
            frame.timings["mask"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        data = encode_png(pixels, frame.icc)
        frame.timings["encode"] = time.perf_counter() - t0
        return data, dets is not None, (pixels if need_pixels else None)

    def _unmasked_copy(self, frame: Frame, info) -> Optional[bytes]:
        """Nothing to mask: the input itself when it is already exactly what the lossless
        rebuild would write, else that rebuild (same entropy-coded data, so the same pixels;
        only the allowlisted, cleaned segments). None: re-encode it (engine.embedded.NotCopyable)."""
        if info is None:
            return frame.data
        t0 = time.perf_counter()
        try:
            res = rebuild_file(frame.data, info)
        except NotCopyable as exc:
            LOG.debug("%s: not copied, re-encoded: %s", frame.job.key, exc)
            return None
        finally:
            frame.timings["sanitize"] = time.perf_counter() - t0
        for note in res.notes:
            LOG.debug("%s: %s", frame.job.key, note)
        frame.exif = res.exif
        return frame.data if res.data is None else res.data

    def _carried(self, frame: Frame) -> list[bytes]:
        """The input's metadata segments for a re-encoded output (engine.embedded.carried_segments)."""
        return carried_segments(frame)

    def _render_cmyk(self, frame: Frame, dets: Optional[Detections], info, need_pixels: bool):
        """CMYK/YCCK input: the output stays CMYK, so its ICC profile (a CMYK one) stays valid
        and nothing outside the masks goes through a colour conversion. The masks are drawn on
        the RGB frame the models saw, exactly as for any image, and only the pixels inside them
        are written back into the CMYK planes (converted with engine.codecs.turbo.rgb_to_cmyk).
        Host only: libjpeg-turbo decodes and encodes it."""
        t0 = time.perf_counter()
        cmyk = np.ascontiguousarray(apply_orientation(decode_cmyk(frame.data, tj=self.preview_encoder.tj),
                                                      frame.orientation))
        inverted = info.adobe_transform is not None
        rgb = to_host(self.decoder.full_pixels(frame))
        if dets is not None:
            rgb = self.masker(rgb, dets, inplace=True)
            inside = self._mask_union(dets, rgb.shape[:2])
            cmyk[inside] = rgb_to_cmyk(rgb[inside], inverted)
            frame.timings["mask"] = time.perf_counter() - t0
        if not inverted:
            # The encoder writes an Adobe marker, whose readers expect 255 - ink: store it so.
            np.subtract(255, cmyk, out=cmyk)
        t0 = time.perf_counter()
        encoded = self.preview_encoder.encode_cmyk(cmyk, self.quality(frame), frame.subsampling)
        data = splice_segments(encoded, self._carried(frame))
        frame.timings["encode"] = time.perf_counter() - t0
        return data, dets is not None, (rgb if need_pixels else None)

    def _mask_union(self, dets: Detections, shape: tuple[int, int]) -> np.ndarray:
        """(H, W) bool host map of every pixel the masker may draw (the dilated regions)."""
        h, w = shape
        union = np.zeros((h, w), bool)
        regions = [(y0, x0, to_host(m)) for y0, x0, m in self.masker.regions(dets, h, w)]
        for y0, y1, x0, x1, m in group_regions(regions, shape):
            union[y0:y1, x0:x1] |= m
        return union
