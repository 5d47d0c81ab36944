"""Read stage: the bytes of an input file. Decoding itself is in engine.codecs."""
from __future__ import annotations

from pathlib import Path

from engine.types import ImageError

__all__ = ["read_bytes"]


def read_bytes(path: Path) -> bytes:
    """Read a whole file; errors become ImageError naming the problem."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except PermissionError:
        raise ImageError("permission denied reading the file") from None
    except IsADirectoryError:
        raise ImageError("is a directory, not a file") from None
    except FileNotFoundError:
        raise ImageError("file disappeared before it could be read") from None
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
