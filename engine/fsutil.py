"""Durable, atomic file output: write to a temporary name in the target folder, fsync, rename.

Also the small helpers every stage uses for file names that are not plain text: names that are
not valid UTF-8 (bytes from another system, surrogate-escaped as `os.fsdecode` gives them) and
names with control characters (a newline) are shown escaped, never raised on.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

__all__ = ["PARTIAL_PREFIX", "PARTIAL_SUFFIX", "LEGACY_PARTIAL_SUFFIX", "partial_name", "is_partial", "hostname",
           "write_atomic", "copy_atomic", "wait_for_path", "PathNotReachable", "is_no_space", "text_safe",
           "escape_line"]

# `.sladd-<16 hex>.partial`: 31 bytes whatever the target's name, so a 255-byte name (legal on
# ext4, XFS, NTFS) still has a temporary name; the hash keeps it deterministic per target.
PARTIAL_PREFIX = ".sladd-"
PARTIAL_SUFFIX = ".partial"
LEGACY_PARTIAL_SUFFIX = ".sladd-partial"          # `.{name}.sladd-partial`, sladd before 0.3


def partial_name(path: Path) -> Path:
    """Deterministic short temporary name in the target's folder, so an interrupted run's
    leftovers can be found (`is_partial`) and removed."""
    digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
    return path.with_name(f"{PARTIAL_PREFIX}{digest}{PARTIAL_SUFFIX}")


def is_partial(name: str) -> bool:
    """A temporary file of ours (this version's or an older one's): never an input, removed by
    the clean-up of interrupted runs."""
    return name.startswith(".") and (name.endswith(LEGACY_PARTIAL_SUFFIX)
                                     or (name.startswith(PARTIAL_PREFIX) and name.endswith(PARTIAL_SUFFIX)))


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass                      # some filesystems (SMB, some FUSE) refuse fsync on folders
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(dst)
    try:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
            fo.flush()
            os.fsync(fo.fileno())
        shutil.copystat(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dst.parent)


_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


def is_no_space(exc: BaseException) -> bool:
    """True when `exc` (or what it was raised from) is a full disk or an exhausted quota:
    OSError ENOSPC/EDQUOT, or SQLite's SQLITE_FULL ("database or disk is full")."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNOS:
            return True
        if isinstance(exc, sqlite3.OperationalError) and (
                getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _escape_surrogate(o: int) -> str:
    # os.fsdecode maps an undecodable byte b to U+DC00+b (surrogateescape): show the byte.
    return f"\\x{o - 0xDC00:02x}" if 0xDC80 <= o <= 0xDCFF else f"\\u{o:04x}"


def text_safe(s) -> str:
    """`s` as valid Unicode (encodable as UTF-8): bytes of a name that are not UTF-8 become
    `\\xNN`; anything else is unchanged. For the ledger, the metadata JSON, the error report."""
    s = str(s)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return "".join(_escape_surrogate(ord(c)) if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)


_LINE_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_line(s) -> str:
    """A path or name for a one-line report or a log line, unambiguous: `\\` -> `\\\\`; newline,
    CR, tab -> `\\n` `\\r` `\\t`; other ASCII control characters and bytes that are not UTF-8 ->
    `\\xNN`; other non-printable characters -> `\\uXXXX`. Printable text (æøå) is unchanged."""
    out = []
    for c in str(s):
        o = ord(c)
        if c in _LINE_ESCAPES:
            out.append(_LINE_ESCAPES[c])
        elif 0xD800 <= o <= 0xDFFF:
            out.append(_escape_surrogate(o))
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif not c.isprintable() and c != " ":
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(c)
    return "".join(out)


class PathNotReachable(OSError):
    pass


def wait_for_path(path: Path, retry: float, timeout: float, what: str = "path", stop=None, ok=None) -> None:
    """Wait for `path` to exist (and `ok()` to hold, when given), checking every `retry` seconds
    for up to `timeout` seconds (the reference's file_access_retry_seconds /
    file_access_timeout_seconds)."""
    import logging
    import time

    log = logging.getLogger("sladd")
    waited = 0.0
    while not (Path(path).exists() and (ok is None or ok())):
        if waited >= timeout or (stop is not None and stop.is_set()):
            raise PathNotReachable(f"{what} {escape_line(path)} not reachable after {waited:.0f} s "
                                   f"(file_access_timeout_seconds={timeout:g})")
        log.warning("%s %s not reachable; retrying in %g s", what, escape_line(path), retry)
        time.sleep(retry)
        waited += retry


def hostname() -> str:
    """This machine's name, as socket.gethostname() gives it (uname's node name on POSIX: the
    socket module costs ~10 ms of every start)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()
