"""Progress on a terminal (tqdm bar with images/s and ETA) or plain log lines otherwise."""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Optional

__all__ = ["Progress", "TqdmLoggingHandler"]

LOG = logging.getLogger("sladd")


class TqdmLoggingHandler(logging.StreamHandler):
    """Console log lines that do not tear the progress bar."""

    def emit(self, record):
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class Progress:
    """Counts handled images against a total that a background count fills in."""

    def __init__(self, *, tty: Optional[bool] = None, interval: float = 10.0, enabled: bool = True):
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.interval = interval
        self.enabled = enabled
        self.total: Optional[int] = None
        self._bar = None
        self._last_log = time.monotonic()
        self._t0 = time.monotonic()
        self._done_base = 0
        self._lock = threading.Lock()
        if enabled and self.tty:
            from tqdm import tqdm
            self._bar = tqdm(total=None, unit="img", dynamic_ncols=True, file=sys.stderr,
                             smoothing=0.1, desc="sladd")

    def set_total(self, n: int):
        with self._lock:
            self.total = n
            if self._bar is not None:
                self._bar.total = n
                self._bar.refresh()

    def update(self, stats):
        handled = stats.processed + stats.skipped_done + stats.skipped_failed
        with self._lock:
            if self._bar is not None:
                self._bar.n = handled
                self._bar.set_postfix(failed=stats.failed, skipped=stats.skipped_done + stats.skipped_failed,
                                      refresh=False)
                self._bar.refresh()
                return
            if not self.enabled:
                return
            now = time.monotonic()
            if now - self._last_log < self.interval:
                return
            self._last_log = now
            rate = stats.processed / max(now - self._t0, 1e-9)
            total = f"/{self.total}" if self.total is not None else ""
            eta = ""
            if self.total is not None and rate > 0:
                left = max(self.total - handled, 0) / rate
                eta = f", ETA {time.strftime('%H:%M:%S', time.gmtime(left))}"
            LOG.info("progress: %d%s images (%.2f img/s, %d failed%s)", handled, total, rate, stats.failed, eta)

    def close(self):
        if self._bar is not None:
            self._bar.close()
