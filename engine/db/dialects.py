"""SQL dialects: types, DDL, the one-statement upsert, geometry binding, connecting.

SQLite (standard library; the embedded default), PostgreSQL + PostGIS (psycopg 3), Oracle
(oracledb thin mode, MDSYS.SDO_GEOMETRY). Everything that differs between them lives here.
"""
from __future__ import annotations

import datetime as _dt
import re
from decimal import Decimal
from typing import Any, Optional
from urllib.parse import unquote, urlparse

from engine.db.geometry import SDOGeometry
from engine.db.table import Column, TableDef

__all__ = ["DIALECTS", "dialect_for_url", "SqliteDialect", "PostgisDialect", "OracleDialect"]


def _varchar_len(dtype: str) -> Optional[int]:
    m = re.match(r"VARCHAR2?\((\d+)\)", dtype.upper())
    return int(m.group(1)) if m else None


class Dialect:
    name = ""

    def q(self, ident: str) -> str:
        return f'"{ident}"'

    def ddl_type(self, col: Column) -> str:
        raise NotImplementedError

    def create_table(self, t: TableDef, drop: bool = False) -> list[str]:
        out = [f"DROP TABLE IF EXISTS {self.q(t.name)}"] if drop else []
        cols = ",\n".join(f"  {self.q(c.name)} {self.ddl_type(c)}{' ' + c.extra if c.extra else ''}"
                          for c in t.columns)
        out.append(f"CREATE TABLE IF NOT EXISTS {self.q(t.name)} (\n{cols}\n)")
        return out

    def upsert(self, t: TableDef) -> str:
        raise NotImplementedError

    def bind(self, col: Column, value: Any) -> Any:
        if isinstance(value, SDOGeometry):
            return value.ewkt()
        return value

    def geometry_metadata(self, t: TableDef) -> list[str]:
        return []


