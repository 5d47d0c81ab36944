"""Database rows of a run: built from each image's JSON record, spooled in a local SQLite file
first, then sent in batches of `db_max_n_accumulated_rows`, one transaction each, as upserts.

A database outage or a crash loses nothing: rows stay in the spool until the database has
committed them, and a later run (or `sladd db flush`) sends what is pending.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Optional

from engine.db.dialects import Dialect, dialect_for_url
from engine.db.geometry import SDOGeometry
from engine.db.table import RowRejected, TableDef
from engine.logs import redact_text

__all__ = ["DbSink", "DatabaseLimitExceeded", "DatabaseConnectError", "encode_row", "decode_row"]

LOG = logging.getLogger("sladd")


class DatabaseLimitExceeded(RuntimeError):
    pass


class DatabaseConnectError(RuntimeError):
    """Connecting failed; the driver's message with any password redacted."""


def encode_row(row: dict) -> str:
    def enc(v):
        if isinstance(v, _dt.datetime):
            return {"$dt": v.isoformat()}
        if isinstance(v, SDOGeometry):
            return {"$geom": [v.gtype, v.srid, list(v.point)]}
        return v
    return json.dumps({k: enc(v) for k, v in row.items()}, ensure_ascii=False)


def decode_row(text: str) -> dict:
    def dec(v):
        if isinstance(v, dict) and "$dt" in v:
            return _dt.datetime.fromisoformat(v["$dt"])
        if isinstance(v, dict) and "$geom" in v:
            g = v["$geom"]
            return SDOGeometry(g[0], g[1], tuple(g[2]))
        return v
    return {k: dec(v) for k, v in json.loads(text).items()}


def _first_line(exc: BaseException) -> str:
    """The first line of an error, redacted (drivers may quote the connection string)."""
    text = str(exc).strip()
    return redact_text(text.splitlines()[0]) if text else type(exc).__name__


