"""Write stage: anonymise and encode, keep the input's metadata segments (without the pictures
they may hide: engine.embedded), write every output of an image or none."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np

from engine.config import Config
from engine.decode import decode_cmyk, rgb_to_cmyk, turbojpeg
from engine.embedded import sanitize_file, sanitize_segments
from engine.fsutil import copy_atomic, write_atomic
from engine.jpeg import apply_orientation, parse_jpeg, set_orientation, splice_segments
from engine.mask import Masker
from engine.meta.exif import read_exif
from engine.meta.outputs import crop_preview, targets_for
from engine.meta.record import build_record, dumps
from engine.types import Detections, Frame, Result
from kernels import class_counts, group_regions, to_host

__all__ = ["Writer", "ENCODERS", "TurboEncoder", "create_encoder"]

LOG = logging.getLogger("sladd")


class TurboEncoder:
    name = "turbojpeg"

    def __init__(self):
        self.tj = turbojpeg()

    def encode(self, pixels: np.ndarray, quality: int, subsampling: int) -> bytes:
        from turbojpeg import TJFLAG_ACCURATEDCT, TJPF_RGB

        return self.tj.encode(pixels, quality=quality, pixel_format=TJPF_RGB,
                              jpeg_subsample=subsampling, flags=TJFLAG_ACCURATEDCT)

    def encode_cmyk(self, cmyk: np.ndarray, quality: int, subsampling: int) -> bytes:
        """(H, W, 4) uint8 CMYK, stored as Adobe does (255 - ink) -> a YCCK JPEG with an Adobe
        APP14 marker (libjpeg-turbo's only way to write four components)."""
        from turbojpeg import TJFLAG_ACCURATEDCT, TJPF_CMYK, TJSAMP_444

        if subsampling not in (0, 1, 2, 4, 5):           # unknown or gray: no chroma subsampling
            subsampling = TJSAMP_444
        return self.tj.encode(np.ascontiguousarray(cmyk), quality=quality, pixel_format=TJPF_CMYK,
                              jpeg_subsample=subsampling, flags=TJFLAG_ACCURATEDCT)


def _nvimagecodec(**kwargs):
    from engine.encode_nvimgcodec import NvImageCodecEncoder    # lazy: an optional extra
    return NvImageCodecEncoder(**kwargs)


ENCODERS = {"turbojpeg": TurboEncoder, "nvimagecodec": _nvimagecodec}


def create_encoder(name: str, device: str = "cpu"):
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise ValueError(f"unknown encoder {name!r}; valid: {', '.join(sorted(ENCODERS))}") from None
    return cls(device=device) if name == "nvimagecodec" else cls()


class Writer:
    """One per write worker. `decoder` re-decodes at full size frames decoded at a DCT scale;
    `meta` (a MetaContext) turns on the metadata JSON and previews."""

    def __init__(self, cfg: Config, decoder, encoder=None, meta=None, db: bool = False):
        self.cfg = cfg
        self.db = db
        self.decoder = decoder
        self.encoder = encoder or TurboEncoder()
        # Previews are small host crops: always TurboJPEG.
        self.preview_encoder = self.encoder if isinstance(self.encoder, TurboEncoder) else TurboEncoder()
        self.masker = Masker(cfg)
        self.meta = meta

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
        besides its main image (thumbnails, MPO frames, trailers) reaches the output."""
        info = parse_jpeg(frame.data) if frame.data[:2] == b"\xff\xd8" else None
        draw = len(dets) > 0 and self.cfg.draw_mask
        if not draw and self.cfg.output.copy_unmasked:
            return (self._unmasked_copy(frame, info), False,
                    to_host(self.decoder.full_pixels(frame)) if need_pixels else None)
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

    def _unmasked_copy(self, frame: Frame, info) -> bytes:
        """Nothing to mask: the input itself, or, when it hides pictures, a lossless rebuild
        without them (same entropy-coded data, so the same pixels; nothing is re-encoded)."""
        if info is None:
            return frame.data
        t0 = time.perf_counter()
        rebuilt, notes = sanitize_file(frame.data, info)
        for note in notes:
            LOG.debug("%s: %s", frame.job.key, note)
        frame.timings["sanitize"] = time.perf_counter() - t0
        return frame.data if rebuilt is None else rebuilt

    def _carried(self, frame: Frame) -> list[bytes]:
        """The input's metadata segments for a re-encoded output: pictures removed, and the
        EXIF orientation set to 1 when the pixels were turned upright (every other byte kept)."""
        res = sanitize_segments(frame.segments)
        for note in res.notes:
            LOG.debug("%s: %s", frame.job.key, note)
        if frame.orientation == 1:
            return res.segments
        return [set_orientation(s, 1) if s[4:10] == b"Exif\x00\x00" else s for s in res.segments]

    def _render_cmyk(self, frame: Frame, dets: Optional[Detections], info, need_pixels: bool):
        """CMYK/YCCK input: the output stays CMYK, so its ICC profile (a CMYK one) stays valid
        and nothing outside the masks goes through a colour conversion. The masks are drawn on
        the RGB frame the models saw, exactly as for any image, and only the pixels inside them
        are written back into the CMYK planes (converted with engine.decode.rgb_to_cmyk).
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

    def __call__(self, frame: Frame, dets: Detections) -> Result:
        """Everything that can fail (JPEG, metadata record, JSON text, preview) is computed
        before the first file is written; a write that fails removes what this call wrote, so
        an image is published whole or not at all."""
        job = frame.job
        targets = targets_for(self.cfg, job) if self.meta is not None else None
        data, masked, pixels = self.render(frame, dets, need_pixels=bool(targets and targets.previews))
        counts = class_counts(dets.classes[dets.counted] if dets.counted is not None else dets.classes, dets.names)
        record, files = None, []
        if targets is not None:
            record, files = self._metadata(frame, pixels, counts, targets)
        t0 = time.perf_counter()
        outputs = self._publish(job, data, files)
        frame.timings["write"] = time.perf_counter() - t0
        return Result(job=job, outputs=outputs, detections={k: int(v) for k, v in counts.items()}, masked=masked,
                      timings=dict(frame.timings), record=record)

    @staticmethod
    def _publish(job, data: bytes, files: list[tuple[Path, bytes]]) -> list[str]:
        """Write the image, the archive copy and `files` (each atomically); on a failure remove
        the ones already written and raise."""
        written: list[Path] = []
        try:
            write_atomic(job.output, data)
            written.append(Path(job.output))
            if job.archive is not None:
                copy_atomic(job.path, job.archive)
                written.append(Path(job.archive))
            for path, blob in files:
                write_atomic(Path(path), blob)
                written.append(Path(path))
        except BaseException:
            for p in reversed(written):
                try:
                    p.unlink(missing_ok=True)
                except OSError as exc:
                    LOG.warning("%s: could not remove %s after a failed write: %s", job.key, p, exc)
            raise
        return [str(p) for p in written]

    def _metadata(self, frame: Frame, pixels, counts: dict, targets) -> tuple[Optional[dict], list]:
        """(metadata record or None, [(path, bytes)] of the JSON files and previews to write)."""
        t0 = time.perf_counter()
        files, record = [], None
        if targets.json or self.db:
            w, h = frame.stored_size
            record, warnings = build_record(read_exif(frame.exif), w, h, str(frame.job.path), self.meta,
                                            file_path=frame.job.path, detections=counts,
                                            preview_name=f"{frame.job.path.stem}_preview.jpg")
            for msg in warnings:
                LOG.debug("%s: %s", frame.job.key, msg)
        if targets.json:
            text = dumps(record).encode("utf-8")
            files += [(p, text) for p in targets.json]
        if targets.previews:
            # `pixels` are the anonymised ones (render draws the masks before returning them).
            crop = crop_preview(pixels, self.cfg.preview_dim, self.cfg.preview_center)
            jpeg = self.preview_encoder.encode(crop, self.quality(frame), 2)
            files += [(p, jpeg) for p in targets.previews]
        frame.timings["metadata"] = time.perf_counter() - t0
        return record, files
