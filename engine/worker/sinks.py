"""Output sinks of one image: the anonymised image, the archive copy, the metadata JSON files and
the previews — one class each with the same interface, so the write stage, the driver and
`sladd check` read the list of expected outputs from one place. (The database row is the
driver's: engine.db.sink spools the record the write stage returns.)"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from engine.fsutil import copy_atomic, write_atomic
from engine.meta.outputs import targets_for

__all__ = ["Sink", "ImageSink", "ArchiveSink", "JsonSink", "PreviewSink", "DetectionsSink", "SINKS", "ALWAYS",
           "expected", "publish"]

LOG = logging.getLogger("sladd")


class Sink:
    """`targets(cfg, job)`: the files this sink writes for `job` (none when the configuration
    does not ask for it); `payload(rendered)`: bytes to write, or None to copy the input."""

    kind = ""

    def targets(self, cfg, job) -> list[Path]:
        raise NotImplementedError

    def payload(self, rendered: dict) -> Optional[bytes]:
        return rendered[self.kind]


class ImageSink(Sink):
    kind = "image"

    def targets(self, cfg, job) -> list[Path]:
        return [Path(job.output)]


class ArchiveSink(Sink):
    """The original bytes, unchanged: archives are private."""

    kind = "archive"

    def targets(self, cfg, job) -> list[Path]:
        return [Path(job.archive)] if job.archive is not None else []

    def payload(self, rendered: dict) -> Optional[bytes]:
        return None


class JsonSink(Sink):
    kind = "json"

    def targets(self, cfg, job) -> list[Path]:
        return list(targets_for(cfg, job).json)


class PreviewSink(Sink):
    kind = "preview"

    def targets(self, cfg, job) -> list[Path]:
        return list(targets_for(cfg, job).previews)


class DetectionsSink(Sink):
    """The detections record (engine.worker.regions): every masked region, its source and what
    was drawn — the audit trail, and what `sladd correct` starts from."""

    kind = "detections"

    def targets(self, cfg, job) -> list[Path]:
        from engine.worker.regions import output_root, record_path

        if not cfg.output.detections:
            return []
        return [record_path(output_root(job), job.key, beside=cfg.output.detections_beside)]


SINKS: tuple[Sink, ...] = (ImageSink(), ArchiveSink(), JsonSink(), PreviewSink(), DetectionsSink())
# Written whatever the metadata settings (the JSON and previews follow the reference's switches).
ALWAYS = ("image", "archive", "detections")


def expected(cfg, job, *, metadata: bool = True) -> dict[str, list[Path]]:
    """kind -> the files a run writes for `job` (`metadata=False`: image and archive only)."""
    return {s.kind: (s.targets(cfg, job) if metadata or s.kind in ALWAYS else []) for s in SINKS}


def publish(job, planned: list[tuple[Path, Optional[bytes]]]) -> list[str]:
    """Write each (path, bytes) atomically, or copy the input where bytes is None; on a failure
    remove the files already written and raise, so an image is published whole or not at all."""
    written: list[Path] = []
    try:
        for path, blob in planned:
            if blob is None:
                copy_atomic(job.path, path)
            else:
                write_atomic(path, blob)
            written.append(path)
    except BaseException:
        for p in reversed(written):
            try:
                p.unlink(missing_ok=True)
            except OSError as exc:
                LOG.warning("%s: could not remove %s after a failed write: %s", job.key, p, exc)
        raise
    return [str(p) for p in written]