class SqliteDialect(Dialect):
    """Embedded default: geometry as EWKT text, dates as ISO text."""

    name = "sqlite"

    def ddl_type(self, col: Column) -> str:
        d = col.dtype.upper()
        if d == "NUMBER":
            return "NUMERIC"
        return "TEXT"

    def upsert(self, t: TableDef) -> str:
        cols = [c.name for c in t.columns]
        sets = ", ".join(f"{self.q(c)} = excluded.{self.q(c)}" for c in cols if c != t.pk)
        return (f"INSERT INTO {self.q(t.name)} ({', '.join(map(self.q, cols))}) VALUES ({', '.join('?' * len(cols))}) "
                f"ON CONFLICT ({self.q(t.pk)}) DO UPDATE SET {sets}")

    def bind(self, col: Column, value: Any) -> Any:
        if isinstance(value, _dt.datetime):
            return value.isoformat()
        return super().bind(col, value)

    def connect(self, url: str, password: Optional[str] = None):
        import sqlite3

        path = url.split("sqlite:///", 1)[1] if url.startswith("sqlite:///") else url
        con = sqlite3.connect(path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        return con


class PostgisDialect(Dialect):
    """PostgreSQL with PostGIS: geometry(Point, srid), a GiST index, ON CONFLICT upsert."""

    name = "postgresql"

    def ddl_type(self, col: Column) -> str:
        d = col.dtype.upper()
        if col.geometry:
            return f"geometry(Point, {int(col.spatial['srid'])})"
        if d == "NUMBER":
            return "numeric"
        if d == "DATE":
            return "timestamp"
        if d == "CLOB":
            return "text"
        n = _varchar_len(d)
        return f"varchar({n})" if n else "text"

    def create_table(self, t: TableDef, drop: bool = False) -> list[str]:
        out = ["CREATE EXTENSION IF NOT EXISTS postgis"]
        if drop:
            out.append(f"DROP TABLE IF EXISTS {self.q(t.name)}")
        out += super().create_table(t, drop=False)
        out += [f"CREATE INDEX IF NOT EXISTS {self.q(t.name + '_' + c.name + '_gix')} ON {self.q(t.name)} "
                f"USING GIST ({self.q(c.name)})" for c in t.columns if c.geometry]
        return out

    def upsert(self, t: TableDef) -> str:
        cols = [c.name for c in t.columns]
        vals = ", ".join("ST_GeomFromEWKT(%s)" if c.geometry else "%s" for c in t.columns)
        sets = ", ".join(f"{self.q(c)} = EXCLUDED.{self.q(c)}" for c in cols if c != t.pk)
        return (f"INSERT INTO {self.q(t.name)} ({', '.join(map(self.q, cols))}) VALUES ({vals}) "
                f"ON CONFLICT ({self.q(t.pk)}) DO UPDATE SET {sets}")

    def bind(self, col: Column, value: Any) -> Any:
        if isinstance(value, SDOGeometry):
            # The column is 2D (geometry(Point)): the height has its own column.
            return SDOGeometry(2001, value.srid, value.point[:2]).ewkt()
        if isinstance(value, float):
            # A float binds as float8, which numeric rounds to 15 digits; its shortest repr as a
            # Decimal keeps every digit (48.85625080301344, not 48.8562508030134).
            return Decimal(repr(value))
        return value

    def connect(self, url: str, password: Optional[str] = None):
        try:
            import psycopg
        except ImportError as exc:
            raise ImportError("PostgreSQL needs psycopg: pip install 'sladd[db]'") from exc
        kwargs = {"password": password} if password else {}
        return psycopg.connect(url, **kwargs)


class OracleDialect(Dialect):
    """Oracle: MERGE upsert, MDSYS.SDO_GEOMETRY points (gtype 2001/3001, SRID, SDO_POINT_TYPE)."""

    name = "oracle"

    def q(self, ident: str) -> str:
        return ident                                  # the reference's unquoted, case-folded names

    def ddl_type(self, col: Column) -> str:
        return col.dtype

    def create_table(self, t: TableDef, drop: bool = False) -> list[str]:
        out = [f"DROP TABLE {t.name}"] if drop else []
        cols = ",\n".join(f"  {c.name:<20} {c.dtype:<12} {c.extra}".rstrip() for c in t.columns)
        out.append(f"CREATE TABLE {t.name}(\n{cols})")
        return out

    def upsert(self, t: TableDef) -> str:
        cols = [c.name for c in t.columns]
        src = ", ".join(f":{c} AS {c}" for c in cols)
        sets = ", ".join(f"t.{c} = s.{c}" for c in cols if c != t.pk)
        return (f"MERGE INTO {t.name} t USING (SELECT {src} FROM dual) s ON (t.{t.pk} = s.{t.pk}) "
                f"WHEN MATCHED THEN UPDATE SET {sets} "
                f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join('s.' + c for c in cols)})")

    def bind(self, col: Column, value: Any) -> Any:
        return value                                  # geometry: converted by the input type handler

    def geometry_metadata(self, t: TableDef) -> list[str]:
        out = []
        for c in t.columns:
            if not c.geometry:
                continue
            sm = c.spatial
            dims = ", ".join(f"MDSYS.SDO_DIM_ELEMENT('{e['name']}', {e['min']}, {e['max']}, {e['tol']})"
                             for e in sm["dim_elements"])
            out.append("INSERT INTO MDSYS.USER_SDO_GEOM_METADATA(TABLE_NAME, COLUMN_NAME, DIMINFO, SRID) "
                       f"VALUES ('{t.name.upper()}', '{c.name.upper()}', MDSYS.SDO_DIM_ARRAY({dims}), {int(sm['srid'])})")
        return out

    @staticmethod
    def geometry_converter(geom_type, point_type):
        """SDOGeometry -> an MDSYS.SDO_GEOMETRY object (elem_info and ordinates left NULL)."""
        def convert(g: SDOGeometry):
            obj = geom_type.newobject()
            obj.SDO_GTYPE = g.gtype
            obj.SDO_SRID = g.srid
            pt = point_type.newobject()
            pt.X, pt.Y = g.point[0], g.point[1]
            pt.Z = g.point[2] if len(g.point) > 2 else None
            obj.SDO_POINT = pt
            return obj
        return convert

    def input_type_handler(self, connection):
        geom_type = connection.gettype("MDSYS.SDO_GEOMETRY")
        point_type = connection.gettype("MDSYS.SDO_POINT_TYPE")
        convert = self.geometry_converter(geom_type, point_type)

        def handler(cursor, value, arraysize):
            if isinstance(value, SDOGeometry):
                return cursor.var(geom_type, arraysize=arraysize, inconverter=convert)
            return None
        return handler

    def connect(self, url: str, password: Optional[str] = None):
        try:
            import oracledb
        except ImportError as exc:
            raise ImportError("Oracle needs oracledb: pip install 'sladd[db]'") from exc
        u = urlparse(url)
        dsn = f"{u.hostname}:{u.port or 1521}/{u.path.lstrip('/')}"
        con = oracledb.connect(user=unquote(u.username or ""), password=password or unquote(u.password or ""), dsn=dsn)
        con.inputtypehandler = self.input_type_handler(con)
        return con


DIALECTS = {"sqlite": SqliteDialect, "postgresql": PostgisDialect, "postgres": PostgisDialect,
            "oracle": OracleDialect}


def dialect_for_url(url: str) -> Dialect:
    scheme = url.split(":", 1)[0].lower() if ":" in url else "sqlite"
    try:
        return DIALECTS[scheme]()
    except KeyError:
        raise ValueError(f"database.url {url!r}: unknown scheme {scheme!r}; valid: sqlite:///FILE, "
                         "postgresql://USER@HOST/DB, oracle://USER@HOST:PORT/SERVICE") from None
