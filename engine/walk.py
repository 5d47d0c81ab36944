"""Walk the input tree lazily and map each image to its mirrored output/archive/error paths."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Optional

from engine.fsutil import escape_line, is_partial
from engine.types import Job

__all__ = ["Tree", "error_root"]

LOG = logging.getLogger("sladd")


def error_root(output: Path) -> Path:
    """The reference's error tree: `<output>_error` beside the output root."""
    return output.with_name(output.name + "_error")


class Tree:
    """Input root and its mirrors. Files match by extension, case-insensitively.

    Symbolic links to folders are never followed. Symbolic links to files are followed only with
    `follow_symlinks` and only when the target is a file inside the input root (never outside it,
    never into sladd's own outputs). `scandir` lists one folder (os.scandir; injectable for tests).
    """

    def __init__(self, input_root: Path, output_root: Path, archive_root: Optional[Path],
                 extensions: list[str], *, follow_symlinks: bool = False, scandir: Optional[Callable] = None):
        self.input = Path(input_root).resolve()
        self.output = Path(output_root).resolve()
        self.archive = Path(archive_root).resolve() if archive_root else None
        self.errors = error_root(self.output)
        self.extensions = tuple(e.lower() for e in extensions)
        self.follow_symlinks = follow_symlinks
        self._scandir = scandir or os.scandir
        # Never walk into our own outputs when they live inside the input tree.
        self._exclude = {p for p in (self.output, self.archive, self.errors) if p is not None}

    def wanted(self, name: str) -> bool:
        if is_partial(name):
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

    def refusal(self, path: Path) -> Optional[str]:
        """None when `path` may be opened as an input; else why not (a symbolic link that is not
        followed). Checked again before every read and copy: a file swapped for a link after the
        walk is refused too."""
        if not os.path.islink(path):
            return None
        target = Path(os.path.realpath(path))
        if not self.follow_symlinks:
            return "symbolic link, not followed (input_follow_symlinks: false)"
        if not target.is_relative_to(self.input) or any(target.is_relative_to(e) for e in self._exclude):
            return f"symbolic link to {escape_line(target)}, outside the input folder (never followed)"
        if not target.is_file():
            return "symbolic link to something that is not a file"
        return None

    def paths(self, *, unlisted: Optional[list] = None, skipped: Optional[list] = None,
              on_error: Optional[Callable[[Path, OSError], bool]] = None, report: bool = True) -> Iterator[Path]:
        """Image paths, depth first, in sorted order (as os.walk top-down with sorted names).

        A folder that cannot be listed is logged and appended to `unlisted` as (folder, reason),
        unless `on_error(folder, exc)` returns True (list it again: the caller waited for a
        vanished share). Symbolic links and special files with an image's name that are not
        taken are logged and appended to `skipped` as (path, reason). Names are surrogate-
        escaped str (os.fsdecode) when they are not UTF-8; shown escaped (`escape_line`).
        """
        def note(where: Optional[list], level: int, what: str, path: Path, reason: str) -> None:
            if report:
                LOG.log(level, "%s %s: %s", what, escape_line(path), reason)
            if where is not None:
                where.append((escape_line(path), reason))

        stack = [self.input]
        while stack:
            d = stack.pop()
            try:
                with self._scandir(d) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                if on_error is not None and on_error(d, exc):
                    stack.append(d)
                    continue
                note(unlisted, logging.ERROR, "cannot list folder", d, exc.strerror or str(exc))
                continue
            subdirs = []
            for e in entries:
                p = d / e.name
                try:
                    if e.is_symlink():
                        if e.is_dir():
                            note(skipped, logging.WARNING, "skipping", p, "symbolic link to a folder (never followed)")
                        elif self.wanted(e.name):
                            why = self.refusal(p)
                            if why is None:
                                yield p
                            else:
                                note(skipped, logging.WARNING, "skipping", p, why)
                    elif e.is_dir(follow_symlinks=False):
                        if p not in self._exclude:
                            subdirs.append(p)
                    elif self.wanted(e.name):
                        if e.is_file(follow_symlinks=False):
                            yield p
                        else:                          # a FIFO named x.jpg would block the reader
                            note(skipped, logging.WARNING, "skipping", p, "not a regular file")
                except OSError as exc:
                    note(skipped, logging.ERROR, "skipping", p, f"cannot stat: {exc.strerror or exc}")
            stack.extend(reversed(subdirs))

    def count(self) -> int:
        return sum(1 for _ in self.paths(report=False))
