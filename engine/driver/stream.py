"""Threads joined by bounded queues: each stage applies a function (or a batch function) to the
items of its input queue. A slow stage applies back-pressure, so memory stays flat whatever the
corpus size; TurboJPEG, ONNX Runtime and NumPy release the GIL, so the stages overlap."""
from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from typing import Callable, Optional

from engine.driver.budget import FRAME_BYTES, FrameBudget
from engine.failures import Stopped, classify
from engine.fsutil import escape_line
from engine.types import Failure, ImageError

__all__ = ["Stage", "LocalExecutor", "END", "put"]

LOG = logging.getLogger("sladd")
END = object()                  # the end marker, forwarded once by the last worker of a stage


class Stage:
    """`workers` threads applying `fn` to items of `inq`, putting results on `outq`.

    The last worker to see the end marker forwards it once, so any number of workers per
    stage shut down cleanly. An exception in `fn` becomes a Failure for that item.
    """

    def __init__(self, name: str, fn: Callable, inq: queue.Queue, outq: queue.Queue,
                 failq: queue.Queue, workers: int, stop: threading.Event, batch_fn: Optional[Callable] = None,
                 batch_size: int = 1):
        self.name, self.fn, self.inq, self.outq, self.failq = name, fn, inq, outq, failq
        self.stop = stop
        self.batch_fn, self.batch_size = batch_fn, batch_size
        self._alive = workers
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, name=f"sladd-{name}-{i}", daemon=True)
                        for i in range(workers)]

    def start(self):
        for t in self.threads:
            t.start()

    def _loop(self):
        while True:
            item = self.inq.get()
            if item is END:
                with self._lock:
                    self._alive -= 1
                    last = self._alive == 0
                if last:
                    put(self.outq, END, None)
                else:
                    self.inq.put(END)               # let the sibling workers see it too
                return
            if self.stop.is_set():
                continue                             # drain without work after a stop
            if self.batch_fn is not None and self.batch_size > 1:
                self._run_batch(item)
            else:
                self._one(item)

    def _run_batch(self, first) -> None:
        """Take what is already queued (up to batch_size) and run it as one batch; never waits
        for a batch to fill. An end marker met on the way is put back for the loop."""
        items, ended = [first], False
        while len(items) < self.batch_size:
            try:
                nxt = self.inq.get_nowait()
            except queue.Empty:
                break
            if nxt is END:
                ended = True
                break
            items.append(nxt)
        try:
            outs = list(self.batch_fn(items))
        except Stopped:
            outs = []                                # fatal: the items stay `running`
        except Exception:  # noqa: BLE001 - retry one by one so one bad image fails alone
            LOG.debug("%s batch of %d failed, retrying one by one:\n%s", self.name, len(items), traceback.format_exc())
            outs = None
            for item in items:
                self._one(item)
        for out in outs or ():
            # A batch function reports the items that failed alone as Failures.
            put(self.failq if isinstance(out, Failure) else self.outq, out, self.stop)
        if ended:
            self.inq.put(END)                       # seen again by the loop, which forwards it

    def _one(self, item):
        job = item[0].job if isinstance(item, tuple) else getattr(item, "job", item)
        try:
            out = self.fn(item)
        except Stopped:
            return                                   # fatal: the item stays `running`
        except ImageError as exc:
            put(self.failq, classify(job, self.name, str(exc), exc), self.stop)
            return
        except MemoryError:
            put(self.failq, Failure(job, self.name, "out of memory"), self.stop)
            return
        except Exception as exc:  # noqa: BLE001 - one image's failure must not end the run
            LOG.debug("%s failed on %s:\n%s", self.name, escape_line(job.key), traceback.format_exc())
            put(self.failq, classify(job, self.name, f"{type(exc).__name__}: {exc}", exc), self.stop)
            return
        put(self.outq, out, self.stop)


def put(q: queue.Queue, item, stop: Optional[threading.Event]):
    while True:
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            if stop is not None and stop.is_set() and item is not END:
                return


class LocalExecutor:
    """The worker's stages as threads of this process: decode (`decoders` threads, DALI batches
    when the worker's decoder takes them), detect (`detectors` threads, each with its own model
    sessions, `batch_size` frames per model call), mask + encode + metadata (`writers` threads), writing the files (`publishers`
    threads). Decoded frames in flight are bounded by their bytes too (engine/driver/budget.py).
    Same interface as the Ray executor."""

    def __init__(self, worker, *, queue_size: int = 8, decoders: int = 1, writers: int = 2, publishers: int = 4,
                 batch_size: int = 1, frame_bytes: int | None = None, detectors: int = 1):
        self.worker = worker
        self.detectors = detectors if getattr(worker, "make_detector", None) is not None else 1
        self.frame_bytes = frame_bytes or FRAME_BYTES
        self.queue_size, self.decoders, self.writers, self.batch_size = queue_size, decoders, writers, batch_size
        self.publishers = publishers
        self._resq: Optional[queue.Queue] = None
        self._failq: Optional[queue.Queue] = None

    def execute(self, jobq: queue.Queue, end, record: Callable, stop: threading.Event) -> None:
        if end is not END:
            raise ValueError("LocalExecutor runs on the stream's own end marker (engine.driver.stream.END)")
        q, w = self.queue_size, self.worker
        frameq, detq, prepq = queue.Queue(q), queue.Queue(q), queue.Queue(q)
        self._resq, self._failq = queue.Queue(q * 4), queue.Queue()
        nb = w.decode_batch_size
        fb = self.budget = FrameBudget(self.frame_bytes)  # decoded pixels in flight, by bytes
        stages = [
            Stage("decode", fb.decoding(w.decode, stop), jobq, frameq, self._failq, self.decoders, stop,
                  batch_fn=fb.decoding_batch(w.decode_batch, stop) if nb > 1 else None, batch_size=nb),
            Stage("detect", fb.detecting(w.detect), frameq, detq, self._failq, self.detectors, stop,
                  batch_fn=w.detect_batch if hasattr(w.detector, "detect_batch") else None,
                  batch_size=self.batch_size),
            Stage("write", fb.preparing(w.prepare), detq, prepq, self._failq, self.writers, stop),
            # Writing the files is I/O (an fsync per file): its own threads, so that the fsyncs
            # of several images overlap with each other and with the encoding.
            Stage("publish", w.publish, prepq, self._resq, self._failq, self.publishers, stop),
        ]
        for s in stages:
            s.start()
        self._consume(record)

    def drain(self, record: Callable, timeout: float) -> bool:
        """After a stop: record what the stages still finish; True when every stage has ended."""
        return self._resq is not None and self._consume(record, timeout)

    def _consume(self, record: Callable, timeout: Optional[float] = None) -> bool:
        """Record results and failures until the stages end (True), or for `timeout` seconds
        (False if they did not end by then)."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while deadline is None or time.perf_counter() < deadline:
            self._flush_failures(record)
            try:
                item = self._resq.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is END:
                self._flush_failures(record)
                return True
            record(item)
        self._flush_failures(record)
        return False

    def _flush_failures(self, record: Callable) -> None:
        while True:
            try:
                f = self._failq.get_nowait()
            except queue.Empty:
                return
            record(f)

    def close(self) -> None:
        return None
