"""The worker: one image from its Job to its outputs written atomically and a small result
record (engine.types.Result, or a Failure naming the stage and the reason).

It holds the per-thread resources (decoder handles, writers with their encoders) and knows
nothing of the ledger, the database, deletion or statistics: those are the driver's. The same
object runs in the threaded stream (one method per stage, so stages overlap), and in a single
call per image (`process`) for a process per GPU, a Ray actor or the HTTP service.

File-system trouble that is not the image's (a share gone, a full disk) is the caller's
business: it passes an `io` guard whose `call(fn, *args)` may wait and retry and whose
`before_write()` may wait for the output to come back. Without one, I/O errors fail the image.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from engine.decode import read_bytes
from engine.failures import Stopped, classify
from engine.types import Failure, Frame, ImageError, Job, Result
from engine.worker.write import Writer

__all__ = ["Worker", "NoGuard"]


class NoGuard:
    """I/O without waiting for vanished shares: a failure is the image's."""

    @staticmethod
    def call(fn: Callable, *args):
        return fn(*args)

    @staticmethod
    def before_write() -> None:
        return None


class Worker:
    """`make_decoder()` and `make_writer()` build one decoder / writer per thread; `detector` is
    the first detect thread's (it batches); `make_detector()`, where given, builds one for each
    further detect thread (its own model sessions). `refusal(path)` returns why a file must not
    be read (a symbolic link, a special file) or None."""

    def __init__(self, *, make_decoder: Callable, detector, make_writer: Callable, io=None,
                 refusal: Optional[Callable] = None, decode_batch: int = 1, make_detector: Optional[Callable] = None):
        self.make_decoder, self.detector, self.make_writer = make_decoder, detector, make_writer
        self.make_detector = make_detector
        self._detector_lock = threading.Lock()
        self._first_detector_taken = False
        self.io = io or NoGuard()
        self.refusal = refusal or (lambda path: None)
        self.decode_batch_size = decode_batch        # images per decoder call (DALI batches)
        self._tls = threading.local()

    # --- per-thread resources ------------------------------------------------------------------
    def decoder(self):
        if not hasattr(self._tls, "decoder"):
            self._tls.decoder = self.make_decoder()
        return self._tls.decoder

    def thread_detector(self):
        """The calling detect thread's detector: the first thread takes `detector`, the others
        build their own (Detector is not thread-safe)."""
        if not hasattr(self._tls, "detector"):
            with self._detector_lock:
                first = not self._first_detector_taken or self.make_detector is None
                self._first_detector_taken = True
            self._tls.detector = self.detector if first else self.make_detector()
        return self._tls.detector

    def writer(self):
        if not hasattr(self._tls, "writer"):
            self._tls.writer = self.make_writer()
        return self._tls.writer

    # --- stages ----------------------------------------------------------------------------------
    def read(self, job: Job) -> bytes:
        why = self.refusal(job.path)
        if why is not None:
            raise ImageError(why)
        data = self.io.call(read_bytes, job.path)
        if len(data) != job.size:
            # Another process is writing it: fail now; its new mtime makes the next run redo it.
            raise ImageError(f"file changed while being read ({job.size} bytes when found, {len(data)} read)")
        return data

    def decode(self, job: Job) -> Frame:
        t0 = time.perf_counter()
        data = self.read(job)
        t_read = time.perf_counter() - t0
        frame = self.decoder().decode(job, data)
        frame.timings["read"] = t_read
        return frame

    def decode_batch(self, jobs: list[Job]) -> list:
        """Several images per decoder call (DALI): each is read on its own; a read or decode
        error fails that image alone (a Failure in its place)."""
        out: list = [None] * len(jobs)
        items, where = [], []
        for k, job in enumerate(jobs):
            t0 = time.perf_counter()
            try:
                data = self.read(job)
            except ImageError as exc:
                out[k] = classify(job, "decode", str(exc), exc)
                continue
            items.append((job, data))
            where.append((k, time.perf_counter() - t0))
        for (k, t_read), frame in zip(where, self.decoder().decode_batch(items) if items else []):
            if isinstance(frame, ImageError):
                out[k] = Failure(jobs[k], "decode", str(frame))
            else:
                frame.timings["read"] = t_read
                out[k] = frame
        return out

    def detect(self, frame: Frame):
        return frame, self.thread_detector()(frame)

    def detect_batch(self, frames: list[Frame]):
        return list(zip(frames, self.thread_detector().detect_batch(frames)))

    def write(self, item) -> Result:
        """Mask, encode and write every output of one image (the writer publishes all or none)."""
        return self.publish(self.prepare(item))

    def prepare(self, item):
        """Mask, encode, build the metadata: everything but the writing (CPU)."""
        frame, dets = item
        # The metadata reads the input's folder and file names: a share gone here is not the image's.
        return self.io.call(self.writer().prepare, frame, dets)

    def publish(self, prepared) -> Result:
        """Write the prepared outputs atomically (I/O: fsync per file)."""
        self.io.before_write()
        why = self.refusal(prepared.job.path)       # the archive copy reads the input again
        if why is not None:
            raise ImageError(why)
        return self.io.call(Writer.publish, prepared)

    # --- one call per image ----------------------------------------------------------------------
    def process(self, job: Job):
        """Job -> Result, or a Failure with the stage and the reason (never raises for the
        image's own faults). Raises Stopped when the run is stopping."""
        stage = "decode"
        try:
            frame = self.decode(job)
            stage = "detect"
            item = self.detect(frame)
            stage = "write"
            return self.write(item)
        except Stopped:
            raise
        except MemoryError:
            return Failure(job, stage, "out of memory")
        except Exception as exc:  # noqa: BLE001 - the image fails, the caller goes on
            reason = str(exc) if isinstance(exc, ImageError) else f"{type(exc).__name__}: {exc}"
            return classify(job, stage, reason, exc)