class DbSink:
    """Thread-safe; the pipeline's collector thread adds rows and flushes."""

    def __init__(self, table: TableDef, url: str, spool: Path, *, password: Optional[str] = None,
                 batch: int = 100, max_errors: int = 1000, max_cache: int = 1000, create: bool = False,
                 dialect: Optional[Dialect] = None):
        self.table, self.url, self.password = table, url, password
        self.dialect = dialect or dialect_for_url(url)
        self.batch, self.max_errors, self.max_cache = batch, max_errors, max_cache
        self.written = self.rejected = self.errors = 0
        self._lock = threading.Lock()
        self._con = None
        spool = Path(spool)
        spool.parent.mkdir(parents=True, exist_ok=True)
        self._spool = sqlite3.connect(str(spool), check_same_thread=False, timeout=30)
        self._spool.execute("PRAGMA journal_mode=WAL")
        self._spool.execute("CREATE TABLE IF NOT EXISTS spool (pk TEXT PRIMARY KEY, row TEXT NOT NULL)")
        # Rows the database refused are kept here with the error, never dropped.
        self._spool.execute("CREATE TABLE IF NOT EXISTS refused (pk TEXT PRIMARY KEY, row TEXT NOT NULL, error TEXT)")
        self._spool.commit()
        self._create = create

    # --- spooling ------------------------------------------------------------------------------
    def add(self, record: dict) -> Optional[str]:
        """Spool the row of one JSON record. Returns the rejection reason, or None."""
        try:
            row = self.table.make_row(record)
        except RowRejected as exc:
            self.rejected += 1
            return str(exc)
        with self._lock:
            self._spool.execute("INSERT OR REPLACE INTO spool (pk, row) VALUES (?, ?)",
                                (str(row[self.table.pk]), encode_row(row)))
            self._spool.commit()
        return None

    def pending(self) -> int:
        with self._lock:
            return self._spool.execute("SELECT COUNT(*) FROM spool").fetchone()[0]

    # --- sending --------------------------------------------------------------------------------
    def _connection(self):
        if self._con is None:
            try:
                self._con = self.dialect.connect(self.url, self.password)
            except ImportError:
                raise
            except Exception as exc:  # noqa: BLE001 - drivers may echo the URL, password included
                raise DatabaseConnectError(f"{type(exc).__name__}: {redact_text(str(exc))}") from None
            if self._create:
                self.execute(self.dialect.create_table(self.table))
                self._create = False
        return self._con

    def execute(self, statements) -> None:
        con = self._connection()
        cur = con.cursor()
        for sql in statements:
            cur.execute(sql)
        con.commit()

    def _params(self, row: dict):
        cols = self.table.columns
        if self.dialect.name == "oracle":
            return {b: self.dialect.bind(c, row.get(c.name)) for b, c in zip(self.dialect.bind_names(self.table), cols)}
        return tuple(self.dialect.bind(c, row.get(c.name)) for c in cols)

    def _send(self, rows: list[tuple[str, dict]]) -> None:
        con = self._connection()
        cur = con.cursor()
        try:
            cur.executemany(self.dialect.upsert(self.table), [self._params(r) for _, r in rows])
            con.commit()
        except Exception:
            try:
                con.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone
                pass
            raise

    def flush(self, *, all_rows: bool = False) -> int:
        """Send pending rows (one batch, or everything with all_rows). Returns rows written.

        Raises DatabaseLimitExceeded when failures or pending rows pass their bounds."""
        sent = 0
        while True:
            with self._lock:
                rows = self._spool.execute("SELECT pk, row FROM spool ORDER BY rowid LIMIT ?", (self.batch,)).fetchall()
            if not rows:
                return sent
            decoded = [(pk, decode_row(text)) for pk, text in rows]
            try:
                self._send(decoded)
            except Exception as exc:  # noqa: BLE001 - outage or bad rows: nothing is lost
                self.errors += 1
                self._con = None if not self._alive() else self._con
                if self._con is not None:
                    sent += self._one_by_one(decoded)
                else:
                    LOG.warning("database %s unreachable (%s); %d row(s) kept in the spool", self.dialect.name,
                                _first_line(exc),
                                self.pending())
                    self._check_limits()
                    return sent
            else:
                self._delete([pk for pk, _ in decoded])
                sent += len(decoded)
                self.written += len(decoded)
            if not all_rows:
                return sent

    def _one_by_one(self, rows) -> int:
        """The connection works but the batch failed: isolate the rows the database refuses.
        Refused rows move to the spool's `refused` table with the error (`sladd db flush
        --retry-refused` sends them again once the cause is fixed)."""
        ok = 0
        for pk, row in rows:
            try:
                self._send([(pk, row)])
            except Exception as exc:  # noqa: BLE001
                if not self._alive():                 # the database went away: keep the rest
                    self._con = None
                    return ok
                self.rejected += 1
                msg = _first_line(exc)
                LOG.error("database refused the row %s: %s (kept in the spool's refused rows)", pk, msg)
                with self._lock:
                    self._spool.execute("INSERT OR REPLACE INTO refused (pk, row, error) VALUES (?, ?, ?)",
                                        (pk, encode_row(row), msg))
                    self._spool.commit()
            else:
                ok += 1
                self.written += 1
            self._delete([pk])
        self._check_limits()
        return ok

    def refused(self) -> int:
        with self._lock:
            return self._spool.execute("SELECT COUNT(*) FROM refused").fetchone()[0]

    def retry_refused(self) -> int:
        """Move refused rows back into the queue. Returns how many."""
        with self._lock:
            n = self._spool.execute("INSERT OR REPLACE INTO spool (pk, row) SELECT pk, row FROM refused").rowcount
            self._spool.execute("DELETE FROM refused")
            self._spool.commit()
        return n

    def _alive(self) -> bool:
        if self._con is None:
            return False
        try:
            cur = self._con.cursor()
            cur.execute("SELECT 1 FROM dual" if self.dialect.name == "oracle" else "SELECT 1")
            cur.fetchall()
            return True
        except Exception:  # noqa: BLE001
            return False

    def _delete(self, pks) -> None:
        with self._lock:
            self._spool.executemany("DELETE FROM spool WHERE pk = ?", [(p,) for p in pks])
            self._spool.commit()

    def _check_limits(self) -> None:
        if self.errors > self.max_errors:
            raise DatabaseLimitExceeded(f"{self.errors} database errors, more than db_max_n_errors={self.max_errors}; "
                                        f"{self.pending()} row(s) kept in the spool: fix the database, then "
                                        "rerun or `sladd db flush`")
        if self.pending() > self.max_cache:
            raise DatabaseLimitExceeded(f"{self.pending()} rows waiting for the database, more than "
                                        f"db_max_cache_size={self.max_cache}; they are kept in the spool: fix the "
                                        "database, then rerun or `sladd db flush`")

    def close(self) -> None:
        if self._con is not None:
            try:
                self._con.rollback()
                self._con.close()
            except Exception:  # noqa: BLE001
                pass
        self._spool.close()
