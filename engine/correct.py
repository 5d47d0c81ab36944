"""`sladd correct`: re-render listed images from their originals with corrections.

A corrections file is {"images": [{"image": "<relative path>", "add": [[x1, y1, x2, y2], ...],
"remove": [[x1, y1, x2, y2], ...]}]}, boxes in the upright image's pixels. `add` masks extra
regions; `remove` drops the recorded model detections that overlap a box (a false positive). Each
image is decoded again from its ORIGINAL (the archive copy, or the input), drawn with the model
detections of its record that survive, the static masks and every correction kept for it so far,
and written atomically; its detections record and ledger row are updated, its metadata JSON and
database row are left as they are. Corrections are kept in OUTPUT/.sladd/corrections/<key>.json,
so a later forced rerun (a new model) applies them again.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np

from engine.decode import read_bytes
from engine.driver.driver import ledger_path
from engine.fsutil import write_atomic
from engine.types import Detections, ImageError, Job

__all__ = ["CorrectionError", "load_record", "apply_corrections", "parse_corrections"]

LOG = logging.getLogger("sladd")


class CorrectionError(ValueError):
    """A correction that cannot be applied; the message names the image and the problem."""


def _key(key) -> str:
    k = str(key).replace("\\", "/")
    p = PurePosixPath(k)
    if not k or p.is_absolute() or ".." in p.parts or k.startswith(".sladd"):
        raise CorrectionError(f"image {key!r}: not a relative path inside the output folder")
    return p.as_posix()


def _box(b, key: str) -> list[float]:
    try:
        x1, y1, x2, y2 = (float(v) for v in b)
    except (TypeError, ValueError):
        raise CorrectionError(f"image {key}: a box must be [x1, y1, x2, y2], got {b!r}") from None
    if not (np.isfinite([x1, y1, x2, y2]).all() and x2 > x1 and y2 > y1):
        raise CorrectionError(f"image {key}: box {b!r} is empty or not finite (need x2 > x1, y2 > y1)")
    return [x1, y1, x2, y2]


def parse_corrections(data) -> list[dict]:
    """The validated list of {"image", "add", "remove"} of a corrections document."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CorrectionError('a corrections file is {"images": [{"image": ..., "add": [...], "remove": [...]}]}')
    out = []
    for item in data["images"]:
        if not isinstance(item, dict) or "image" not in item:
            raise CorrectionError(f"each entry needs an \"image\": {item!r}")
        key = _key(item["image"])
        out.append({"image": key, "add": [_box(b, key) for b in item.get("add", [])],
                    "remove": [_box(b, key) for b in item.get("remove", [])]})
    return out


def load_record(output: Path, key: str, cfg=None) -> dict:
    from engine.worker.regions import record_path

    beside = bool(cfg is not None and cfg.output.detections_beside)
    p = record_path(Path(output), _key(key), beside=beside)
    if not p.is_file():
        raise CorrectionError(f"image {key}: no detections record ({p}); was it anonymised by sladd run into "
                              f"{output}?")
    return json.loads(p.read_text(encoding="utf-8"))


def _original(key: str, archive: Optional[Path], input_dir: Optional[Path]) -> Path:
    for root in (archive, input_dir):
        if root is not None and (Path(root) / key).is_file():
            return Path(root) / key
    raise CorrectionError(f"image {key}: no original to start from (looked in "
                          f"{', '.join(str(Path(r) / key) for r in (archive, input_dir) if r is not None) or 'nothing'}"
                          "); pass the run's archive (-a) or input (-i) folder")


def _model_detections(record: dict) -> Detections:
    """The record's model regions as detections (segmentation masks come back as their boxes:
    a superset of what was drawn)."""
    regions = [r for r in record["regions"] if r.get("source", {}).get("kind") == "model"]
    names = tuple(dict.fromkeys(r["class"] for r in regions))
    n = len(regions)
    return Detections(np.asarray([r["box"] for r in regions], np.float32).reshape(n, 4),
                      np.asarray([r.get("score", 1.0) for r in regions], np.float32),
                      np.asarray([names.index(r["class"]) for r in regions], np.int32), names,
                      shapes=tuple("box" if r.get("shape") == "mask" else r.get("shape", "box") for r in regions))


def _keep_corrections(output: Path, key: str, add: list, remove: list) -> None:
    from engine.worker.regions import Corrections, corrections_path

    old = Corrections.load(output, key)
    data = {"add": old.add + [b for b in add if b not in old.add],
            "remove": old.remove + [b for b in remove if b not in old.remove]}
    write_atomic(corrections_path(output, key), json.dumps(data).encode("ascii"))


def apply_corrections(cfg, output: Path, *, archive: Optional[Path] = None, input: Optional[Path] = None,
                      corrections) -> list[str]:
    """Apply `corrections` (a document or the parsed list); returns the keys re-rendered."""
    from engine.codecs import TurboDecoder, create_encoder
    from engine.ledger import Ledger
    from engine.lock import RunLock
    from engine.worker.write import Writer

    items = parse_corrections(corrections) if isinstance(corrections, dict) else corrections
    output = Path(output)
    # Check everything first: a file with one bad entry changes nothing.
    plan = [(it, load_record(output, it["image"], cfg), _original(it["image"], archive, input)) for it in items]
    done = []
    with RunLock(output):
        ledger = Ledger(ledger_path(output))
        try:
            decoder = TurboDecoder(min_scale=1.0, max_pixels=cfg.engine.max_image_pixels)
            writer = Writer(cfg, decoder, encoder=create_encoder("turbojpeg"))
            for it, record, original in plan:
                key = it["image"]
                _keep_corrections(output, key, it["add"], it["remove"])
                data = read_bytes(original)
                st = original.stat()
                job = Job(path=original, key=key, output=output / key, archive=None,
                          error_dir=output / ".sladd" / "unused", size=st.st_size, mtime_ns=st.st_mtime_ns)
                try:
                    frame = decoder.decode(job, data)
                except ImageError as exc:
                    raise CorrectionError(f"image {key}: the original {original} cannot be decoded: {exc}") from None
                # Without metadata the writer prepares the image and its detections record only:
                # the metadata JSON, the previews and the database row stay as they are.
                result = Writer.publish(writer.prepare(frame, _model_detections(record)))
                row = ledger.get(key)
                if row is not None:
                    ledger.mark_done(job_for_ledger(row, job), row["outputs"], result.detections, result.timings)
                done.append(key)
                LOG.info("corrected %s: %d added, %d removed", key, len(it["add"]), len(it["remove"]))
            ledger.flush()
        finally:
            ledger.close()
    return done


def job_for_ledger(row: dict, job: Job) -> Job:
    """The ledger row keeps the input's size and mtime (so a rerun still sees it unchanged)."""
    return Job(path=job.path, key=job.key, output=job.output, archive=None, error_dir=job.error_dir,
               size=row["size"], mtime_ns=row["mtime_ns"])
