"""Table definitions (the reference's table YAML) and building rows from JSON records."""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from engine.config import CONFIG_DIR, ConfigError, check_identifier, read_yaml_file, short_text
from engine.db.formatters import get_formatter

__all__ = ["Column", "TableDef", "load_table", "RowRejected"]

LOG = logging.getLogger("sladd")


class RowRejected(ValueError):
    """A row that cannot be written (fix 6: the row, not the image); names the column."""

    def __init__(self, column: str, reason: str):
        super().__init__(f"column {column}: {reason}")
        self.column = column


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    formatter: str
    extra: str
    fn: Callable[[dict], Any]
    spatial: Optional[dict] = None

    @property
    def not_null(self) -> bool:
        return "NOT NULL" in self.extra.upper() or self.primary

    @property
    def primary(self) -> bool:
        return "PRIMARY KEY" in self.extra.upper()

    @property
    def geometry(self) -> bool:
        return self.dtype.upper() == "SDO_GEOMETRY"


@dataclass(frozen=True)
class TableDef:
    name: str
    pk: str
    columns: tuple[Column, ...]

    def make_row(self, record: dict) -> dict:
        """Column values for one JSON record; a formatter that fails gives None (as the
        reference, with a warning); an empty NOT NULL column rejects the row."""
        row = {}
        for c in self.columns:
            try:
                v = c.fn(record)
            except Exception as exc:  # noqa: BLE001 - the reference logged and stored NULL
                LOG.warning("table %s column %s: formatter %s failed: %s", self.name, c.name, c.formatter, exc)
                v = None
            if c.not_null and (v is None or v == ""):
                raise RowRejected(c.name, f"NOT NULL, but {c.formatter} gave no value")
            row[c.name] = v
        return row


# Column types and extras are written into CREATE TABLE as they are: only these shapes.
_DTYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,30}(\(\s*\d{1,5}\s*(,\s*\d{1,3}\s*)?\))?", re.ASCII)
_EXTRA = re.compile(r"\s*((NOT\s+NULL|NULL|PRIMARY\s+KEY|UNIQUE)\s*)*", re.ASCII | re.IGNORECASE)


def _check_column(p: Path, i: int, c: dict) -> None:
    name = check_identifier(c["name"], f"{p}: column {i + 1} name")
    if not isinstance(c["dtype"], str) or not _DTYPE.fullmatch(c["dtype"]):
        raise ValueError(f"{p}: column {name}: dtype must be a type name with an optional (size), such as "
                         f"VARCHAR(64) or NUMBER, got {short_text(repr(c['dtype']), 60)}")
    extra = c.get("extra") or ""
    if not isinstance(extra, str) or not _EXTRA.fullmatch(extra):
        raise ValueError(f"{p}: column {name}: extra may hold only NOT NULL, NULL, PRIMARY KEY, UNIQUE, "
                         f"got {short_text(repr(extra), 60)}")
    sm = c.get("spatial_metadata")
    if sm is None:
        return
    try:
        int(sm["srid"])
        for e in sm["dim_elements"]:
            check_identifier(e["name"], "dimension name")
            if not all(math.isfinite(float(e[k])) for k in ("min", "max", "tol")):
                raise ValueError("a bound is not finite")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{p}: column {name}: spatial_metadata needs an integer srid and dim_elements of "
                         f"{{name, min, max, tol}} with finite numbers ({short_text(exc, 120)})") from None


def _is_identifier(name: str) -> bool:
    try:
        check_identifier(name, "")
    except ValueError:
        return False
    return True


def load_table(name_or_path: str, table_name: Optional[str] = None) -> TableDef:
    """A shipped definition (config/db_tables/<NAME>.yml) or a YAML path. Table and column
    names must be plain SQL identifiers (engine.config.check_identifier)."""
    p = Path(name_or_path)
    if not p.is_file():
        # Only a plain name is looked up among the shipped tables (never a path built from it).
        shipped_dir = CONFIG_DIR / "db_tables"
        p = shipped_dir / f"{name_or_path}.yml" if _is_identifier(name_or_path) else p
    if not p.is_file():
        shipped = sorted(x.stem for x in (CONFIG_DIR / "db_tables").glob("*.yml"))
        raise ValueError(f"table definition {short_text(repr(name_or_path), 80)} not found; shipped: "
                         f"{', '.join(shipped)}")
    try:
        data = read_yaml_file(p)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get("pk_column"), str):
        raise ValueError(f"{p}: `pk_column` must be a string")
    if not isinstance(data.get("columns"), list) or not data["columns"]:
        raise ValueError(f"{p}: `columns` must be a non-empty list")
    cols = []
    for i, c in enumerate(data["columns"]):
        missing = [k for k in ("name", "dtype", "formatter") if not isinstance(c, dict) or not c.get(k)]
        if missing:
            raise ValueError(f"{p}: column {i + 1} lacks {', '.join(missing)}")
        if str(c["dtype"]).upper() == "SDO_GEOMETRY" and not c.get("spatial_metadata"):
            raise ValueError(f"{p}: geometry column {c['name']} needs spatial_metadata (srid, dimension, dim_elements)")
        _check_column(p, i, c)
        cols.append(Column(c["name"], str(c["dtype"]), c["formatter"], str(c.get("extra") or ""),
                           get_formatter(c["formatter"]), c.get("spatial_metadata")))
    names = [c.name for c in cols]
    if data["pk_column"] not in names:
        raise ValueError(f"{p}: pk_column {short_text(repr(data['pk_column']), 60)} is not one of the columns")
    name = table_name or p.stem
    check_identifier(name, "table_name")
    return TableDef(name, data["pk_column"], tuple(cols))
