"""Database rows: SQLite (always), PostgreSQL + PostGIS (a real local server), Oracle (SQL and
type handling without a server; an integration test when SLADD_ORACLE_DSN is set)."""
import json
import os
import sqlite3
import subprocess
import types
from pathlib import Path

import pytest

from engine.cli import main
from engine.db.dialects import OracleDialect, PostgisDialect
from engine.db.geometry import SDOGeometry, flip_wkt, parse_wkt
from engine.db.sink import DbSink
from engine.db.table import RowRejected, load_table
from engine.demo import _PROPS_XML, _REFLINK_XML, jpeg_with_exif, road_scene

TABLE = load_table("VEGBILDER")


def _record(i=1, **kw):
    d = {k: None for k in ("exif_moh", "exif_heading", "senterlinjeposisjon", "exif_hp")}
    d.update({"bildeid": f"2022-06-01T12.00.0{i}_EV00006_S1D1_m0{i}_Planar_1", "exif_tid": f"2022-06-01T12:00:0{i}",
              "exif_dataeier": "Statens vegvesen", "exif_imagetype": "Planar", "exif_fylke": "50",
              "exif_vegkat": "E", "exif_vegstat": "V", "exif_vegnr": "6", "exif_meter": str(100 * i),
              "mappenavn": "Vegbilder/2022", "exif_filnavn": f"f{i}.jpg", "exif_feltkode": "1",
              "exif_gpsposisjon": "srid=4326;POINT Z( 6.5663939242382572 61.214710343813685 48.856250803013438 )",
              "detekterte_objekter": {"face": "2"}, "exif_kvalitet": "2"})
    d.update(kw)
    return d


def test_vegbilder_tables_load():
    assert len(TABLE.columns) == 51 and TABLE.pk == "ID"
    assert len(load_table("VEGBILDER_V1").columns) == 29
    assert [c.name for c in TABLE.columns if c.geometry] == ["Posisjon", "SenterlinjePosisjon"]


def test_c9_geometry_from_wkt():
    """docs/samples.md C9."""
    row = TABLE.make_row(_record())
    g = row["Posisjon"]
    assert (g.gtype, g.srid, g.point) == (2001, 4326, (6.566393924238257, 61.214710343813685))
    assert row["PosisjonHoyde"] == 48.85625080301344
    assert flip_wkt("srid=4326;POINT Z( 6.5663939242382572 61.214710343813685 48.856250803013438 )") == \
        "srid=4326;POINT Z( 61.214710343813685 6.5663939242382572 48.856250803013438 )"
    assert parse_wkt(None) is None and parse_wkt("srid=4326;POINT Z( NaN 1.0 2.0 )") is None
    assert row["FylkeNummer"] == 50 and row["Meter"] == 100 and row["Aar"] == 2022
    assert json.loads(row["JsonData"])["exif_fylke"] == "50" and row["DetekterteObjekter"] == '{"face": "2"}'


def test_not_null_rejects_the_row_naming_the_column():
    with pytest.raises(RowRejected, match="Dataeier"):
        TABLE.make_row(_record(exif_dataeier=None))
    assert TABLE.make_row(_record(exif_meter="0"))["Meter"] == 0      # 0 is a value (the reference refused it)


# --- SQLite, through `sladd run` -------------------------------------------------------------
@pytest.fixture
def road_tree(tmp_path):
    d = tmp_path / "in" / "tilSladding" / "2022" / "EV00006" / "S1" / "D1" / "F1_2022_06_01"
    for i in range(3):
        name = f"EV00006_S1D1_m0{i}00_f1.jpg"
        jpeg_with_exif(road_scene(240, 320, seed=i), d / name, reflink_xml=_REFLINK_XML,
                       properties_xml=_PROPS_XML.format(name=name, meter=f"{i}00.0"),
                       datetime_original=f"2022:06:01 12:00:0{i}")
    return tmp_path / "in"


