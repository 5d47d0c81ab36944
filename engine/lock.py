"""One run per output tree: an advisory lock in OUTPUT/.sladd/run.lock.

Two runs writing one output tree would race on the same files and ledger rows. The lock is a
kernel `flock` on the lock file, so it is released whatever way the holder ends (kill -9
included) and a lock can never be held by a process that no longer exists. The file also holds
who took it (pid, host, start time), so a refused run can name the holder, and a run that finds
the record of a holder that is gone says it takes the lock over.

Where the file system refuses `flock` (some network shares), the record alone is the lock: it is
created exclusively, and taken over only when it names a pid on this host that no longer runs.
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Optional

from engine.fsutil import hostname

__all__ = ["RunLock", "LockHeld", "lock_path"]

LOG = logging.getLogger("sladd")


def lock_path(output: Path) -> Path:
    return Path(output) / ".sladd" / "run.lock"


class LockHeld(RuntimeError):
    """Another run holds the output tree's lock; the message names it."""


def _describe(holder: Optional[dict]) -> str:
    if not holder:
        return "an unknown process (no holder recorded)"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                      # exists, owned by someone else
    return True


class RunLock:
    """`with RunLock(output, wait=False):` — raises LockHeld at once, or with `wait` polls until
    the holder ends (logging who it waits for, once)."""

    def __init__(self, output: Path, *, wait: bool = False, poll_seconds: float = 1.0):
        self.path = lock_path(output)
        self.wait = wait
        self.poll = poll_seconds
        self._fd: Optional[int] = None
        self._record_only = False

    def me(self) -> dict:
        return {"pid": os.getpid(), "host": hostname(),
                "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}

    def _read(self) -> Optional[dict]:
        try:
            text = self.path.read_text(encoding="utf-8")
            rec = json.loads(text) if text.strip() else None
            return rec if isinstance(rec, dict) else None
        except (OSError, ValueError):
            return None

    def _write_record(self, fd: int) -> None:
        data = json.dumps(self.me()).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, created = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            fd, created = os.open(self.path, os.O_RDWR), False
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                try:
                    announced = self._held(self._read(), announced)
                except LockHeld:
                    os.close(fd)
                    raise
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                os.close(fd)
                if created:
                    self.path.unlink(missing_ok=True)
                return self._acquire_record_only()
        previous = self._read()
        if previous and previous.get("pid") != os.getpid():
            # The kernel lock was free, so its holder is gone: it ended without tidying up.
            LOG.warning("taking over a stale lock left by %s (that run is no longer running)", _describe(previous))
        self._write_record(fd)
        self._fd = fd
        return self

    def _held(self, holder: Optional[dict], announced: bool) -> bool:
        """Another run holds the lock: raise LockHeld naming it, or (with `wait`) say once that
        this run waits, sleep a poll interval and return True."""
        if not self.wait:
            raise LockHeld(f"another sladd run is using {self.path.parent.parent}: {_describe(holder)} "
                           f"(lock {self.path}); wait for it to end, or rerun with --wait-lock")
        if not announced:
            LOG.warning("waiting for the run holding %s: %s", self.path, _describe(holder))
        time.sleep(self.poll)
        return True

    def _acquire_record_only(self) -> "RunLock":
        """No flock here: an exclusively created record is the lock."""
        announced = False
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    time.sleep(min(self.poll, 1.0))   # a holder between creating and writing it
                    holder = self._read()
                    if holder is None:
                        LOG.warning("taking over an empty lock record %s", self.path)
                        self.path.unlink(missing_ok=True)
                        continue
                here = holder.get("host") == hostname()
                if here and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]):
                    LOG.warning("taking over a stale lock left by %s (no such process on this host)",
                                _describe(holder))
                    self.path.unlink(missing_ok=True)
                    continue
                announced = self._held(holder, announced)
        self._write_record(fd)
        self._fd, self._record_only = fd, True
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            # Remove the record first, while still holding the lock, so a waiting run that gets
            # the lock next never mistakes this clean end for a stale lock.
            os.ftruncate(self._fd, 0)
            if self._record_only:
                self.path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(self._fd)             # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
