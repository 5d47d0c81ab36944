"""Logging set-up with the reference system's format and log file name, and the redaction of
secrets (database passwords, engine.redact) from every record."""
from __future__ import annotations

import datetime as _dt
import logging
import sys
from pathlib import Path
from typing import Optional

from engine.fsutil import hostname
from engine.progress import TqdmLoggingHandler
from engine.redact import redact_text, register_secret

__all__ = ["setup_logging", "log_file_path", "FILE_ONLY", "RedactingFilter", "redact_text", "register_secret",
           "quietly"]

# `LOG.info(..., extra=FILE_ONLY)`: for the log file, not the console (config dump, summary copy).
FILE_ONLY = {"file_only": True}


def _console_filter(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


FORMAT = "[%(asctime)s %(levelname)s]: %(message)s"


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
    from engine.config.checks import check_template

    check_template(pattern, "log_file_name")
    now = now or _dt.datetime.now()
    name = pattern.format(datetime=now.strftime("%Y-%m-%d_%H%M%S"), hostname=hostname())
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


def quietly(fn):
    """`fn` for a background thread (a warm-up): a failure there is only logged, at debug level
    (the run meets it again where it matters); it neither ends nor fails the run."""
    def call():
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - see the docstring
            logging.getLogger("sladd").debug("warm-up failed: %s", exc)
    return call
