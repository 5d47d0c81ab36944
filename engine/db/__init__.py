"""Database rows: table definitions, formatters, dialects (SQLite, PostGIS, Oracle), spooling."""
from engine.db.sink import DatabaseLimitExceeded, DbSink
from engine.db.table import RowRejected, TableDef, load_table

__all__ = ["DatabaseLimitExceeded", "DbSink", "RowRejected", "TableDef", "load_table"]
