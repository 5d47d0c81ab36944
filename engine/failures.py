"""Why an image failed, as far as the run cares: the image's own fault, a full disk or quota
(retried as is by the next run), a file system turned read-only, or the run stopping.

Shared by the worker, which classifies what went wrong, and the driver, which decides what a
failure means for the run (record it, retry it later, stop)."""
from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from engine.fsutil import is_no_space
from engine.types import Failure, Job

__all__ = ["Stopped", "NoSpace", "ReadOnly", "classify", "mount_point", "NO_SPACE_PREFIX", "NO_SPACE_TEXT"]

# Reasons that mean a full disk or quota when only the text is left (errors re-raised as text).
NO_SPACE_TEXT = re.compile(r"\[Errno (28|122)\]|No space left|Disk quota exceeded|database or disk is full", re.I)
# How an image that failed only for want of space is recorded: retried by the next run as is.
NO_SPACE_PREFIX = "no space left"


class Stopped(Exception):
    """The run is stopping (fatal): the item is dropped, its ledger row stays `running`."""


@dataclass
class NoSpace(Failure):
    """A Failure whose cause is a full disk or quota, not the image; `where` is the folder."""

    where: Optional[str] = None


@dataclass
class ReadOnly(Failure):
    """A Failure whose cause is an output file system that turned read-only (ext4 remounts
    read-only on errors): nothing more can be written, so the run stops."""

    where: Optional[str] = None


def _read_only(exc: Optional[BaseException]) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.EROFS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def mount_point(path: Path) -> Path:
    """The mount point holding `path` (its nearest existing ancestor), for messages."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        dev = p.stat().st_dev
        while p != p.parent and p.parent.stat().st_dev == dev:
            p = p.parent
    except OSError:
        pass                                 # a message detail only: keep the deepest folder found
    return p


def classify(job: Job, stage: str, reason: str, exc: BaseException) -> Failure:
    """A Failure; a NoSpace one when the cause is a full disk or quota (errno, or the text), a
    ReadOnly one when the output file system is read-only."""
    name = getattr(exc, "filename", None)
    where = os.path.dirname(os.fsdecode(name)) if isinstance(name, (str, bytes)) else None
    if is_no_space(exc) or NO_SPACE_TEXT.search(reason):
        return NoSpace(job, stage, reason, where=where)
    if _read_only(exc):
        return ReadOnly(job, stage, reason, where=where)
    return Failure(job, stage, reason)
