"""Write stage: anonymise and encode, keep the input's metadata segments, write atomically."""
from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from engine.config import Config
from engine.decode import turbojpeg
from engine.fsutil import copy_atomic, write_atomic
from engine.jpeg import set_orientation, splice_segments
from engine.mask import Masker
from engine.meta.exif import read_exif
from engine.meta.outputs import crop_preview, targets_for, write_json_files, write_previews
from engine.meta.record import build_record, dumps
from engine.types import Detections, Frame, Result
from kernels import class_counts, to_host

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
        pixels are copied to the host once, for the host encoder."""
        if len(dets) == 0 or not self.cfg.draw_mask:
            if self.cfg.output.copy_unmasked:
                return frame.data, False, (to_host(self.decoder.full_pixels(frame)) if need_pixels else None)
            pixels = self.decoder.full_pixels(frame)
            masked = False
        else:
            t0 = time.perf_counter()
            # The frame owns its decoded pixels and nothing reads them after this: draw in place.
            pixels = self.masker(self.decoder.full_pixels(frame), dets, inplace=True)
            frame.timings["mask"] = time.perf_counter() - t0
            masked = True
        t0 = time.perf_counter()
        if not getattr(self.encoder, "accepts_device_arrays", False):
            pixels = np.ascontiguousarray(to_host(pixels))
        encoded = self.encoder.encode(pixels, self.quality(frame), frame.subsampling)
        segments = frame.segments
        if frame.orientation != 1:
            # Pixels are upright now; keep every EXIF byte but the orientation value.
            segments = [set_orientation(s, 1) if s[4:10] == b"Exif\x00\x00" else s for s in segments]
        data = splice_segments(encoded, segments)
        frame.timings["encode"] = time.perf_counter() - t0
        return data, masked, (to_host(pixels) if need_pixels else None)

    def __call__(self, frame: Frame, dets: Detections) -> Result:
        job = frame.job
        targets = targets_for(self.cfg, job) if self.meta is not None else None
        data, masked, pixels = self.render(frame, dets, need_pixels=bool(targets and targets.previews))
        t0 = time.perf_counter()
        outputs = []
        write_atomic(job.output, data)
        outputs.append(str(job.output))
        if job.archive is not None:
            copy_atomic(job.path, job.archive)
            outputs.append(str(job.archive))
        counts = class_counts(dets.classes[dets.counted] if dets.counted is not None else dets.classes, dets.names)
        record = None
        if targets is not None:
            more, record = self._metadata(frame, pixels, counts, targets)
            outputs += more
        frame.timings["write"] = time.perf_counter() - t0
        return Result(job=job, outputs=outputs, detections={k: int(v) for k, v in counts.items()}, masked=masked,
                      timings=dict(frame.timings), record=record)

    def _metadata(self, frame: Frame, pixels, counts: dict, targets) -> tuple[list[str], Optional[dict]]:
        t0 = time.perf_counter()
        out, record = [], None
        if targets.json or self.db:
            w, h = frame.stored_size
            record, warnings = build_record(read_exif(frame.exif), w, h, str(frame.job.path), self.meta,
                                            file_path=frame.job.path, detections=counts,
                                            preview_name=f"{frame.job.path.stem}_preview.jpg")
            for msg in warnings:
                LOG.debug("%s: %s", frame.job.key, msg)
        if targets.json:
            out += write_json_files(dumps(record), targets.json)
        if targets.previews:
            crop = crop_preview(pixels, self.cfg.preview_dim, self.cfg.preview_center)
            jpeg = self.preview_encoder.encode(crop, self.quality(frame), 2)
            out += write_previews(jpeg, targets.previews)
        frame.timings["metadata"] = time.perf_counter() - t0
        return out, record
