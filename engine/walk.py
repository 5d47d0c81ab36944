"""Walk the input tree lazily and map each image to its mirrored output/archive/error paths."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Optional

from engine.fsutil import PARTIAL_SUFFIX
from engine.types import Job

__all__ = ["Tree", "error_root"]

LOG = logging.getLogger("sladd")


def error_root(output: Path) -> Path:
    """The reference's error tree: `<output>_error` beside the output root."""
    return output.with_name(output.name + "_error")


class Tree:
    """Input root and its mirrors. Files match by extension, case-insensitively."""

    def __init__(self, input_root: Path, output_root: Path, archive_root: Optional[Path],
                 extensions: list[str]):
        self.input = Path(input_root).resolve()
        self.output = Path(output_root).resolve()
        self.archive = Path(archive_root).resolve() if archive_root else None
        self.errors = error_root(self.output)
        self.extensions = tuple(e.lower() for e in extensions)
        # Never walk into our own outputs when they live inside the input tree.
        self._exclude = {p for p in (self.output, self.archive, self.errors) if p is not None}

    def wanted(self, name: str) -> bool:
        if name.startswith(".") and name.endswith(PARTIAL_SUFFIX):
            return False
        stem, ext = os.path.splitext(name)
        # Previews that `local_preview` writes beside the inputs are not inputs (reference rule,
        # narrowed from "contains preview" to the preview file name pattern).
        return ext.lower() in self.extensions and not stem.endswith("_preview")

    def job(self, path: Path) -> Job:
        rel = path.relative_to(self.input)
        st = path.stat()
        return Job(path=path, key=rel.as_posix(), output=self.output / rel,
                   archive=(self.archive / rel) if self.archive else None,
                   error_dir=self.errors / rel.parent, size=st.st_size, mtime_ns=st.st_mtime_ns)

    def paths(self) -> Iterator[Path]:
        """Image paths, depth first, in sorted order; symlinked folders are not followed."""
        def onerror(exc: OSError):
            LOG.error("cannot list folder %s: %s", exc.filename, exc.strerror)

        for dirpath, dirnames, filenames in os.walk(self.input, onerror=onerror):
            d = Path(dirpath)
            dirnames[:] = sorted(n for n in dirnames if (d / n).resolve() not in self._exclude)
            for name in sorted(filenames):
                if self.wanted(name):
                    yield d / name

    def count(self) -> int:
        return sum(1 for _ in self.paths())