def test_run_writes_one_row_per_image_equal_to_the_json(road_tree, tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text('write_exif_to_db: true\ndata_eier: "Statens vegvesen"\n')
    out = tmp_path / "out"
    assert main(["run", "-i", str(road_tree), "-o", str(out), "-k", str(cfg), "-q"]) == 0
    db = sqlite3.connect(out / ".sladd" / "VEGBILDER.sqlite")
    cols = [c.name for c in TABLE.columns]
    rows = db.execute(f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "VEGBILDER"').fetchall()
    assert len(rows) == 3
    by_id = {r[0]: dict(zip(cols, r)) for r in rows}
    for js in (p for p in out.rglob("*.json") if ".sladd" not in p.parts):       # the metadata JSON
        record = json.loads(js.read_text(encoding="utf-8"))
        expect = TABLE.make_row(record)
        got = by_id[record["bildeid"]]
        for c in TABLE.columns:
            e = expect[c.name]
            e = e.ewkt() if isinstance(e, SDOGeometry) else e.isoformat() if hasattr(e, "isoformat") else e
            assert got[c.name] == e or (isinstance(e, str) and str(got[c.name]) == e), c.name
    # A forced rerun upserts: still one row per image.
    assert main(["run", "-i", str(road_tree), "-o", str(out), "-k", str(cfg), "-q", "--force"]) == 0
    assert db.execute('SELECT COUNT(*) FROM "VEGBILDER"').fetchone()[0] == 3


def test_rejected_rows_keep_image_and_json(road_tree, tmp_path, capsys):
    cfg = tmp_path / "c.yml"
    cfg.write_text("write_exif_to_db: true\n")                       # data_eier null: Dataeier NOT NULL
    out = tmp_path / "out"
    assert main(["run", "-i", str(road_tree), "-o", str(out), "-k", str(cfg), "-q"]) == 0
    assert "DB rows written 0, rejected 3" in capsys.readouterr().err
    assert len([p for p in out.rglob("*.json") if ".sladd" not in p.parts]) == 3 and len(list(out.rglob("*.jpg"))) == 3


def test_outage_keeps_rows_in_the_spool_until_flushed(road_tree, tmp_path):
    broken = tmp_path / "no-such-dir" / "db.sqlite"
    cfg = tmp_path / "c.yml"
    cfg.write_text(f'write_exif_to_db: true\ndata_eier: "SVV"\ndatabase: {{url: "sqlite:///{broken}"}}\n')
    out = tmp_path / "out"
    assert main(["run", "-i", str(road_tree), "-o", str(out), "-k", str(cfg), "-q"]) == 0
    spool = sqlite3.connect(out / ".sladd" / "db_spool.sqlite")
    assert spool.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 3          # nothing lost
    broken.parent.mkdir()                                                           # the database is back
    assert main(["db", "flush", "-o", str(out), "-k", str(cfg)]) == 0
    assert sqlite3.connect(broken).execute('SELECT COUNT(*) FROM "VEGBILDER"').fetchone()[0] == 3
    assert spool.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 0


def test_load_json_keeps_backslashes_flips_and_archives(tmp_path):
    src = tmp_path / "json"
    src.mkdir()
    rec = _record(exif_imageproperties="<ImageName>C:\\DATA\\n1\\x.jpg</ImageName>", exif_speed_ms="12,35",
                  exif_gpsposisjon="srid=4326;POINT Z( 61.2 6.5 48.8 )")
    (src / "a.json").write_text(json.dumps(rec, indent=4, ensure_ascii=False), encoding="utf-8")
    (src / "a_preview.json").write_text("{}")
    cfg = tmp_path / "c.yml"
    db = tmp_path / "db.sqlite"
    cfg.write_text(f'flip_wkt: true\ndatabase: {{url: "sqlite:///{db}"}}\n')
    arch = tmp_path / "arch"
    assert main(["db", "load-json", str(src), "-k", str(cfg), "-o", str(tmp_path), "-a", str(arch)]) == 0
    row = sqlite3.connect(db).execute('SELECT "JsonData", "Hastighet", "Posisjon" FROM "VEGBILDER"').fetchone()
    assert json.loads(row[0])["exif_imageproperties"] == "<ImageName>C:\\DATA\\n1\\x.jpg</ImageName>"
    assert row[1] == 12.35 and row[2] == "SRID=4326;POINT(6.5 61.2)"
    assert (arch / "a.json").is_file() and not (src / "a.json").exists()


def test_encrypted_config_round_trip(tmp_path, monkeypatch):
    from cryptography.fernet import Fernet

    from engine.db.connect import read_encrypted_config
    monkeypatch.setenv("ORACLE_KEY", Fernet.generate_key().decode())
    out = tmp_path / "db_config.py"
    assert main(["db", "create-config", "--user", "u", "--password", "hemmelig", "--dsn", "h:1521/s",
                 "--table-name", "VEGBILDER", "--out", str(out)]) == 0
    assert "hemmelig" not in out.read_text()
    assert read_encrypted_config(out) == {"user": "u", "dsn": "h:1521/s", "schema": None,
                                          "table_name": "VEGBILDER", "password": "hemmelig"}


# --- Oracle without a server ----------------------------------------------------------------------
def test_oracle_sql():
    d = OracleDialect()
    sql = d.upsert(TABLE)
    assert sql.startswith("MERGE INTO VEGBILDER t USING (SELECT :ID AS ID, :Tidspunkt AS Tidspunkt")
    assert "ON (t.ID = s.ID)" in sql and "WHEN MATCHED THEN UPDATE SET t.Tidspunkt = s.Tidspunkt" in sql
    assert "t.ID = s.ID," not in sql.split("UPDATE SET")[1]                         # the key is not updated
    assert sql.count("WHEN NOT MATCHED THEN INSERT (") == 1
    ddl = d.create_table(TABLE)[0].splitlines()
    assert ddl[0] == "CREATE TABLE VEGBILDER(" and ddl[1] == f"  {'ID':<20} {'VARCHAR(256)':<12} PRIMARY KEY,"
    meta = d.geometry_metadata(TABLE)
    assert meta[0] == ("INSERT INTO MDSYS.USER_SDO_GEOM_METADATA(TABLE_NAME, COLUMN_NAME, DIMINFO, SRID) VALUES "
                       "('VEGBILDER', 'POSISJON', MDSYS.SDO_DIM_ARRAY(MDSYS.SDO_DIM_ELEMENT('Longitude', -180, 180, "
                       "0.5), MDSYS.SDO_DIM_ELEMENT('Latitude', -90, 90, 0.5)), 4326)")
    assert "25833" in meta[1] and "SDO_DIM_ELEMENT('X', -100000, 1120000, 0.01)" in meta[1]


def test_oracle_sdo_geometry_objects_via_type_handler():
    made = []

    class FakeType:
        def __init__(self, name):
            self.name = name

        def newobject(self):
            o = types.SimpleNamespace(kind=self.name)
            made.append(o)
            return o

    class FakeConnection:
        def gettype(self, name):
            return FakeType(name)

    class FakeCursor:
        def var(self, typ, arraysize, inconverter):
            return types.SimpleNamespace(type=typ, arraysize=arraysize, convert=inconverter)

    handler = OracleDialect().input_type_handler(FakeConnection())
    assert handler(FakeCursor(), "text", 1) is None
    var = handler(FakeCursor(), SDOGeometry(2001, 4326, (6.5, 61.2)), 100)
    assert var.type.name == "MDSYS.SDO_GEOMETRY" and var.arraysize == 100
    obj = var.convert(SDOGeometry(3001, 4326, (6.5, 61.2, 48.9)))
    assert (obj.SDO_GTYPE, obj.SDO_SRID) == (3001, 4326)
    assert (obj.SDO_POINT.X, obj.SDO_POINT.Y, obj.SDO_POINT.Z) == (6.5, 61.2, 48.9)
    assert not hasattr(obj, "SDO_ELEM_INFO") and not hasattr(obj, "SDO_ORDINATES")   # left NULL
    obj2 = var.convert(SDOGeometry(2001, 4326, (6.5, 61.2)))
    assert obj2.SDO_POINT.Z is None


@pytest.mark.db
@pytest.mark.skipif(not os.environ.get("SLADD_ORACLE_DSN"), reason="no Oracle server here (set SLADD_ORACLE_DSN)")
def test_oracle_integration(tmp_path):
    url = os.environ["SLADD_ORACLE_DSN"]
    sink = DbSink(TABLE, url, tmp_path / "spool.sqlite", password=os.environ.get("SLADD_DB_PASSWORD"))
    sink.execute(OracleDialect().create_table(TABLE, drop=False))
    for _ in range(2):
        assert sink.add(_record()) is None
        sink.flush(all_rows=True)
    cur = sink._connection().cursor()
    cur.execute("SELECT COUNT(*) FROM VEGBILDER WHERE ID = :1", [_record()["bildeid"]])
    assert cur.fetchone()[0] == 1


# --- PostgreSQL + PostGIS, a real server on localhost ----------------------------------------------
@pytest.fixture
def pg(tmp_path):
    dsn = os.environ.get("SLADD_PG_DSN")
    if not dsn:
        # scripts/setup.sh test starts one and sets SLADD_PG_DSN; `pytest -ra` lists this skip.
        pytest.skip("no PostgreSQL server: SLADD_PG_DSN is not set (run: eval \"$(bash scripts/postgis.sh)\")")
    import psycopg
    name = f"vegbilder_{os.getpid()}_{tmp_path.name[-12:].replace('-', '_')}".lower()
    table = load_table("VEGBILDER", table_name=name)
    sinks = []
    yield dsn, table, sinks
    for s in sinks:                      # a failed test must not leave a transaction holding locks
        s.close()
    with psycopg.connect(dsn) as con:
        con.execute("SET lock_timeout = '10s'")
        con.execute(f'DROP TABLE IF EXISTS "{name}"')


@pytest.mark.db
def test_postgis_upsert_and_geometry_round_trip(pg, tmp_path):
    dsn, table, sinks = pg
    sink = DbSink(table, dsn, tmp_path / "spool.sqlite", create=True, batch=2)
    sinks.append(sink)
    for i in range(1, 4):
        assert sink.add(_record(i)) is None
    assert sink.flush(all_rows=True) == 3
    assert sink.add(_record(1, exif_meter="999")) is None                       # same key again
    sink.flush(all_rows=True)
    cur = sink._connection().cursor()
    cur.execute(f'SELECT COUNT(*), MAX("Meter") FROM "{table.name}"')
    assert cur.fetchone() == (3, 999)
    cur.execute(f'SELECT ST_AsText("Posisjon"), ST_SRID("Posisjon"), "PosisjonHoyde", "Tidspunkt" '
                f'FROM "{table.name}" WHERE "ID" = %s', [_record(2)["bildeid"]])
    wkt, srid, h, t = cur.fetchone()
    assert wkt == "POINT(6.566393924238257 61.214710343813685)" and srid == 4326
    assert float(h) == 48.85625080301344 and t.isoformat() == "2022-06-01T12:00:02"
    cur.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [table.name])
    assert any("gist" in r[0].lower() for r in cur.fetchall())


@pytest.mark.db
def test_postgis_server_stopped_mid_run_loses_no_row(pg, tmp_path):
    cluster = os.environ.get("SLADD_PG_CLUSTER")
    if not cluster or os.geteuid() != 0:
        pytest.skip("stopping the server needs root and SLADD_PG_CLUSTER (scripts/postgis.sh)")
    dsn, table, sinks = pg
    sink = DbSink(table, dsn, tmp_path / "spool.sqlite", create=True, batch=2)
    sinks.append(sink)
    for i in range(1, 3):
        sink.add(_record(i))
    assert sink.flush(all_rows=True) == 2
    subprocess.run(["pg_ctlcluster", *cluster.split(), "stop"], check=True)
    try:
        for i in range(3, 6):
            assert sink.add(_record(i)) is None
        assert sink.flush(all_rows=True) == 0                                   # down: nothing sent ...
        assert sink.pending() == 3                                              # ... and nothing lost
    finally:
        subprocess.run(["pg_ctlcluster", *cluster.split(), "start"], check=True)
    import time
    for _ in range(30):
        if sink._alive() or _can_connect(dsn):
            break
        time.sleep(0.5)
    assert sink.flush(all_rows=True) == 3 and sink.pending() == 0
    cur = sink._connection().cursor()
    cur.execute(f'SELECT COUNT(*) FROM "{table.name}"')
    assert cur.fetchone()[0] == 5


def _can_connect(dsn):
    import psycopg
    try:
        psycopg.connect(dsn).close()
        return True
    except Exception:
        return False


def test_postgis_ddl_types():
    ddl = "\n".join(PostgisDialect().create_table(TABLE))
    assert '"Posisjon" geometry(Point, 4326)' in ddl and '"SenterlinjePosisjon" geometry(Point, 25833)' in ddl
    assert '"Tidspunkt" timestamp NOT NULL' in ddl and '"ID" varchar(256) PRIMARY KEY' in ddl
    assert 'USING GIST ("Posisjon")' in ddl



def test_rows_the_database_refuses_are_kept_not_dropped(tmp_path):
    db = tmp_path / "db.sqlite"
    sink = DbSink(TABLE, f"sqlite:///{db}", tmp_path / "spool.sqlite", create=False)
    for i in range(1, 3):
        sink.add(_record(i))
    assert sink.flush(all_rows=True) == 0                       # no table yet: every row refused ...
    assert sink.pending() == 0 and sink.refused() == 2          # ... and kept
    sink.execute(sink.dialect.create_table(TABLE))
    assert sink.retry_refused() == 2 and sink.flush(all_rows=True) == 2
    assert sqlite3.connect(db).execute('SELECT COUNT(*) FROM "VEGBILDER"').fetchone()[0] == 2
    sink.close()


def test_pending_rows_beyond_db_max_cache_size_stop_the_run(road_tree, tmp_path, capsys):
    broken = tmp_path / "no-such-dir" / "db.sqlite"
    cfg = tmp_path / "c.yml"
    cfg.write_text(f'write_exif_to_db: true\ndata_eier: "SVV"\ndb_max_n_accumulated_rows: 1\n'
                   f'db_max_cache_size: 1\ndatabase: {{url: "sqlite:///{broken}"}}\nengine: {{writers: 1}}\n')
    out = tmp_path / "out"
    assert main(["run", "-i", str(road_tree), "-o", str(out), "-k", str(cfg), "-q"]) == 3
    assert "db_max_cache_size=1" in capsys.readouterr().err
    spool = sqlite3.connect(out / ".sladd" / "db_spool.sqlite")
    assert spool.execute("SELECT COUNT(*) FROM spool").fetchone()[0] >= 2          # kept, not dropped


def test_create_table_and_execute_sql_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)          # without -o the spool lives in ./.sladd: keep it in tmp
    db = tmp_path / "t.sqlite"
    cfg = tmp_path / "c.yml"
    cfg.write_text(f'database: {{url: "sqlite:///{db}"}}\n')
    assert main(["db", "create-table", "-k", str(cfg)]) == 0
    assert main(["db", "execute-sql", "-k", str(cfg), "SELECT COUNT(*) FROM VEGBILDER"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "0"
    bad = tmp_path / "bad.yml"
    bad.write_text("pk_column: ID\ncolumns:\n  - {name: ID, dtype: VARCHAR(8), formatter: Nope}\n")
    with pytest.raises(ValueError, match="unknown formatter 'Nope'"):
        load_table(str(bad))
    bad.write_text("pk_column: ID\ncolumns:\n  - {name: P, dtype: SDO_GEOMETRY, formatter: Posisjon_2d}\n")
    with pytest.raises(ValueError, match="spatial_metadata"):
        load_table(str(bad))


# --- identifiers: quoted in every dialect, validated where they come from -----------------------
ODD_TABLE = """pk_column: select
columns:
  - {name: select, dtype: VARCHAR(64), formatter: "text:exif_filnavn", extra: PRIMARY KEY}
  - {name: order, dtype: NUMBER, formatter: "number:exif_meter", extra: ""}
  - {name: _hidden, dtype: VARCHAR(8), formatter: "text:exif_vegkat", extra: NOT NULL}
  - {name: MiXed, dtype: VARCHAR(8), formatter: "text:exif_vegstat", extra: ""}
"""


def _odd_table(tmp_path, name):
    p = tmp_path / "odd.yml"
    p.write_text(ODD_TABLE)
    return load_table(str(p), table_name=name)


def test_sqlite_reserved_word_names_work(tmp_path):
    """Table and columns named by SQL keywords (and a leading _) are quoted, so they just work."""
    table = _odd_table(tmp_path, "group")
    sink = DbSink(table, f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "spool.sqlite", create=True)
    try:
        for i in (1, 2, 1):
            assert sink.add(_record(i)) is None
        assert sink.flush(all_rows=True) == 2
    finally:
        sink.close()
    rows = sqlite3.connect(tmp_path / "db.sqlite").execute(
        'SELECT "select", "order", "_hidden", "MiXed" FROM "group" ORDER BY "order"').fetchall()
    assert rows == [("f1.jpg", 100, "E", "V"), ("f2.jpg", 200, "E", "V")]


def test_quoting_rules_per_dialect():
    from engine.db.dialects import SqliteDialect

    assert SqliteDialect().q('a"b') == '"a""b"' and PostgisDialect().q("Tidspunkt") == '"Tidspunkt"'
    o = OracleDialect()
    # Oracle: plain names stay unquoted (folded to upper case, the reference's tables); others are
    # quoted in upper case, which names the same object.
    assert o.q("Tidspunkt") == "Tidspunkt" and o.q("DATE") == '"DATE"' and o.q("_x") == '"_X"'
    assert o.q('a"b') == '"A""B"'


def test_oracle_sql_for_names_that_need_quotes(tmp_path):
    def q(name):
        return f'"{name}"'

    table = _odd_table(tmp_path, "group")
    o = OracleDialect()
    sql = o.upsert(table)
    assert sql.startswith('MERGE INTO "GROUP" t USING (SELECT :b0 AS "SELECT", :b1 AS "ORDER", :b2 AS "_HIDDEN", '
                          ':MiXed AS MiXed FROM dual) s ON (t."SELECT" = s."SELECT")')
    ddl = o.create_table(table, drop=True)
    assert ddl[0] == 'DROP TABLE "GROUP"' and ddl[1].splitlines() == [
        'CREATE TABLE "GROUP"(', f'  {q("SELECT"):<20} {"VARCHAR(64)":<12} PRIMARY KEY,', f'  {q("ORDER"):<20} NUMBER,',
        f'  {q("_HIDDEN"):<20} {"VARCHAR(8)":<12} NOT NULL,', f'  {"MiXed":<20} VARCHAR(8))']
    sink = DbSink(table, "oracle://u@h:1521/s", tmp_path / "spool.sqlite")      # never connects here
    try:
        row = table.make_row(_record(1))
        assert sink._params(row) == {"b0": "f1.jpg", "b1": 100, "b2": "E", "MiXed": "V"}
    finally:
        sink.close()


@pytest.mark.parametrize("change,fragment", [
    (("select, dtype: VARCHAR(64)", 'x"; DROP TABLE t; --", dtype: VARCHAR(64)'), "SQL identifier"),
    (("dtype: NUMBER,", "dtype: NUMBER); DROP TABLE t; --,"), "dtype"),
    (("extra: NOT NULL}", 'extra: "NOT NULL, evil TEXT"}'), "extra"),
])
def test_table_definition_injection_is_refused(tmp_path, change, fragment):
    p = tmp_path / "t.yml"
    p.write_text(ODD_TABLE.replace(*change, 1))
    with pytest.raises(ValueError, match=fragment):
        load_table(str(p))


def test_geometry_dimension_names_are_identifiers(tmp_path):
    text = (Path(__file__).parent.parent / "config" / "db_tables" / "VEGBILDER.yml").read_text(encoding="utf-8")
    p = tmp_path / "t.yml"
    p.write_text(text.replace("{name: Latitude,", "{name: \"L'); DROP TABLE x; --\",", 1))
    with pytest.raises(ValueError, match="spatial_metadata"):
        load_table(str(p))
    with pytest.raises(ValueError, match="not found"):     # only plain names are looked up among the shipped
        load_table("../db_tables/VEGBILDER")


@pytest.mark.db
def test_postgis_reserved_word_columns(pg, tmp_path):
    dsn, _, sinks = pg
    import psycopg
    name = f"Order_{os.getpid()}"
    table = _odd_table(tmp_path, name)
    sink = DbSink(table, dsn, tmp_path / "spool.sqlite", create=True)
    sinks.append(sink)
    try:
        assert sink.add(_record(1)) is None and sink.flush(all_rows=True) == 1
        cur = sink._connection().cursor()
        cur.execute(f'SELECT "select", "order", "_hidden", "MiXed" FROM "{name}"')
        assert cur.fetchall() == [("f1.jpg", 100, "E", "V")]
    finally:
        sink.close()
        with psycopg.connect(dsn) as con:
            con.execute(f'DROP TABLE IF EXISTS "{name}"')


def test_impossible_wgs84_point_is_null_with_a_warning():
    import logging

    seen = []
    handler = logging.Handler()
    handler.emit = lambda r: seen.append(r.getMessage())
    logging.getLogger("sladd").addHandler(handler)
    try:
        row = TABLE.make_row(_record(exif_gpsposisjon="srid=4326;POINT Z( 200.5 61.2 48.8 )"))
    finally:
        logging.getLogger("sladd").removeHandler(handler)
    assert row["Posisjon"] is None and row["PosisjonHoyde"] is None
    assert any("outside longitude" in m for m in seen)
    assert TABLE.make_row(_record(exif_gpsposisjon="srid=4326;POINT Z( inf 61.2 48.8 )"))["Posisjon"] is None
