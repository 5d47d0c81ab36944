"""The roots of a run (input, output, archive) on network shares that come and go (docs/reference.md
§6): a failure while a root is gone is not the image's; all workers wait for the root once, up
to the configured timeout, and the run stops if it does not come back."""
from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path
from typing import Callable, Optional

from engine.failures import Stopped
from engine.fsutil import PathNotReachable, escape_line, wait_for_path

__all__ = ["Roots"]

LOG = logging.getLogger("sladd")


class Roots:
    """Watches the roots of `tree`. `fatal(message)` stops the run; `stop` is the run's event.
    Also the worker's I/O guard: `call(fn, *args)` and `before_write()`."""

    def __init__(self, tree, stop: threading.Event, fatal: Callable[[str], None], retry_seconds: float,
                 timeout_seconds: float):
        self.tree, self.stop, self._fatal = tree, stop, fatal
        self.retry_seconds, self.timeout_seconds = retry_seconds, timeout_seconds
        self._roots: dict[Path, tuple[str, int]] = {}      # root -> (what, st_dev at the start)
        self._root_lock = threading.Lock()

    def note(self) -> None:
        roots = [(self.tree.input, "input folder"), (self.tree.output, "output folder")]
        if self.tree.archive is not None:
            roots.append((self.tree.archive, "archive folder"))
        for root, what in roots:
            try:
                self._roots[root] = (what, os.stat(root).st_dev)
            except OSError:
                pass                         # not there yet (an archive made by the first write)

    def ok(self, root: Path) -> bool:
        """The root is a folder on the device it was on at the start: a share unmounted from
        its mount point leaves an empty folder of the parent device behind."""
        try:
            st = os.stat(root)
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) and st.st_dev == self._roots[root][1]

    def gone(self, outputs_only: bool = False) -> Optional[Path]:
        return next((r for r in self._roots if not (outputs_only and r == self.tree.input) and not self.ok(r)),
                    None)

    def wait(self, root: Path) -> None:
        """`root` is gone: wait for it once, up to timeout_seconds, for all workers together;
        raise Stopped (after setting stats.fatal) if it does not come back."""
        what = self._roots[root][0]
        with self._root_lock:
            if self.stop.is_set():
                raise Stopped
            if self.ok(root):
                return
            try:
                wait_for_path(root, self.retry_seconds, self.timeout_seconds, what, self.stop,
                              ok=lambda: self.ok(root))
            except PathNotReachable as exc:
                if not self.stop.is_set():          # else the run stops for another reason already
                    self._fatal(f"{exc}; the images in flight are redone by the next run")
                raise Stopped from None
            LOG.warning("%s %s is back; continuing", what, escape_line(root))

    def call(self, fn: Callable, *args):
        """fn(*args); when it fails and a root is gone, wait for the root and call it again
        (at most 3 times): a failure caused by a vanished share is not the image's."""
        for attempt in range(3):
            try:
                return fn(*args)
            except Exception:
                root = self.gone()
                if root is None or attempt == 2:
                    raise
                self.wait(root)

    def before_write(self) -> None:
        """The frame holds the input's bytes already: only the output roots must be there."""
        root = self.gone(outputs_only=True)
        if root is not None:
            self.wait(root)
