"""Logging set-up with the reference system's format and log file name, and the redaction of
secrets (database passwords) from every record."""
from __future__ import annotations

import datetime as _dt
import logging
import re
import socket
import sys
from pathlib import Path
from typing import Optional

from engine.progress import TqdmLoggingHandler

__all__ = ["setup_logging", "log_file_path", "FILE_ONLY", "RedactingFilter", "redact_text", "register_secret"]

# `LOG.info(..., extra=FILE_ONLY)`: for the log file, not the console (config dump, summary copy).
FILE_ONLY = {"file_only": True}


def _console_filter(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)

FORMAT = "[%(asctime)s %(levelname)s]: %(message)s"

# scheme://user:PASSWORD@host: the password runs to the last `@` before a space or quote, so a
# password with an unescaped `@` or `/` is still hidden whole (over-redacting beats leaking).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*):[^\s'\"]*@")
# libpq key=value strings and similar: password=..., pwd: ...
_KEY_PASSWORD = re.compile(r"(?P<head>\b(?:password|passwd|pwd)\s*[=:]\s*)(?P<q>['\"]?)[^\s'\",;]+",
                           re.IGNORECASE)
_SECRETS: set[str] = set()


def register_secret(value: Optional[str]) -> None:
    """Hide `value` (a password read from the environment or a db_config.py) in every later
    log record. Values under 4 characters are not registered: they would blank out words."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact_text(text: str) -> str:
    """`text` with URL passwords, password=... values and registered secrets replaced by ***."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + ":***@", text)
    text = _KEY_PASSWORD.sub(lambda m: m.group("head") + m.group("q") + "***", text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """Redacts the formatted message, exception text and stack of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact_text(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def log_file_path(log_dir: Path, pattern: str, now: Optional[_dt.datetime] = None) -> Path:
    """log_dir / pattern formatted; the name must stay a plain file name inside log_dir."""
    from engine.config import check_template

    check_template(pattern, "log_file_name")
    now = now or _dt.datetime.now()
    name = pattern.format(datetime=now.strftime("%Y-%m-%d_%H%M%S"), hostname=socket.gethostname())
    if Path(name).name != name or name in ("", ".", ".."):
        raise ValueError(f"log_file_name gives {name!r}, which is not a plain file name inside {log_dir}")
    return Path(log_dir) / name


def setup_logging(level: str, datefmt: str, log_dir: Optional[Path], pattern: str, *,
                  console_level: Optional[str] = None, tty: bool = False) -> Optional[Path]:
    logger = logging.getLogger("sladd")
    logger.setLevel(logging.DEBUG)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.propagate = False
    fmt = logging.Formatter(FORMAT, datefmt=datefmt)
    redact = RedactingFilter()
    console = TqdmLoggingHandler() if tty else logging.StreamHandler(sys.stderr)
    console.setLevel(console_level or level)
    console.setFormatter(fmt)
    console.addFilter(_console_filter)
    console.addFilter(redact)
    logger.addHandler(console)
    path = None
    if log_dir is not None:
        path = log_file_path(log_dir, pattern)
        path.parent.mkdir(parents=True, exist_ok=True)
        # backslashreplace: a file name with undecodable bytes is logged, not a logging error.
        fh = logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
        fh.setLevel(logging.INFO)           # the reference's file handler level
        fh.setFormatter(fmt)
        fh.addFilter(redact)
        logger.addHandler(fh)
    return path
