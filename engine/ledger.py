"""The ledger: one SQLite row per image (key, status, outputs, error, timings).

A rerun skips images marked done whose input is unchanged; images left `running` by an
interrupted run have their temporary files removed and are processed again.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Optional

__all__ = ["Ledger", "DONE", "FAILED", "RUNNING"]

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
    updated    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_status ON images(status);
"""


class Ledger:
    """Thread-safe (one connection behind a lock; SQLite in WAL mode)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.commit()
            self._db.close()

    def get(self, key: str) -> Optional[dict]:
        with self._lock:
            cur = self._db.execute("SELECT key, status, size, mtime_ns, outputs, error, stage FROM images "
                                   "WHERE key = ?", (key,))
            row = cur.fetchone()
        if row is None:
            return None
        return {"key": row[0], "status": row[1], "size": row[2], "mtime_ns": row[3],
                "outputs": json.loads(row[4]) if row[4] else [], "error": row[5], "stage": row[6]}

    def interrupted(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT key FROM images WHERE status = 'running'")]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())

    def _upsert(self, key, status, size, mtime_ns, outputs=None, detections=None, error=None,
                stage=None, timings=None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO images (key, status, size, mtime_ns, outputs, detections, error, stage, timings, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET status=excluded.status, "
                "size=excluded.size, mtime_ns=excluded.mtime_ns, outputs=excluded.outputs, "
                "detections=excluded.detections, error=excluded.error, stage=excluded.stage, "
                "timings=excluded.timings, updated=excluded.updated",
                (key, status, size, mtime_ns, json.dumps(outputs) if outputs is not None else None,
                 json.dumps(detections) if detections is not None else None, error, stage,
                 json.dumps(timings) if timings is not None else None, time.time()))
            self._db.commit()

    def mark_running(self, job) -> None:
        self._upsert(job.key, RUNNING, job.size, job.mtime_ns)

    def mark_done(self, job, outputs, detections, timings) -> None:
        self._upsert(job.key, DONE, job.size, job.mtime_ns, outputs=outputs, detections=detections,
                     timings=timings)

    def mark_failed(self, job, stage: str, error: str, timings=None) -> None:
        self._upsert(job.key, FAILED, job.size, job.mtime_ns, error=error, stage=stage, timings=timings)
