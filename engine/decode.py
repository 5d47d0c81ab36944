"""Read stage: the bytes of an input file. Decoding itself is in engine.codecs."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from engine.types import ImageError

__all__ = ["read_bytes"]


def read_bytes(path: Path) -> bytes:
    """Read a whole file; errors become ImageError naming the problem.

    Opened without blocking and checked to be a regular file: a name swapped for a FIFO or a
    device after the walk saw it must fail that image, not hang the run."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ImageError("not a regular file (a FIFO, socket or device)")
            return fh.read()
    except PermissionError:
        raise ImageError("permission denied reading the file") from None
    except IsADirectoryError:
        raise ImageError("is a directory, not a file") from None
    except FileNotFoundError:
        raise ImageError("file disappeared before it could be read") from None
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
