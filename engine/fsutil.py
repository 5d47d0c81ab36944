"""Durable, atomic file output: write to a temporary name in the target folder, fsync, rename."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["PARTIAL_SUFFIX", "partial_name", "write_atomic", "copy_atomic", "wait_for_path",
           "PathNotReachable"]

PARTIAL_SUFFIX = ".sladd-partial"


def partial_name(path: Path) -> Path:
    """Deterministic temporary name, so an interrupted run's leftovers can be found and removed."""
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


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


class PathNotReachable(OSError):
    pass


def wait_for_path(path: Path, retry: float, timeout: float, what: str = "path", stop=None) -> None:
    """Wait for `path` to exist, checking every `retry` seconds for up to `timeout` seconds
    (the reference's file_access_retry_seconds / file_access_timeout_seconds)."""
    import logging
    import time

    log = logging.getLogger("sladd")
    waited = 0.0
    while not Path(path).exists():
        if waited >= timeout or (stop is not None and stop.is_set()):
            raise PathNotReachable(f"{what} {path} not reachable after {waited:.0f} s "
                                   f"(file_access_timeout_seconds={timeout:g})")
        log.warning("%s %s not reachable; retrying in %g s", what, path, retry)
        time.sleep(retry)
        waited += retry
