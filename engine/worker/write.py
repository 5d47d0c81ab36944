"""Write stage: render the anonymised JPEG, build the metadata record, JSON and previews, then
publish every output through the sinks (engine.worker.sinks) — all or none."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from engine.config import Config
from engine.meta.exif import read_exif
from engine.meta.outputs import crop_preview
from engine.meta.record import build_record, dumps
from engine.types import Detections, Frame, Job, Result
from engine.worker.render import Renderer
from engine.worker.regions import Corrections, StaticMasks, merge, output_root, record_for
from engine.worker.sinks import ALWAYS, SINKS, publish
from kernels import class_counts

__all__ = ["Writer", "Prepared"]

LOG = logging.getLogger("sladd")


@dataclass
class Prepared:
    """An image ready to be written: (path, bytes or None = copy of the input) per output file."""

    job: Job
    files: list
    result: Result


class Writer:
    """One per write worker. `meta` (a MetaContext) turns on the metadata JSON and previews;
    `db` asks for the metadata record (a database row) even without JSON files."""

    def __init__(self, cfg: Config, decoder, encoder=None, meta=None, db: bool = False,
                 sources: Optional[dict] = None):
        from engine.codecs import TurboEncoder

        self.cfg, self.meta, self.db = cfg, meta, db
        self.sources = sources or {}              # class name -> {"kind": "model", "card", "sha256"}
        self.static = StaticMasks(cfg.static_masks)
        encoder = encoder or TurboEncoder()
        # Previews are small host crops, CMYK is host only: TurboJPEG for both.
        host = encoder if isinstance(encoder, TurboEncoder) else TurboEncoder()
        self.renderer = Renderer(cfg, decoder, encoder, host)

    @property
    def encoder(self):
        return self.renderer.encoder

    def render(self, frame: Frame, dets: Detections, need_pixels: bool = False):
        return self.renderer.render(frame, dets, need_pixels)

    def __call__(self, frame: Frame, dets: Detections) -> Result:
        return self.publish(self.prepare(frame, dets))

    def prepare(self, frame: Frame, dets: Detections) -> "Prepared":
        """Everything that can fail (JPEG, metadata record, JSON text, preview) is computed
        before the first file is written: the files to write, and the result record."""
        job = frame.job
        plan = {s.kind: (s.targets(self.cfg, job) if self.meta is not None or s.kind in ALWAYS else [])
                for s in SINKS}
        dets, kinds, static_paths = self._extras(frame, dets)
        data, masked, pixels = self.renderer.render(frame, dets, need_pixels=bool(plan["preview"]))
        counts = class_counts(dets.classes[dets.counted] if dets.counted is not None else dets.classes, dets.names)
        record, rendered = None, {"image": data}
        if plan["detections"]:
            h, w = frame.full_size
            rec = record_for(job.key, h, w, dets, kinds, self.sources, self.renderer.masker, static_paths)
            rendered["detections"] = json.dumps(rec, ensure_ascii=True).encode("ascii")
        if self.meta is not None:
            record, rendered["json"], rendered["preview"] = self._metadata(frame, pixels, counts, plan)
        files = [(p, s.payload(rendered)) for s in SINKS for p in plan[s.kind]]
        return Prepared(job, files, Result(job=job, outputs=[], detections={k: int(v) for k, v in counts.items()},
                                           masked=masked, timings=dict(frame.timings), record=record))

    def _extras(self, frame: Frame, dets: Detections):
        """The detections plus the static masks and the recorded corrections of this image:
        (detections, source kind per detection, the static masks' paths)."""
        job = frame.job
        h, w = frame.full_size
        extra, static_paths = [], []
        if self.static:
            model = read_exif(frame.exif).model if any(m for _, _, m in self.static.specs) else None
            for path, m in self.static.for_image(job.key, h, w, model):
                ys, xs = np.nonzero(m)
                if len(ys):
                    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
                    extra.append(("static", [x0, y0, x1, y1], "mask", m[y0:y1, x0:x1]))
                    static_paths.append(path)
        corr = Corrections.load(output_root(job), job.key)
        keep = [i for i in range(len(dets)) if not corr.removes(dets.boxes[i])] if corr.remove else None
        extra += [("correction", b, "box", None) for b in corr.add]
        if not extra and keep is None:
            return dets, ["model"] * len(dets), static_paths
        merged, kinds = merge(dets, extra, keep)
        return merged, kinds, static_paths

    @staticmethod
    def publish(prepared: "Prepared") -> Result:
        """Write the prepared files (each atomically, fsync'ed; all or none). I/O only, so the
        stream runs it in its own threads and the fsyncs of several images overlap."""
        t0 = time.perf_counter()
        result = prepared.result
        result.outputs = publish(prepared.job, prepared.files)
        result.timings["write"] = time.perf_counter() - t0
        return result

    def _metadata(self, frame: Frame, pixels, counts: dict, plan: dict) -> tuple[Optional[dict], Optional[bytes],
                                                                                  Optional[bytes]]:
        """(metadata record or None, JSON bytes or None, preview JPEG or None)."""
        t0 = time.perf_counter()
        record = text = jpeg = None
        if plan["json"] or self.db:
            w, h = frame.stored_size
            # frame.exif is the EXIF the output carries: render() replaced the input's by its
            # cleaned copy (engine.embedded), so the record never shows a thumbnail or a picture
            # in a text tag that the image no longer holds.
            record, warnings = build_record(read_exif(frame.exif), w, h, str(frame.job.path), self.meta,
                                            file_path=frame.job.path, detections=counts,
                                            preview_name=f"{frame.job.path.stem}_preview.jpg")
            for msg in warnings:
                LOG.debug("%s: %s", frame.job.key, msg)
        if plan["json"]:
            text = dumps(record).encode("utf-8")
        if plan["preview"]:
            # `pixels` are the anonymised ones (render draws the masks before returning them).
            crop = crop_preview(pixels, self.cfg.preview_dim, self.cfg.preview_center)
            jpeg = self.renderer.preview_encoder.encode(crop, self.renderer.quality(frame), 2)
        frame.timings["metadata"] = time.perf_counter() - t0
        return record, text, jpeg
