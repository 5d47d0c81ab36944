"""The ledger: one SQLite row per image (key, status, outputs, error, timings).

A rerun skips images marked done whose input is unchanged; images left `running` by an
interrupted run have their temporary files removed and are processed again.

Keys are paths relative to the input root. A name that is not valid UTF-8 (bytes from another
system) is stored readable, its undecodable bytes as `\\xNN` (`fsutil.text_safe`), with its exact
bytes in `key_bytes` (NULL for every other key); the row is that file's only when the bytes match.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Optional

from engine.fsutil import is_no_space, text_safe

__all__ = ["Ledger", "LedgerError", "DONE", "FAILED", "RUNNING"]

LOG = logging.getLogger("sladd")

DONE, FAILED, RUNNING = "done", "failed", "running"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    key        TEXT PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    size       INTEGER,
    mtime_ns   INTEGER,
    outputs    TEXT,
    detections TEXT,
    error      TEXT,
    stage      TEXT,
    timings    TEXT,
    updated    REAL NOT NULL,
    key_bytes  BLOB
);
CREATE INDEX IF NOT EXISTS images_status ON images(status);
"""


class LedgerError(OSError):
    """The ledger cannot be written. `errno` is ENOSPC for a full disk or quota (SQLITE_FULL),
    EIO otherwise; `filename` is the ledger file."""


def _raw(key: str) -> Optional[bytes]:
    """The key's exact bytes when it is not valid UTF-8, else None."""
    return None if text_safe(key) == key else os.fsencode(key)


# Rows are committed in small groups: a commit per image was the largest part of the driver's
# per-image cost for small images. A crash loses at most the last group, whose images are then
# simply redone (outputs are written atomically under the same names).
COMMIT_ROWS, COMMIT_SECONDS = 64, 0.25


class Ledger:
    """Thread-safe (one connection behind a lock; SQLite in WAL mode). `flush()` makes every row
    written so far durable (before an input is deleted, at the end of a run)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._uncommitted, self._last_commit = 0, time.monotonic()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(images)")}
            if "key_bytes" not in cols:                  # a ledger written before key_bytes existed
                self._db.execute("ALTER TABLE images ADD COLUMN key_bytes BLOB")
            self._db.commit()
        except sqlite3.Error as exc:
            raise self._error(exc, "cannot open the ledger") from exc

    def _error(self, exc: sqlite3.Error, what: str) -> LedgerError:
        full = is_no_space(exc)
        return LedgerError(errno.ENOSPC if full else errno.EIO, f"{what}: {exc}", str(self.path))

    def close(self) -> None:
        with self._lock:
            try:
                self._db.commit()
            except sqlite3.Error as exc:
                # The rows of the last group are lost: their images are redone by the next run.
                LOG.error("ledger %s: final commit failed: %s", self.path, exc)
            self._db.close()

    def get(self, key: str) -> Optional[dict]:
        with self._lock:
            cur = self._db.execute("SELECT key, status, size, mtime_ns, outputs, error, stage, key_bytes "
                                   "FROM images WHERE key = ?", (text_safe(key),))
            row = cur.fetchone()
        if row is None or (bytes(row[7]) if row[7] is not None else None) != _raw(key):
            return None                     # none, or another file whose name reads the same
        return {"key": key, "status": row[1], "size": row[2], "mtime_ns": row[3],
                "outputs": json.loads(row[4]) if row[4] else [], "error": row[5], "stage": row[6]}

    def interrupted(self) -> list[str]:
        """Keys left `running`, as the walk gives them (exact names, surrogate-escaped)."""
        with self._lock:
            rows = self._db.execute("SELECT key, key_bytes FROM images WHERE status = 'running'").fetchall()
        return [os.fsdecode(bytes(b)) if b is not None else k for k, b in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())

    def _upsert(self, key, status, size, mtime_ns, outputs=None, detections=None, error=None,
                stage=None, timings=None) -> None:
        # Outputs are JSON with ASCII escapes: a non-UTF-8 path round-trips exactly (\udcxx).
        params = (text_safe(key), status, size, mtime_ns, json.dumps(outputs) if outputs is not None else None,
                  json.dumps(detections) if detections is not None else None,
                  text_safe(error) if error is not None else None, stage,
                  json.dumps(timings) if timings is not None else None, time.time(), _raw(key))
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO images (key, status, size, mtime_ns, outputs, detections, error, stage, timings, "
                    "updated, key_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "status=excluded.status, size=excluded.size, mtime_ns=excluded.mtime_ns, "
                    "outputs=excluded.outputs, detections=excluded.detections, error=excluded.error, "
                    "stage=excluded.stage, timings=excluded.timings, updated=excluded.updated, "
                    "key_bytes=excluded.key_bytes", params)
                self._uncommitted += 1
                if self._uncommitted >= COMMIT_ROWS or time.monotonic() - self._last_commit >= COMMIT_SECONDS:
                    self._commit()
            except sqlite3.Error as exc:
                try:
                    self._db.rollback()
                except sqlite3.Error:
                    pass                    # the connection is unusable; the raise below says why
                raise self._error(exc, f"cannot write the ledger row of {text_safe(key)}") from exc

    def _commit(self) -> None:
        self._db.commit()
        self._uncommitted, self._last_commit = 0, time.monotonic()

    def flush(self) -> None:
        """Commit what is pending now."""
        with self._lock:
            try:
                self._commit()
            except sqlite3.Error as exc:
                raise self._error(exc, "cannot commit the ledger") from exc

    def forget_running(self) -> int:
        """Drop the rows still `running` (only once no worker can still finish them)."""
        with self._lock:
            n = self._db.execute("DELETE FROM images WHERE status = 'running'").rowcount
            self._db.commit()
        return n

    def mark_running_many(self, jobs) -> None:
        """Mark `jobs` running and commit them together."""
        for job in jobs:
            self._upsert(job.key, RUNNING, job.size, job.mtime_ns)
        self.flush()

    def mark_running(self, job) -> None:
        self._upsert(job.key, RUNNING, job.size, job.mtime_ns)

    def mark_done(self, job, outputs, detections, timings) -> None:
        self._upsert(job.key, DONE, job.size, job.mtime_ns, outputs=outputs, detections=detections,
                     timings=timings)

    def mark_failed(self, job, stage: str, error: str, timings=None) -> None:
        self._upsert(job.key, FAILED, job.size, job.mtime_ns, error=error, stage=stage, timings=timings)
