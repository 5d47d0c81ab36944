"""The stream: walk -> read+decode -> detect -> mask+encode+write -> ledger.

Each stage runs in its own thread(s); stages are joined by bounded queues, so a slow stage
applies back-pressure and memory stays flat whatever the corpus size. TurboJPEG, ONNX Runtime
and NumPy release the GIL, so decode, inference and writing overlap on a multi-core CPU.
"""
from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from engine.decode import read_bytes
from engine.fsutil import PARTIAL_SUFFIX, PathNotReachable, wait_for_path, write_atomic
from glob import escape as glob_escape
from engine.ledger import DONE, FAILED, Ledger
from engine.types import Failure, ImageError, Job, Result
from engine.walk import Tree

__all__ = ["Pipeline", "RunStats", "ledger_path"]

LOG = logging.getLogger("sladd")
_END = object()


def ledger_path(output: Path) -> Path:
    return Path(output) / ".sladd" / "ledger.sqlite"


@dataclass
class RunStats:
    found: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    anonymised: int = 0          # written with pixels changed
    unchanged: int = 0           # written, nothing to mask (copied byte for byte)
    failed: int = 0
    detections: dict = field(default_factory=dict)
    db_written: int = 0
    db_rejected: int = 0
    db_pending: int = 0
    fatal: Optional[str] = None    # why the run stopped early, if it did
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)

    @property
    def processed(self) -> int:
        return self.anonymised + self.unchanged + self.failed


class _Stage:
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
            if item is _END:
                with self._lock:
                    self._alive -= 1
                    last = self._alive == 0
                if last:
                    _put(self.outq, _END, None)
                else:
                    self.inq.put(_END)               # let the sibling workers see it too
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
            if nxt is _END:
                ended = True
                break
            items.append(nxt)
        try:
            outs = list(self.batch_fn(items))
        except Exception:  # noqa: BLE001 - retry one by one so one bad image fails alone
            LOG.debug("%s batch of %d failed, retrying one by one:\n%s", self.name, len(items), traceback.format_exc())
            outs = None
            for item in items:
                self._one(item)
        for out in outs or ():
            # A batch function reports the items that failed alone as Failures.
            _put(self.failq if isinstance(out, Failure) else self.outq, out, self.stop)
        if ended:
            self.inq.put(_END)                       # seen again by the loop, which forwards it

    def _one(self, item):
        job = item[0].job if isinstance(item, tuple) else getattr(item, "job", item)
        try:
            out = self.fn(item)
        except ImageError as exc:
            _put(self.failq, Failure(job, self.name, str(exc)), self.stop)
            return
        except MemoryError:
            _put(self.failq, Failure(job, self.name, "out of memory"), self.stop)
            return
        except Exception as exc:  # noqa: BLE001 - one image's failure must not end the run
            LOG.debug("%s failed on %s:\n%s", self.name, job.key, traceback.format_exc())
            _put(self.failq, Failure(job, self.name, f"{type(exc).__name__}: {exc}"), self.stop)
            return
        _put(self.outq, out, self.stop)


def _put(q: queue.Queue, item, stop: Optional[threading.Event]):
    while True:
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            if stop is not None and stop.is_set() and item is not _END:
                return


