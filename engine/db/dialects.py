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

from engine.config import short_text
from engine.db.geometry import SDOGeometry
from engine.db.table import Column, TableDef
from engine.logs import redact_text

__all__ = ["DIALECTS", "dialect_for_url", "SqliteDialect", "PostgisDialect", "OracleDialect"]


def _varchar_len(dtype: str) -> Optional[int]:
    m = re.match(r"VARCHAR2?\((\d+)\)", dtype.upper())
    return int(m.group(1)) if m else None


def _quoted(ident: str) -> str:
    """A delimited identifier: double quotes, an inner double quote doubled (SQL standard)."""
    return '"' + ident.replace('"', '""') + '"'


def _literal(text: str) -> str:
    """An SQL string literal, inner single quotes doubled."""
    return "'" + str(text).replace("'", "''") + "'"


class Dialect:
    name = ""

    def q(self, ident: str) -> str:
        return _quoted(ident)

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


def _num(v) -> str:
    """A number for SQL text: ints as written (-180), other values as a float."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        v = float(v)
    return str(v)


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


# Oracle's reserved words (V$RESERVED_WORDS, RESERVED = 'Y'): such names must be quoted.
_ORACLE_RESERVED = frozenset("""
ACCESS ADD ALL ALTER AND ANY AS ASC AUDIT BETWEEN BY CHAR CHECK CLUSTER COLUMN COMMENT COMPRESS CONNECT CREATE
CURRENT DATE DECIMAL DEFAULT DELETE DESC DISTINCT DROP ELSE EXCLUSIVE EXISTS FILE FLOAT FOR FROM GRANT GROUP HAVING
IDENTIFIED IMMEDIATE IN INCREMENT INDEX INITIAL INSERT INTEGER INTERSECT INTO IS LEVEL LIKE LOCK LONG MAXEXTENTS
MINUS MLSLABEL MODE MODIFY NOAUDIT NOCOMPRESS NOT NOWAIT NULL NUMBER OF OFFLINE ON ONLINE OPTION OR ORDER PCTFREE
PRIOR PUBLIC RAW RENAME RESOURCE REVOKE ROW ROWID ROWNUM ROWS SELECT SESSION SET SHARE SIZE SMALLINT START
SUCCESSFUL SYNONYM SYSDATE TABLE THEN TO TRIGGER UID UNION UNIQUE UPDATE USER VALIDATE VALUES VARCHAR VARCHAR2 VIEW
WHENEVER WHERE WITH""".split())
_ORACLE_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_$#]*", re.ASCII)


class OracleDialect(Dialect):
    """Oracle: MERGE upsert, MDSYS.SDO_GEOMETRY points (gtype 2001/3001, SRID, SDO_POINT_TYPE).

    Names are written unquoted, as the reference did, so Oracle folds them to upper case
    (`Tidspunkt` is the column TIDSPUNKT of existing tables). A name that cannot stand unquoted
    (a reserved word, a leading `_`) is quoted in its upper-case form, which names the same
    object the folding would."""

    name = "oracle"

    def q(self, ident: str) -> str:
        if _ORACLE_PLAIN.fullmatch(ident) and ident.upper() not in _ORACLE_RESERVED:
            return ident
        return _quoted(ident.upper())

    def bind_names(self, t: TableDef) -> list[str]:
        """Bind variable names, one per column: the column name where it is a plain name
        (the reference's `:Tidspunkt`), else `b<i>` (a bind name cannot be quoted)."""
        return [c.name if self.q(c.name) == c.name else f"b{i}" for i, c in enumerate(t.columns)]

    def ddl_type(self, col: Column) -> str:
        return col.dtype

    def create_table(self, t: TableDef, drop: bool = False) -> list[str]:
        out = [f"DROP TABLE {self.q(t.name)}"] if drop else []
        cols = ",\n".join(f"  {self.q(c.name):<20} {c.dtype:<12} {c.extra}".rstrip() for c in t.columns)
        out.append(f"CREATE TABLE {self.q(t.name)}(\n{cols})")
        return out

    def upsert(self, t: TableDef) -> str:
        cols = [self.q(c.name) for c in t.columns]
        pk = self.q(t.pk)
        src = ", ".join(f":{b} AS {c}" for b, c in zip(self.bind_names(t), cols))
        sets = ", ".join(f"t.{c} = s.{c}" for c in cols if c != pk)
        return (f"MERGE INTO {self.q(t.name)} t USING (SELECT {src} FROM dual) s ON (t.{pk} = s.{pk}) "
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
            dims = ", ".join(f"MDSYS.SDO_DIM_ELEMENT({_literal(e['name'])}, {_num(e['min'])}, {_num(e['max'])}, "
                             f"{_num(e['tol'])})" for e in sm["dim_elements"])
            out.append("INSERT INTO MDSYS.USER_SDO_GEOM_METADATA(TABLE_NAME, COLUMN_NAME, DIMINFO, SRID) "
                       f"VALUES ({_literal(t.name.upper())}, {_literal(c.name.upper())}, MDSYS.SDO_DIM_ARRAY({dims}), "
                       f"{int(sm['srid'])})")
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
        raise ValueError(f"database.url {short_text(redact_text(url), 80)!r}: unknown scheme "
                         f"{short_text(scheme, 20)!r}; valid: sqlite:///FILE, "
                         "postgresql://USER@HOST/DB, oracle://USER@HOST:PORT/SERVICE") from None
