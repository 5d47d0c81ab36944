"""Decoded frames in flight bounded by their bytes, not only by the queues' lengths: eight
queued 8000x4000 panoramas are 770 MB of pixels before the detect stage takes the first. A
frame is admitted after its decode while the frames between decode and the end of the write
stage (mask + encode) hold under `limit` bytes, or when none is in flight (a frame larger than
the limit goes alone); the decode thread waits meanwhile, which holds the reads back too.

A frame's bytes change on the way (the writer frees the coefficients before the frame is
released), so the budget releases what it admitted for that frame, not what the frame holds by
then: released by what is left, the freed coefficients stayed counted, and after ~17 frames of
5 MP the decoder waited for ever (a run of 40 hung)."""
from __future__ import annotations

import threading
from typing import Callable, Optional

from engine.types import Failure

__all__ = ["FrameBudget", "FRAME_BYTES"]

FRAME_BYTES = 256 << 20        # two 8000x4000 RGB frames; about seven 12 MP ones


def _nbytes(frame) -> int:
    """The frame's pixels and the DCT coefficients its decoder kept for the writer."""
    held = getattr(frame, "pixels", None), getattr(frame, "coefficients", None)
    return sum(int(getattr(x, "nbytes", 0) or 0) for x in held)


class FrameBudget:
    def __init__(self, limit: int = FRAME_BYTES):
        self.limit, self.used, self.peak = limit, 0, 0
        self._cond = threading.Condition()
        self._held: dict[int, int] = {}         # id(frame) -> bytes admitted, until released

    def acquire(self, n: int, stop: Optional[threading.Event] = None) -> None:
        with self._cond:
            while self.used > 0 and self.used + n > self.limit and not (stop is not None and stop.is_set()):
                self._cond.wait(0.2)
            self.used += n
            self.peak = max(self.peak, self.used)

    def release(self, n: int) -> None:
        with self._cond:
            self.used = max(0, self.used - n)
            self._cond.notify_all()

    def admit(self, frame, stop: Optional[threading.Event] = None) -> None:
        """Wait for room for `frame`'s bytes, then count them until `discharge(frame)`."""
        n = _nbytes(frame)
        self.acquire(n, stop)
        with self._cond:
            self._held[id(frame)] = self._held.get(id(frame), 0) + n

    def discharge(self, frame) -> None:
        """Release what `admit` counted for `frame` (once; nothing for a frame not admitted)."""
        with self._cond:
            n = self._held.pop(id(frame), 0)
        self.release(n)

    # Stage functions wrapped so that every admitted frame is released exactly once: after the
    # write stage's prepare, or when its detect fails (a failed batch is retried one by one, so
    # only the single-frame call releases on failure).
    def decoding(self, fn: Callable, stop: threading.Event) -> Callable:
        def decode(job):
            frame = fn(job)
            self.admit(frame, stop)
            return frame
        return decode

    def decoding_batch(self, fn: Callable, stop: threading.Event) -> Callable:
        def decode_batch(jobs):
            out = fn(jobs)
            for frame in out:
                if not isinstance(frame, Failure):
                    self.admit(frame, stop)
            return out
        return decode_batch

    def detecting(self, fn: Callable) -> Callable:
        def detect(frame):
            try:
                return fn(frame)
            except BaseException:
                self.discharge(frame)
                raise
        return detect

    def preparing(self, fn: Callable) -> Callable:
        def prepare(item):
            try:
                return fn(item)
            finally:
                self.discharge(item[0])
        return prepare
