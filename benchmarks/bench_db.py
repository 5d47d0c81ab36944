"""Database rows per second: JSON record -> row -> spool -> batched upsert, end to end.

    python -m benchmarks.bench_db [--rows 2000] [--postgres postgresql://...]

SQLite always; PostgreSQL/PostGIS when a DSN is given (or SLADD_PG_DSN is set).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from engine.db.sink import DbSink
from engine.db.table import load_table


def _record(i: int) -> dict:
    return {"bildeid": f"2022-06-01T12.00.00_EV00006_S1D1_m{i:05d}_Planar_1", "exif_tid": "2022-06-01T12:00:00",
            "exif_dataeier": "Statens vegvesen", "exif_imagetype": "Planar", "exif_fylke": "50",
            "exif_vegkat": "E", "exif_vegstat": "V", "exif_vegnr": "6", "exif_meter": str(i),
            "mappenavn": "Vegbilder/2022/EV00006/S1/D1/F1_2022_06_01", "exif_filnavn": f"EV00006_S1D1_m{i:05d}_f1.jpg",
            "exif_feltkode": "1", "exif_gpsposisjon": "srid=4326;POINT Z( 10.3951 63.4305 60.5 )",
            "exif_roadident": "EV6 S1D1 m1234", "detekterte_objekter": {"person": "1", "car": "2"},
            "exif_kvalitet": "2", "versjon": "P0.2_K20220131"}


def bench(url: str, rows: int, table_name: str) -> float:
    table = load_table("VEGBILDER", table_name=table_name)
    spool = Path(tempfile.mkdtemp(prefix="sladd-bench-db-")) / "spool.sqlite"
    sink = DbSink(table, url, spool, create=True, batch=100)
    sink.execute(sink.dialect.create_table(table, drop=True))
    t = time.perf_counter()
    for i in range(rows):
        sink.add(_record(i))
        if sink.pending() >= sink.batch:
            sink.flush()
    sink.flush(all_rows=True)
    secs = time.perf_counter() - t
    sink.execute([f'DROP TABLE IF EXISTS "{table_name}"'])
    sink.close()
    return rows / secs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--postgres", default=os.environ.get("SLADD_PG_DSN"))
    args = ap.parse_args(argv)
    db = Path(tempfile.mkdtemp(prefix="sladd-bench-db-")) / "VEGBILDER.sqlite"
    print(f"SQLite: {bench(f'sqlite:///{db}', args.rows, 'VEGBILDER'):.0f} rows/s ({args.rows} rows, batches of 100)")
    if args.postgres:
        print(f"PostgreSQL/PostGIS: {bench(args.postgres, args.rows, 'vegbilder_bench'):.0f} rows/s")


if __name__ == "__main__":
    main()
