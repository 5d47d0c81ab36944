"""Table definitions (the reference's table YAML) and building rows from JSON records."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from engine.config import CONFIG_DIR
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


def load_table(name_or_path: str, table_name: Optional[str] = None) -> TableDef:
    """A shipped definition (config/db_tables/<NAME>.yml) or a YAML path."""
    p = Path(name_or_path)
    if not p.is_file():
        p = CONFIG_DIR / "db_tables" / f"{name_or_path}.yml"
    if not p.is_file():
        shipped = sorted(x.stem for x in (CONFIG_DIR / "db_tables").glob("*.yml"))
        raise ValueError(f"table definition {name_or_path!r} not found; shipped: {', '.join(shipped)}")
    data = yaml.safe_load(p.read_text(encoding="utf-8"))
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
        cols.append(Column(c["name"], str(c["dtype"]), c["formatter"], str(c.get("extra") or ""),
                           get_formatter(c["formatter"]), c.get("spatial_metadata")))
    names = [c.name for c in cols]
    if data["pk_column"] not in names:
        raise ValueError(f"{p}: pk_column {data['pk_column']!r} is not one of the columns")
    return TableDef(table_name or p.stem, data["pk_column"], tuple(cols))
