"""Database connection settings from the configuration (the password never from a file in
plain text: an environment variable, or the reference's Fernet-encrypted db_config.py)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from engine.db.sink import DbSink
from engine.db.table import load_table

__all__ = ["sink_from_config", "db_url", "read_encrypted_config", "write_encrypted_config"]


def read_encrypted_config(path: Path) -> dict:
    """The reference's config/db_config.py: user, encrypted_password (Fernet, key ORACLE_KEY),
    dsn, schema, table_name. Parsed as text, never executed."""
    text = Path(path).read_text(encoding="utf-8")
    out = {}
    for key in ("user", "dsn", "schema", "table_name"):
        m = re.search(rf'^{key}\s*=\s*(?:"([^"]*)"|None)', text, re.M)
        out[key] = m.group(1) if m else None
    m = re.search(r"^encrypted_password\s*=\s*b'([^']*)'", text, re.M)
    if not m:
        raise ValueError(f"{path}: no encrypted_password = b'...' line")
    key = os.environ.get("ORACLE_KEY")
    if not key:
        raise ValueError(f"{path} holds an encrypted password: set ORACLE_KEY to its Fernet key")
    from cryptography.fernet import Fernet
    out["password"] = Fernet(key.encode()).decrypt(m.group(1).encode()).decode("utf-8")
    return out


def write_encrypted_config(path: Path, *, user: str, password: str, dsn: str, schema: Optional[str],
                           table_name: str) -> None:
    key = os.environ.get("ORACLE_KEY")
    if not key:
        raise ValueError("set ORACLE_KEY to a Fernet key (python -c 'from cryptography.fernet import Fernet; "
                         "print(Fernet.generate_key().decode())')")
    from cryptography.fernet import Fernet
    token = Fernet(key.encode()).encrypt(password.encode("utf-8")).decode()
    schema_line = f'"{schema}"' if schema else "None"
    Path(path).write_text(f'user = "{user}"\nencrypted_password = b\'{token}\'\ndsn = "{dsn}"\n'
                          f"schema = {schema_line}\ntable_name = \"{table_name}\"\n", encoding="utf-8")


def db_url(cfg, output_dir: Optional[Path]) -> tuple[str, Optional[str]]:
    """(url, password) for a run."""
    spec = cfg.database
    if spec.encrypted_config:
        c = read_encrypted_config(Path(spec.encrypted_config))
        return f"oracle://{c['user']}@{c['dsn']}", c["password"]
    if spec.url:
        return spec.url, os.environ.get(spec.password_env)
    if output_dir is None:
        raise ValueError("the embedded SQLite database lives in the output folder: pass -o OUTPUT or set database.url")
    return f"sqlite:///{Path(output_dir) / '.sladd' / f'{cfg.table_name}.sqlite'}", None


def sink_from_config(cfg, output_dir: Optional[Path], spool: Path) -> DbSink:
    table = load_table(cfg.database.table_definition or cfg.table_name, table_name=cfg.table_name)
    url, password = db_url(cfg, output_dir)
    create = cfg.database.create_table and not url.startswith("oracle")
    return DbSink(table, url, spool, password=password, batch=cfg.db_max_n_accumulated_rows,
                  max_errors=cfg.db_max_n_errors, max_cache=cfg.db_max_cache_size, create=create)
