"""Database connection settings from the configuration (the password never from a file in
plain text: an environment variable, or the reference's Fernet-encrypted db_config.py)."""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Optional

from engine.config import check_identifier
from engine.db.sink import DbSink
from engine.db.table import load_table
from engine.logs import register_secret

__all__ = ["sink_from_config", "db_url", "read_encrypted_config", "write_encrypted_config", "embedded_sqlite_path"]


_NOT_LITERAL = object()


def _literal_assignments(path: Path) -> dict:
    """`NAME = <literal>` lines of a Python file, read with ast.literal_eval: the file is
    parsed, never executed or imported, so no value in it can run code here."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: not a db_config.py of `name = value` lines ({type(exc).__name__})") from None
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError, RecursionError):     # an expression, not data: never run
                out[node.targets[0].id] = _NOT_LITERAL
    return out


def read_encrypted_config(path: Path) -> dict:
    """The reference's config/db_config.py: user, encrypted_password (Fernet, key ORACLE_KEY),
    dsn, schema, table_name. Parsed as literals, never executed."""
    values = _literal_assignments(path)
    out = {}
    for key in ("user", "dsn", "schema", "table_name"):
        v = values.get(key)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"{path}: `{key}` must be a string literal or None")
        out[key] = v
    for key in ("schema", "table_name"):
        if out[key] is not None:
            check_identifier(out[key], f"{path}: {key}")
    token = values.get("encrypted_password")
    if not isinstance(token, bytes):
        raise ValueError(f"{path}: no encrypted_password = b'...' line")
    key = os.environ.get("ORACLE_KEY")
    if not key:
        raise ValueError(f"{path} holds an encrypted password: set ORACLE_KEY to its Fernet key")
    from cryptography.fernet import Fernet
    out["password"] = Fernet(key.encode()).decrypt(token).decode("utf-8")
    register_secret(out["password"])
    return out


def write_encrypted_config(path: Path, *, user: str, password: str, dsn: str, schema: Optional[str],
                           table_name: str) -> None:
    """The reference's db_config.py. Every value is written as a Python literal (repr), so the
    file holds data only, whatever characters a value has: importing it runs no code of theirs."""
    check_identifier(table_name, "--table-name")
    if schema is not None:
        check_identifier(schema, "--schema")
    key = os.environ.get("ORACLE_KEY")
    if not key:
        raise ValueError("set ORACLE_KEY to a Fernet key (python -c 'from cryptography.fernet import Fernet; "
                         "print(Fernet.generate_key().decode())')")
    from cryptography.fernet import Fernet
    token = Fernet(key.encode()).encrypt(password.encode("utf-8"))
    lines = [f"user = {user!r}", f"encrypted_password = {token!r}", f"dsn = {dsn!r}", f"schema = {schema!r}",
             f"table_name = {table_name!r}"]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def db_url(cfg, output_dir: Optional[Path]) -> tuple[str, Optional[str]]:
    """(url, password) for a run. The password is registered with the log redaction."""
    spec = cfg.database
    if spec.encrypted_config:
        c = read_encrypted_config(Path(spec.encrypted_config))
        return f"oracle://{c['user']}@{c['dsn']}", c["password"]
    if spec.url:
        password = os.environ.get(spec.password_env)
        register_secret(password)
        return spec.url, password
    if output_dir is None:
        raise ValueError("the embedded SQLite database lives in the output folder: pass -o OUTPUT or set database.url")
    return f"sqlite:///{embedded_sqlite_path(cfg.table_name, output_dir)}", None


def embedded_sqlite_path(table_name: str, output_dir: Path) -> Path:
    """OUTPUT/.sladd/<table_name>.sqlite; table_name is an identifier (checked again here), so
    the file cannot land outside OUTPUT/.sladd."""
    check_identifier(table_name, "table_name")
    base = Path(output_dir) / ".sladd"
    path = base / f"{table_name}.sqlite"
    if path.parent != base:
        raise ValueError(f"table_name {table_name!r} would put the database outside {base}")
    return path


def sink_from_config(cfg, output_dir: Optional[Path], spool: Path) -> DbSink:
    table = load_table(cfg.database.table_definition or cfg.table_name, table_name=cfg.table_name)
    url, password = db_url(cfg, output_dir)
    create = cfg.database.create_table and not url.startswith("oracle")
    return DbSink(table, url, spool, password=password, batch=cfg.db_max_n_accumulated_rows,
                  max_errors=cfg.db_max_n_errors, max_cache=cfg.db_max_cache_size, create=create)
