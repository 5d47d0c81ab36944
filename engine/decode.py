"""Read stage: the bytes of an input file. Decoding itself is in engine.codecs."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional

from engine.types import ImageError

__all__ = ["read_bytes"]


def read_bytes(path: Path, *, follow_links: bool = True, max_bytes: Optional[int] = None) -> bytes:
    """Read a whole file; errors become ImageError naming the problem.

    Opened without blocking and checked to be a regular file: a name swapped for a FIFO or a
    device after the walk saw it must fail that image, not hang the run. `follow_links=False`:
    a symbolic link is refused too; `max_bytes`: a larger file is refused, not read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
        with open(fd, "rb") as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ImageError("not a regular file (a FIFO, socket or device)")
            if max_bytes is not None and st.st_size > max_bytes:
                raise ImageError(f"larger than {max_bytes} bytes")
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
            if max_bytes is not None and len(data) > max_bytes:
                raise ImageError(f"larger than {max_bytes} bytes")
            return data
    except PermissionError:
        raise ImageError("permission denied reading the file") from None
    except IsADirectoryError:
        raise ImageError("is a directory, not a file") from None
    except FileNotFoundError:
        raise ImageError("file disappeared before it could be read") from None
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
