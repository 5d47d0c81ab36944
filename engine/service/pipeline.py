"""The service's scheduling: admission, frame slots, decode/render threads, batched detection.

    request ─► admit (at most service.max_queue, else Busy: 503 + Retry-After)
            ─► frame slot (bounds the decoded pictures held in memory)
            ─► decode (thread pool) ─► detection queue ─► one thread: batches of up to
               engine.batch_size pictures, collected for up to service.batch_wait_ms
            ─► render (thread pool: mask, lossless patch or encode) ─► answer

A request that runs past service.timeout_seconds is answered 503; its work goes on until its
current step ends (a model call cannot be interrupted) and skips the steps after, and it keeps
its admission slot until then, so timed-out work can never pile up behind the queue's back.
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

__all__ = ["Pipeline", "Busy", "NotReady", "TimedOut", "Ticket"]

LOG = logging.getLogger("sladd")


class Busy(Exception):
    """The queue is full: 503 with Retry-After."""

    def __init__(self, retry_after: int, why: str):
        super().__init__(why)
        self.retry_after = retry_after


class NotReady(Busy):
    """The models are still loading (or failed to load)."""


class TimedOut(Busy):
    """The request ran past service.timeout_seconds."""


class _Cancelled(Exception):
    pass


class Ticket:
    """An admission slot, held by the request and by its work; freed when both let go."""

    def __init__(self, pipeline: "Pipeline"):
        self._pipeline, self._holds, self._lock = pipeline, 1, threading.Lock()

    def hold(self) -> None:
        with self._lock:
            self._holds += 1

    def release(self) -> None:
        with self._lock:
            self._holds -= 1
            done = self._holds == 0
        if done:
            self._pipeline._free()


class Pipeline:
    def __init__(self, *, max_queue: int, batch_size: int, batch_wait_ms: float, threads: Optional[int],
                 timeout: float, metrics=None):
        self.max_queue, self.batch_size, self.timeout = max_queue, max(1, batch_size), timeout
        self.batch_wait = batch_wait_ms / 1000.0
        self.threads = threads or max(2, os.cpu_count() or 2)
        self.metrics = metrics
        self.worker = None                       # engine.worker.memory.MemoryWorker once loaded
        self.state, self.error = "loading", None
        self._admitted, self._lock = 0, threading.Lock()
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sladd-render")
        self._frames: Optional[asyncio.Semaphore] = None
        self._detect_q: "queue.Queue" = queue.Queue()
        self._detector: Optional[threading.Thread] = None
        self._seconds_per_image = 1.0            # running estimate for Retry-After

    # --- life cycle -----------------------------------------------------------------------------
    def start(self, worker) -> None:
        """Models are loaded: start the detection thread and accept work."""
        self.worker = worker
        self._detector = threading.Thread(target=self._detect_loop, name="sladd-detect", daemon=True)
        self._detector.start()
        self.state = "ready"
        if self.metrics:
            self.metrics.ready.set(1)

    def failed(self, error: str) -> None:
        self.state, self.error = "failed", error

    def close(self) -> None:
        """After the server stopped taking requests and finished those in flight."""
        self._detect_q.put(None)
        if self._detector is not None:
            self._detector.join(timeout=30)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- admission --------------------------------------------------------------------------------
    def admit(self) -> Ticket:
        if self.state != "ready":
            raise NotReady(5 if self.state == "loading" else 60,
                           "the models are still loading" if self.state == "loading"
                           else f"the service could not load its models: {self.error}")
        with self._lock:
            if self._admitted >= self.max_queue:
                raise Busy(self.retry_after(), f"{self._admitted} requests in flight, the limit is "
                                               "service.max_queue; retry later")
            self._admitted += 1
        if self.metrics:
            self.metrics.queue.inc()
        return Ticket(self)

    def _free(self) -> None:
        with self._lock:
            self._admitted -= 1
        if self.metrics:
            self.metrics.queue.dec()

    @property
    def in_flight(self) -> int:
        return self._admitted

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained by half (at least 1)."""
        per = self._seconds_per_image / max(1, min(self.threads, self.batch_size * 2))
        return max(1, min(300, int(per * self._admitted / 2 + 0.999)))

    # --- one request --------------------------------------------------------------------------------
    async def process(self, data: bytes, ticket: Ticket, name: str = "upload.jpg"):
        """Rendered (engine.worker.memory); BadInput for the client's faults, TimedOut, or the
        exception of a failed step."""
        if self._frames is None:
            self._frames = asyncio.Semaphore(self.batch_size * 2 + self.threads)
        cancel = threading.Event()
        ticket.hold()
        work = asyncio.ensure_future(self._run(data, name, cancel))
        work.add_done_callback(lambda _f: ticket.release())
        try:
            return await asyncio.wait_for(asyncio.shield(work), self.timeout)
        except asyncio.TimeoutError:
            cancel.set()
            work.add_done_callback(_consume)
            raise TimedOut(self.retry_after(), f"processing took longer than service.timeout_seconds="
                                               f"{self.timeout:g}") from None
        except asyncio.CancelledError:           # the client went away
            cancel.set()
            work.add_done_callback(_consume)
            raise

    async def _run(self, data: bytes, name: str, cancel: threading.Event):
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        async with self._frames:
            self._observe("queue", time.perf_counter() - t0)
            frame = await loop.run_in_executor(self._pool, self._step, self.worker.decode, cancel, data, name)
            fut = loop.create_future()
            self._detect_q.put((frame, fut, loop, cancel, time.perf_counter()))
            dets = await fut
            out = await loop.run_in_executor(self._pool, self._step, self.worker.render, cancel, frame, dets)
        seconds = time.perf_counter() - t0
        self._seconds_per_image = 0.8 * self._seconds_per_image + 0.2 * seconds
        for stage in ("decode", "render"):
            self._observe(stage, out.timings.get(stage))
        return out

    @staticmethod
    def _step(fn, cancel: threading.Event, *args):
        if cancel.is_set():
            raise _Cancelled()
        return fn(*args)

    def _observe(self, stage: str, seconds: Optional[float]) -> None:
        if self.metrics and seconds is not None:
            self.metrics.stage.labels(stage).observe(seconds)

    # --- batched detection (one thread) ---------------------------------------------------------------
    def _detect_loop(self) -> None:
        while True:
            item = self._detect_q.get()
            if item is None:
                return
            batch = [item]
            deadline = time.perf_counter() + self.batch_wait
            while len(batch) < self.batch_size:
                try:
                    nxt = self._detect_q.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._detect_q.put(None)      # stop after this batch
                    break
                batch.append(nxt)
            live = [b for b in batch if not b[3].is_set()]
            for b in batch:
                if b[3].is_set():
                    _deliver(b, exc=_Cancelled())
            if live:
                self._detect(live)

    def _detect(self, batch: list) -> None:
        t0 = time.perf_counter()
        try:
            results = self.worker.detect_batch([b[0] for b in batch])
        except Exception as exc:  # noqa: BLE001 - one picture may be at fault: retry them one by one
            if len(batch) == 1:
                LOG.exception("detection failed")
                _deliver(batch[0], exc=exc)
                return
            LOG.warning("a batch of %d pictures failed (%s: %s); retrying one by one", len(batch),
                        type(exc).__name__, exc)
            for b in batch:
                self._detect([b])
            return
        seconds = time.perf_counter() - t0
        if self.metrics:
            self.metrics.batch.observe(len(batch))
        for b, dets in zip(batch, results):
            b[0].timings["detect"] = seconds
            self._observe("detect", seconds)
            _deliver(b, result=dets)


def _deliver(item, result=None, exc: Optional[BaseException] = None) -> None:
    """Hand a detection result (or error) to the request's event loop."""
    _, fut, loop, _, _ = item

    def put():
        if not fut.done():
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
    try:
        loop.call_soon_threadsafe(put)
    except RuntimeError:                           # the loop is closed: nobody waits any more
        pass


def _consume(fut) -> None:
    """Retrieve the result of work nobody waits for any more (no 'exception never retrieved')."""
    if not fut.cancelled():
        fut.exception()
