"""`sladd db ...`: the reference system's database scripts (create_table, insert_geom_metadata,
execute_sql, json_to_db, create_db_config) plus `flush`."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Optional

from engine.db.connect import sink_from_config, write_encrypted_config
from engine.db.geometry import flip_wkt

__all__ = ["create_table", "insert_geom_metadata", "execute_sql", "load_json", "flush", "create_config"]

LOG = logging.getLogger("sladd")


def _sink(cfg, output: Optional[Path], create: Optional[bool] = None):
    """The run's sink; `create` None = as configured (database.create_table)."""
    spool_dir = (Path(output) / ".sladd") if output else Path.cwd() / ".sladd"
    sink = sink_from_config(cfg, output, spool_dir / "db_spool.sqlite")
    if create is not None:
        sink._create = create
    return sink


def create_table(cfg, output: Optional[Path], drop: bool = False) -> list[str]:
    sink = _sink(cfg, output, create=False)
    stmts = sink.dialect.create_table(sink.table, drop=drop)
    try:
        sink.execute(stmts)
    finally:
        sink.close()
    return stmts


def insert_geom_metadata(cfg, output: Optional[Path]) -> list[str]:
    sink = _sink(cfg, output, create=False)
    stmts = sink.dialect.geometry_metadata(sink.table)
    if not stmts:
        raise ValueError(f"{sink.dialect.name}: geometry metadata (USER_SDO_GEOM_METADATA) exists only on Oracle")
    try:
        sink.execute(stmts)
    finally:
        sink.close()
    return stmts


def execute_sql(cfg, output: Optional[Path], sql: str):
    """Run one statement; returns the fetched rows of a query (else [])."""
    sink = _sink(cfg, output, create=False)
    try:
        cur = sink._connection().cursor()
        cur.execute(sql)
        rows = cur.fetchall() if cur.description else []
        sink._connection().commit()
        return rows
    finally:
        sink.close()


def _fix_decimal_commas(record: dict) -> dict:
    """json_to_db: `,` as the decimal separator becomes `.` where the result is a number, a
    WKT or "0.00" (the reference's rule)."""
    out = {}
    for k, v in record.items():
        if isinstance(v, str) and "," in v:
            cand = v.replace(",", ".")
            try:
                ok = float(cand) != 0 or cand == "0.00"
            except ValueError:
                ok = "srid" in cand
            v = cand if ok else v
        out[k] = v
    return out


def load_json(cfg, output: Optional[Path], folder: Path, archive: Optional[Path] = None) -> tuple[int, int]:
    """Load every `*.json` under `folder` (not previews) as rows. JSON is parsed as JSON: the
    reference's SingleBackslashDecoder, which ate the character before each backslash, is gone
    (fix 14). With `archive`, each loaded file moves into a mirrored archive tree."""
    sink = _sink(cfg, output)
    added = rejected = 0
    try:
        for p in sorted(folder.rglob("*.json")):
            # Only metadata JSON: not sladd's own records (.sladd/, <stem>.detections.json).
            if "preview" in p.name or ".sladd" in p.relative_to(folder).parts or p.name.endswith(".detections.json"):
                continue
            record = _fix_decimal_commas(json.loads(p.read_text(encoding="utf-8")))
            if cfg.flip_wkt:
                record["exif_gpsposisjon"] = flip_wkt(record.get("exif_gpsposisjon"))
            reason = sink.add(record)
            if reason:
                rejected += 1
                LOG.warning("%s: row rejected: %s", p, reason)
            else:
                added += 1
            if sink.pending() >= sink.batch:
                sink.flush()
            if archive is not None:
                dest = archive / p.relative_to(folder)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(p), dest)
        sink.flush(all_rows=True)
        return added, rejected
    finally:
        sink.close()


def flush(cfg, output: Optional[Path], retry_refused: bool = False) -> tuple[int, int, int]:
    """Send rows a run left in OUTPUT/.sladd/db_spool.sqlite.
    Returns (sent, still pending, refused)."""
    sink = _sink(cfg, output)
    try:
        if retry_refused:
            sink.retry_refused()
        sent = sink.flush(all_rows=True)
        return sent, sink.pending(), sink.refused()
    finally:
        sink.close()


def create_config(path: Path, *, user: str, password: str, dsn: str, schema: Optional[str], table_name: str) -> None:
    write_encrypted_config(path, user=user, password=password, dsn=dsn, schema=schema, table_name=table_name)

