"""The images of a run as the review page sees them: keys, a summary of each detections record,
the filters, and the files behind a key (never one outside its root).

Keys are the ledger's (paths relative to the input root, `/` separators). The page asks for a
key; it is served only when it is one of the run's keys, so a crafted key (`../x`, an absolute
path) is unknown rather than resolved.
"""
from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

__all__ = ["RunIndex", "Summary", "ReviewError", "MEDIA_TYPES"]

LOG = logging.getLogger("sladd")

# What the page can show; other suffixes (a run's output is JPEG, or PNG for PNG inputs) are refused.
MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jpe": "image/jpeg", ".png": "image/png"}
MAX_IMAGE_BYTES = 512 << 20


class ReviewError(ValueError):
    """A request the review server refuses: `status` is the HTTP status (400 bad input, 404 unknown)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Summary:
    """One image of the run. `classes`: class -> highest model score among its regions (None for
    the classes of static masks and corrections). `found`: regions from a model."""

    key: str
    record: bool = False
    regions: int = 0
    found: int = 0
    classes: dict = field(default_factory=dict)
    scores: list = field(default_factory=list)      # (class, score) of every scored region

    def as_json(self) -> dict:
        return {"key": self.key, "record": self.record, "regions": self.regions, "found": self.found,
                "classes": self.classes}

    def matches(self, cls: Optional[str], lo: Optional[float], hi: Optional[float]) -> bool:
        """True when a region of class `cls` (any class when None) has a score in [lo, hi]; with
        no bounds, when the image has a region of that class at all."""
        if lo is None and hi is None:
            return cls is None or cls in self.classes
        return any((cls is None or c == cls) and (lo is None or s >= lo) and (hi is None or s <= hi)
                   for c, s in self.scores)


def summarise(key: str, record: Optional[dict]) -> Summary:
    s = Summary(key=key, record=record is not None)
    for r in (record or {}).get("regions", []):
        cls, score = str(r.get("class", "?")), r.get("score")
        model = (r.get("source") or {}).get("kind") == "model"
        s.regions += 1
        s.found += model
        # Static masks and corrections carry a nominal score of 1: the score filters are the models'.
        if model and isinstance(score, (int, float)) and math.isfinite(score):
            s.scores.append((cls, float(score)))
            best = s.classes.get(cls)
            s.classes[cls] = float(score) if best is None else max(best, float(score))
        else:
            s.classes.setdefault(cls, None)
    return s


def _inside(path: Path, root: Path) -> Path:
    """`path` with its links resolved, when that is a regular file under `root` (resolved)."""
    real = Path(os.path.realpath(path))
    if root not in real.parents:
        raise ReviewError(f"{path} is outside {root}: not served", 404)
    if not real.is_file():
        raise ReviewError(f"{path} is not a file", 404)
    return real


class RunIndex:
    """The run under OUTPUT: the images the ledger marks done (or, without a ledger, those with a
    detections record), each with a summary of its record. Thread-safe; `refresh(key)` after a
    correction. `load_record(output, key)` is engine.correct's (it raises when there is none)."""

    def __init__(self, output: Path, originals: Path, *, load_record: Callable, missing: type):
        self.output = Path(os.path.realpath(output))
        self.originals = Path(os.path.realpath(originals))
        self._load, self._missing = load_record, missing
        self._lock = threading.Lock()
        self.skipped = 0                                # keys the page cannot carry (not UTF-8)
        keys = self._keys()
        self._by_key = {k: summarise(k, self._readable(k)) for k in keys}
        self.keys = sorted(self._by_key)

    # -- the run's keys ----------------------------------------------------------------------
    def _keys(self) -> list[str]:
        ledger = self.output / ".sladd" / "ledger.sqlite"
        if ledger.is_file():
            return self._ledger_keys(ledger)
        records = self.output / ".sladd" / "detections"
        if not records.is_dir():
            raise ReviewError(f"{self.output} holds neither a ledger ({ledger}) nor detections records ({records}): "
                              "give -o the output folder of a `sladd run`")
        return [p.relative_to(records).as_posix()[: -len(".json")] for p in records.rglob("*.json") if p.is_file()]

    def _ledger_keys(self, ledger: Path) -> list[str]:
        # Read-only: reviewing never writes the ledger (engine.correct updates it on a save).
        db = sqlite3.connect(f"{ledger.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute("SELECT key, key_bytes FROM images WHERE status = 'done'").fetchall()
        finally:
            db.close()
        keys = []
        for key, raw in rows:
            if raw is not None:
                # A name that is not UTF-8 cannot travel in a URL or JSON exactly; `sladd correct`
                # can still correct it.
                self.skipped += 1
                continue
            keys.append(key)
        if self.skipped:
            LOG.warning("%d image(s) with names that are not UTF-8 are left out of the review page "
                        "(use `sladd correct` for them)", self.skipped)
        return keys

    def _readable(self, key: str) -> Optional[dict]:
        """The record for the summary at start-up; a broken one is listed (and its page says why)."""
        try:
            return self._record_or_none(key)
        except (OSError, ValueError) as exc:
            LOG.warning("review: the detections record of %s cannot be read: %s", key, exc)
            return None

    def _record_or_none(self, key: str) -> Optional[dict]:
        try:
            return self._load(self.output, key)
        except self._missing:
            return None

    # -- queries -----------------------------------------------------------------------------
    def summary(self, key) -> Summary:
        if not isinstance(key, str) or key not in self._by_key:
            raise ReviewError(f"unknown image {str(key)[:200]!r}: not an image of this run", 404)
        with self._lock:
            return self._by_key[key]

    def record(self, key: str) -> dict:
        """The detections record of `key` (ReviewError 404 when the run has none for it)."""
        self.summary(key)
        rec = self._record_or_none(key)
        if rec is None:
            raise ReviewError(f"{key}: no detections record (an image written before sladd kept them): "
                              "rerun it with --force to review it", 404)
        return rec

    def refresh(self, key: str) -> dict:
        rec = self.record(key)
        with self._lock:
            self._by_key[key] = summarise(key, rec)
        return rec

    def classes(self) -> list[str]:
        with self._lock:
            return sorted({c for s in self._by_key.values() for c in s.classes})

    def select(self, cls: Optional[str] = None, min_score: Optional[float] = None,
               max_score: Optional[float] = None, empty: bool = False) -> list[Summary]:
        """The images, in key order, that pass the filters. `empty`: those in which no model found
        anything (static masks aside); it cannot be combined with a class or a score."""
        if empty and (cls is not None or min_score is not None or max_score is not None):
            raise ReviewError("the filter `empty` (images with nothing found) cannot be combined with a class "
                              "or a score: clear those, or untick it")
        with self._lock:
            items = [self._by_key[k] for k in self.keys]
        if empty:
            return [s for s in items if s.found == 0]
        return [s for s in items if s.matches(cls, min_score, max_score)]

    # -- files -------------------------------------------------------------------------------
    def output_file(self, key: str) -> tuple[Path, str]:
        """(the anonymised image of `key` under OUTPUT, its media type)."""
        return self._file(self.output, key)

    def original_file(self, key: str) -> tuple[Path, str]:
        """(the original of `key`: its archive copy or input, whichever root the page was given)."""
        return self._file(self.originals, key)

    def _file(self, root: Path, key: str) -> tuple[Path, str]:
        self.summary(key)
        rel = Path(key)
        if rel.is_absolute() or ".." in rel.parts:
            raise ReviewError(f"unknown image {key[:200]!r}", 404)
        media = MEDIA_TYPES.get(rel.suffix.lower())
        if media is None:
            raise ReviewError(f"{key}: not a JPEG or PNG file name; not served", 404)
        real = _inside(root / rel, root)
        if real.stat().st_size > MAX_IMAGE_BYTES:
            raise ReviewError(f"{key}: larger than {MAX_IMAGE_BYTES >> 20} MiB; not served", 404)
        return real, media
