"""Logging set-up with the reference system's format and log file name."""
from __future__ import annotations

import datetime as _dt
import logging
import socket
import sys
from pathlib import Path
from typing import Optional

from engine.progress import TqdmLoggingHandler

__all__ = ["setup_logging", "log_file_path", "FILE_ONLY"]

# `LOG.info(..., extra=FILE_ONLY)`: for the log file, not the console (config dump, summary copy).
FILE_ONLY = {"file_only": True}


def _console_filter(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)

FORMAT = "[%(asctime)s %(levelname)s]: %(message)s"


def log_file_path(log_dir: Path, pattern: str, now: Optional[_dt.datetime] = None) -> Path:
    now = now or _dt.datetime.now()
    return Path(log_dir) / pattern.format(datetime=now.strftime("%Y-%m-%d_%H%M%S"), hostname=socket.gethostname())


def setup_logging(level: str, datefmt: str, log_dir: Optional[Path], pattern: str, *,
                  console_level: Optional[str] = None, tty: bool = False) -> Optional[Path]:
    logger = logging.getLogger("sladd")
    logger.setLevel(logging.DEBUG)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.propagate = False
    fmt = logging.Formatter(FORMAT, datefmt=datefmt)
    console = TqdmLoggingHandler() if tty else logging.StreamHandler(sys.stderr)
    console.setLevel(console_level or level)
    console.setFormatter(fmt)
    console.addFilter(_console_filter)
    logger.addHandler(console)
    path = None
    if log_dir is not None:
        path = log_file_path(log_dir, pattern)
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path, encoding="utf-8")
        fh.setLevel(logging.INFO)           # the reference's file handler level
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return path