class Pipeline:
    """Runs one `sladd run`. Components are built by the caller (see engine.run)."""

    def __init__(self, *, tree: Tree, ledger: Ledger, make_decoder: Callable, detector, make_writer: Callable,
                 queue_size: int = 8, decoders: int = 1, writers: int = 2, force: bool = False,
                 retry_failed: bool = False, progress=None, batch_size: int = 1, db=None,
                 delete_input: bool = False, retry_seconds: float = 10.0, timeout_seconds: float = 60.0,
                 enospc_limit: int = 3, notifier=None):
        self.tree, self.ledger = tree, ledger
        self.make_decoder, self.detector, self.make_writer = make_decoder, detector, make_writer
        self.queue_size, self.n_decoders, self.n_writers = queue_size, decoders, writers
        self.force, self.retry_failed = force, retry_failed
        self.progress = progress
        self.batch_size = batch_size
        self.db = db
        self.delete_input = delete_input
        self.notifier = notifier
        self.retry_seconds, self.timeout_seconds = retry_seconds, timeout_seconds
        self.enospc_limit, self._enospc = enospc_limit, 0
        self.stop = threading.Event()
        self.stats = RunStats()
        self._tls = threading.local()

    # --- per-thread components (TurboJPEG handles, writers) ----------------------------------
    def _decoder(self):
        if not hasattr(self._tls, "decoder"):
            self._tls.decoder = self.make_decoder()
        return self._tls.decoder

    def _writer(self):
        if not hasattr(self._tls, "writer"):
            self._tls.writer = self.make_writer()
        return self._tls.writer

    # --- stage functions -----------------------------------------------------------------------
    def _decode(self, job: Job):
        t0 = time.perf_counter()
        self._reachable(job.path.parent, "input folder")
        data = read_bytes(job.path)
        if len(data) != job.size:
            # Another process is writing it: fail now; its new mtime makes the next run redo it.
            raise ImageError(f"file changed while being read ({job.size} bytes when found, {len(data)} read)")
        t_read = time.perf_counter() - t0
        frame = self._decoder().decode(job, data)
        frame.timings["read"] = t_read
        return frame

    def _decode_batch(self, jobs: list[Job]) -> list:
        """Several images per decoder call (DALI): each is read on its own; a read or decode
        error fails that image alone (a Failure in its place)."""
        out: list = [None] * len(jobs)
        items, where = [], []
        for k, job in enumerate(jobs):
            t0 = time.perf_counter()
            try:
                self._reachable(job.path.parent, "input folder")
                data = read_bytes(job.path)
                if len(data) != job.size:
                    raise ImageError(f"file changed while being read ({job.size} bytes when found, {len(data)} read)")
            except ImageError as exc:
                out[k] = Failure(job, "decode", str(exc))
                continue
            items.append((job, data))
            where.append((k, time.perf_counter() - t0))
        for (k, t_read), frame in zip(where, self._decoder().decode_batch(items) if items else []):
            if isinstance(frame, ImageError):
                out[k] = Failure(jobs[k], "decode", str(frame))
            else:
                frame.timings["read"] = t_read
                out[k] = frame
        return out

    def _detect(self, frame):
        return frame, self.detector(frame)

    def _detect_batch(self, frames):
        return list(zip(frames, self.detector.detect_batch(frames)))

    def _write(self, item):
        frame, dets = item
        self._reachable(self.tree.output, "output folder")
        return self._writer()(frame, dets)

    def _reachable(self, path: Path, what: str) -> None:
        """Network shares come and go: wait for `path` (reference §6), then fail this image."""
        if path.exists():
            return
        try:
            wait_for_path(path, self.retry_seconds, self.timeout_seconds, what, self.stop)
        except PathNotReachable as exc:
            raise ImageError(str(exc)) from None

    # --- walking ---------------------------------------------------------------------------------
    def _should_skip(self, job: Job) -> Optional[str]:
        if self.force:
            return None
        row = self.ledger.get(job.key)
        if row is None or row["size"] != job.size or row["mtime_ns"] != job.mtime_ns:
            return None                     # new, or the input changed since
        if row["status"] == DONE and all(os.path.exists(p) for p in row["outputs"]):
            return DONE
        if row["status"] == FAILED and not self.retry_failed:
            return FAILED
        return None

    def _walk(self, jobq: queue.Queue, failq: queue.Queue):
        try:
            for path in self.tree.paths():
                if self.stop.is_set():
                    break
                try:
                    job = self.tree.job(path)
                except OSError as exc:
                    LOG.error("cannot stat %s: %s", path, exc)
                    continue
                self.stats.found += 1
                skip = self._should_skip(job)
                if skip == DONE:
                    self.stats.skipped_done += 1
                    if self.delete_input:            # a run stopped between write and delete
                        self._delete_input(job, self.ledger.get(job.key)["outputs"])
                    self._tick()
                    continue
                if skip == FAILED:
                    self.stats.skipped_failed += 1
                    self._tick()
                    continue
                self.ledger.mark_running(job)
                _put(jobq, job, self.stop)
        except Exception as exc:  # noqa: BLE001 - report and end the stream cleanly
            LOG.error("walking %s failed: %s", self.tree.input, exc)
        finally:
            _put(jobq, _END, None)

    def _tick(self):
        if self.progress is not None:
            self.progress.update(self.stats)

    # --- results -----------------------------------------------------------------------------------
    def _record_failure(self, f: Failure):
        self.stats.failed += 1
        LOG.error("FAILED %s (%s): %s", f.job.path, f.stage, f.reason)
        if "[Errno 28]" in f.reason or "No space left" in f.reason:
            self._enospc += 1
            if self._enospc >= self.enospc_limit and not self.stats.fatal:
                self.stats.fatal = (f"no space left on the output device ({self._enospc} images in a row could not be "
                                    "written); free space, then rerun to continue")
                LOG.error("stopping the run: %s", self.stats.fatal)
                self.stop.set()
        self.ledger.mark_failed(f.job, f.stage, f.reason, f.timings)
        try:
            # The reference's error tree: a copy of the input and <stem>_error.txt.
            f.job.error_dir.mkdir(parents=True, exist_ok=True)
            if f.job.path.is_file():
                shutil.copy2(f.job.path, f.job.error_dir / f.job.path.name)
            write_atomic(f.job.error_dir / f"{f.job.path.stem}_error.txt",
                         f"{f.job.path}\nstage: {f.stage}\nerror: {f.reason}\n".encode("utf-8"))
        except OSError as exc:
            LOG.error("could not write the error copy for %s: %s", f.job.path, exc)
        if self.notifier is not None:
            self.notifier.processing_error(f"{f.job.path}\nstage: {f.stage}\nerror: {f.reason}")

    def _record_result(self, r: Result):
        if r.masked:
            self.stats.anonymised += 1
        else:
            self.stats.unchanged += 1
        for k, v in r.detections.items():
            self.stats.detections[k] = self.stats.detections.get(k, 0) + v
        for k, v in r.timings.items():
            self.stats.stage_seconds[k] = self.stats.stage_seconds.get(k, 0.0) + v
        if self.db is not None and r.record is not None:
            # Spooled before the ledger says done: a crash in between redoes the image, and the
            # upsert keeps the row single; the other order could lose the row.
            reason = self.db.add(r.record)
            if reason:
                # Fix 6: the row is rejected, not the image (its JSON and image are written).
                self.stats.db_rejected += 1
                LOG.warning("database row for %s rejected: %s", r.job.key, reason)
        self.ledger.mark_done(r.job, r.outputs, r.detections, r.timings)
        self._enospc = 0
        if self.delete_input:
            self._delete_input(r.job, r.outputs)
        if self.db is not None and self.db.pending() >= self.db.batch:
            self._flush_db()
        LOG.debug("done %s: %s, %s", r.job.key, r.detections or "nothing found",
                  " ".join(f"{k}={v * 1000:.0f}ms" for k, v in r.timings.items()))

    def _delete_input(self, job: Job, outputs: list[str]) -> None:
        """delete_input: remove the input once every expected output exists (they were fsync'ed
        before the ledger marked the image done), then its emptied folders up to the root."""
        missing = [p for p in outputs if not os.path.isfile(p) or os.path.getsize(p) == 0]
        if missing or job.archive is None or not job.archive.is_file():
            LOG.error("not deleting %s: outputs missing: %s", job.path, missing or [str(job.archive)])
            return
        try:
            job.path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            LOG.error("could not delete the input %s: %s", job.path, exc)
            return
        d = job.path.parent
        while d != self.tree.input and self.tree.input in d.parents:
            try:
                d.rmdir()                           # only succeeds when empty
            except OSError:
                break
            d = d.parent

    def _flush_db(self, all_rows: bool = False) -> None:
        from engine.db.sink import DatabaseLimitExceeded

        try:
            self.stats.db_written += self.db.flush(all_rows=all_rows)
        except DatabaseLimitExceeded as exc:
            self.stats.fatal = str(exc)
            LOG.error("stopping the run: %s", exc)
            self.stop.set()

    def cleanup_interrupted(self) -> int:
        """Remove temporary files (image, archive copy, JSON, previews) of images a previous
        run left half-done."""
        n = 0
        for key in self.ledger.interrupted():
            rel = Path(key)
            dirs = [self.tree.output / rel.parent, self.tree.input / rel.parent]
            if self.tree.archive is not None:
                dirs.append(self.tree.archive / rel.parent)
            for d in dirs:
                for p in d.glob(f".{glob_escape(rel.stem)}*{PARTIAL_SUFFIX}") if d.is_dir() else ():
                    p.unlink(missing_ok=True)
                    n += 1
        if n:
            LOG.warning("removed %d temporary file(s) left by an interrupted run", n)
        return n

    def run(self) -> RunStats:
        t_start = time.perf_counter()
        self.cleanup_interrupted()
        if self.db is not None and self.db.pending():
            LOG.info("sending %d database row(s) left by an earlier run", self.db.pending())
            self._flush_db(all_rows=True)
        q = self.queue_size
        jobq, frameq, detq, resq, failq = (queue.Queue(q), queue.Queue(q), queue.Queue(q),
                                           queue.Queue(q * 4), queue.Queue())
        stages = [
            _Stage("decode", self._decode, jobq, frameq, failq, self.n_decoders, self.stop,
                   batch_fn=self._decode_batch if hasattr(self._decoder(), "decode_batch") else None,
                   batch_size=getattr(self._decoder(), "batch", 1)),
            _Stage("detect", self._detect, frameq, detq, failq, 1, self.stop,
                   batch_fn=getattr(self.detector, "detect_batch", None) and self._detect_batch,
                   batch_size=self.batch_size),
            _Stage("write", self._write, detq, resq, failq, self.n_writers, self.stop),
        ]
        walker = threading.Thread(target=self._walk, args=(jobq, failq), name="sladd-walk", daemon=True)
        walker.start()
        for s in stages:
            s.start()
        try:
            self._collect(resq, failq)
        except KeyboardInterrupt:
            self.stop.set()
            LOG.warning("interrupted: finishing the images in flight; rerun to continue")
            self._drain(resq, failq)
            raise
        finally:
            if self.db is not None:
                if not self.stats.fatal:
                    self._flush_db(all_rows=True)
                self.stats.db_pending = self.db.pending()
            self.stats.seconds = time.perf_counter() - t_start
        return self.stats

    def _collect(self, resq: queue.Queue, failq: queue.Queue):
        while True:
            self._flush_failures(failq)
            try:
                item = resq.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                self._flush_failures(failq)
                return
            self._record_result(item)
            self._tick()

    def _flush_failures(self, failq: queue.Queue):
        while True:
            try:
                f = failq.get_nowait()
            except queue.Empty:
                return
            self._record_failure(f)
            self._tick()

    def _drain(self, resq, failq, timeout: float = 30.0):
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            self._flush_failures(failq)
            try:
                item = resq.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                break
            self._record_result(item)
        self._flush_failures(failq)
