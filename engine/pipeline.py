"""The stream: walk -> read+decode -> detect -> mask+encode+write -> ledger.

Each stage runs in its own thread(s); stages are joined by bounded queues, so a slow stage
applies back-pressure and memory stays flat whatever the corpus size. TurboJPEG, ONNX Runtime
and NumPy release the GIL, so decode, inference and writing overlap on a multi-core CPU.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import re
import stat
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from engine.decode import read_bytes
from engine.fsutil import (PathNotReachable, copy_atomic, escape_line, is_no_space, is_partial, text_safe,
                           wait_for_path, write_atomic)
from engine.ledger import DONE, FAILED, Ledger, LedgerError
from engine.types import Failure, ImageError, Job, Result
from engine.walk import Tree

__all__ = ["Pipeline", "RunStats", "ledger_path"]

LOG = logging.getLogger("sladd")
_END = object()

# Reasons that mean a full disk or quota when only the text is left (errors re-raised as text).
_NO_SPACE_TEXT = re.compile(r"\[Errno (28|122)\]|No space left|Disk quota exceeded|database or disk is full", re.I)
# How an image that failed only for want of space is recorded: retried by the next run as is.
NO_SPACE_PREFIX = "no space left"


class _Stopped(Exception):
    """The run is stopping (fatal): the item is dropped, its ledger row stays `running`."""


@dataclass
class _NoSpace(Failure):
    """A Failure whose cause is a full disk or quota, not the image; `where` is the folder."""

    where: Optional[str] = None


@dataclass
class _ReadOnly(Failure):
    """A Failure whose cause is an output file system that turned read-only (ext4 remounts
    read-only on errors): nothing more can be written, so the run stops."""

    where: Optional[str] = None


def _read_only(exc: Optional[BaseException]) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.EROFS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _mount_point(path: Path) -> Path:
    """The mount point holding `path` (its nearest existing ancestor), for messages."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        dev = p.stat().st_dev
        while p != p.parent and p.parent.stat().st_dev == dev:
            p = p.parent
    except OSError:
        pass                                 # a message detail only: keep the deepest folder found
    return p


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
    no_space: int = 0            # of `failed`: outputs not written for want of space (retried by the next run)
    detections: dict = field(default_factory=dict)
    db_written: int = 0
    db_rejected: int = 0
    db_pending: int = 0
    fatal: Optional[str] = None    # why the run stopped early, if it did
    unlisted: list = field(default_factory=list)       # (folder, reason): its images were not seen
    skipped_links: list = field(default_factory=list)  # (path, reason): symbolic links, special files
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
        except _Stopped:
            outs = []                                # fatal: the items stay `running`
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
        except _Stopped:
            return                                   # fatal: the item stays `running`
        except ImageError as exc:
            _put(self.failq, _failure(job, self.name, str(exc), exc), self.stop)
            return
        except MemoryError:
            _put(self.failq, Failure(job, self.name, "out of memory"), self.stop)
            return
        except Exception as exc:  # noqa: BLE001 - one image's failure must not end the run
            LOG.debug("%s failed on %s:\n%s", self.name, escape_line(job.key), traceback.format_exc())
            _put(self.failq, _failure(job, self.name, f"{type(exc).__name__}: {exc}", exc), self.stop)
            return
        _put(self.outq, out, self.stop)


def _failure(job: Job, stage: str, reason: str, exc: BaseException) -> Failure:
    """A Failure; a _NoSpace one when the cause is a full disk or quota (errno, or the text), a
    _ReadOnly one when the output file system is read-only."""
    name = getattr(exc, "filename", None)
    where = os.path.dirname(os.fsdecode(name)) if isinstance(name, (str, bytes)) else None
    if is_no_space(exc) or _NO_SPACE_TEXT.search(reason):
        return _NoSpace(job, stage, reason, where=where)
    if _read_only(exc):
        return _ReadOnly(job, stage, reason, where=where)
    return Failure(job, stage, reason)


def _put(q: queue.Queue, item, stop: Optional[threading.Event]):
    while True:
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            if stop is not None and stop.is_set() and item is not _END:
                return


class Pipeline:
    """Runs one `sladd run`. Components are built by the caller (see engine.run).

    Stops early, with `stats.fatal` set and the images in flight left `running` for the next run,
    when the ledger cannot be written, when `enospc_limit` images in a row found no space, and
    when the input, output or archive root is gone (a share unmounted) for `timeout_seconds`.
    """

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
        self._roots: dict[Path, tuple[str, int]] = {}      # root -> (what, st_dev at the start)
        self._root_lock = threading.Lock()
        self._ledger_ok = True

    # --- per-thread components (TurboJPEG handles, writers) ----------------------------------
    def _decoder(self):
        if not hasattr(self._tls, "decoder"):
            self._tls.decoder = self.make_decoder()
        return self._tls.decoder

    def _writer(self):
        if not hasattr(self._tls, "writer"):
            self._tls.writer = self.make_writer()
        return self._tls.writer

    # --- stopping --------------------------------------------------------------------------------
    def _fatal(self, message: str) -> None:
        """Stop the run: the first reason is kept; stages drain without work from here."""
        if not self.stats.fatal:
            self.stats.fatal = message
            LOG.error("stopping the run: %s", message)
        self.stop.set()

    def _ledger(self, method: str, *args) -> bool:
        """A ledger write; False (and the run stops) when the ledger cannot be written. The rows
        of the images in flight stay `running`, so the next run redoes them."""
        if not self._ledger_ok:
            return False
        try:
            getattr(self.ledger, method)(*args)
            return True
        except LedgerError as exc:
            self._ledger_ok = False
            folder = Path(exc.filename or self.ledger.path).parent
            if exc.errno == errno.ENOSPC:
                self._fatal(f"no space left on {_mount_point(folder)} (the ledger in {escape_line(folder)} cannot "
                            f"be written: {exc.strerror}); free space, then rerun to continue")
            else:
                self._fatal(f"the ledger {escape_line(exc.filename)} cannot be written ({exc.strerror}); "
                            "rerun to continue")
            return False

    # --- roots (network shares come and go, reference §6) -----------------------------------------
    def _note_roots(self) -> None:
        roots = [(self.tree.input, "input folder"), (self.tree.output, "output folder")]
        if self.tree.archive is not None:
            roots.append((self.tree.archive, "archive folder"))
        for root, what in roots:
            try:
                self._roots[root] = (what, os.stat(root).st_dev)
            except OSError:
                pass                         # not there yet (an archive made by the first write)

    def _root_ok(self, root: Path) -> bool:
        """The root is a folder on the device it was on at the start: a share unmounted from
        its mount point leaves an empty folder of the parent device behind."""
        try:
            st = os.stat(root)
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) and st.st_dev == self._roots[root][1]

    def _gone_root(self, outputs_only: bool = False) -> Optional[Path]:
        return next((r for r in self._roots if not (outputs_only and r == self.tree.input) and not self._root_ok(r)),
                    None)

    def _await_root(self, root: Path) -> None:
        """`root` is gone: wait for it once, up to timeout_seconds, for all workers together;
        raise _Stopped (after setting stats.fatal) if it does not come back."""
        what = self._roots[root][0]
        with self._root_lock:
            if self.stop.is_set():
                raise _Stopped
            if self._root_ok(root):
                return
            try:
                wait_for_path(root, self.retry_seconds, self.timeout_seconds, what, self.stop,
                              ok=lambda: self._root_ok(root))
            except PathNotReachable as exc:
                if not self.stop.is_set():          # else the run stops for another reason already
                    self._fatal(f"{exc}; the images in flight are redone by the next run")
                raise _Stopped from None
            LOG.warning("%s %s is back; continuing", what, escape_line(root))

    def _guarded(self, fn: Callable, *args):
        """fn(*args); when it fails and a root is gone, wait for the root and call it again
        (at most 3 times): a failure caused by a vanished share is not the image's."""
        for attempt in range(3):
            try:
                return fn(*args)
            except Exception:
                root = self._gone_root()
                if root is None or attempt == 2:
                    raise
                self._await_root(root)

    # --- stage functions -----------------------------------------------------------------------
    def _read(self, job: Job) -> bytes:
        why = self.tree.refusal(job.path)
        if why is not None:
            raise ImageError(why)
        data = self._guarded(read_bytes, job.path)
        if len(data) != job.size:
            # Another process is writing it: fail now; its new mtime makes the next run redo it.
            raise ImageError(f"file changed while being read ({job.size} bytes when found, {len(data)} read)")
        return data

    def _decode(self, job: Job):
        t0 = time.perf_counter()
        data = self._read(job)
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
                data = self._read(job)
            except ImageError as exc:
                out[k] = _failure(job, "decode", str(exc), exc)
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
        root = self._gone_root(outputs_only=True)     # the frame holds the input's bytes already
        if root is not None:
            self._await_root(root)
        why = self.tree.refusal(frame.job.path)          # the archive copy reads the input again
        if why is not None:
            raise ImageError(why)
        return self._guarded(self._writer(), frame, dets)

    # --- walking ---------------------------------------------------------------------------------
    def _should_skip(self, job: Job) -> Optional[str]:
        if self.force:
            return None
        row = self.ledger.get(job.key)
        if row is None or row["size"] != job.size or row["mtime_ns"] != job.mtime_ns:
            return None                     # new, or the input changed since
        if row["status"] == DONE:
            def present():
                return all(os.path.exists(p) for p in row["outputs"])
            if not present() and (root := self._gone_root(outputs_only=True)) is not None:
                self._await_root(root)      # the outputs are on a share that went away: wait, look again
            return DONE if present() else None      # an output removed since: redo the image
        if row["status"] == FAILED and not self.retry_failed and not (row["error"] or "").startswith(NO_SPACE_PREFIX):
            return FAILED                   # (an image that only found no space is tried again)
        return None

    def _listing_failed(self, folder: Path, exc: OSError) -> bool:
        """Tree.paths' on_error: a listing that failed because a root is gone waits for the root
        (True: list the folder again); any other is recorded by the walk as unlisted."""
        root = self._gone_root()
        if root is None:
            return False
        self._await_root(root)
        return True

    def _walk(self, jobq: queue.Queue, failq: queue.Queue):
        try:
            for path in self.tree.paths(unlisted=self.stats.unlisted, skipped=self.stats.skipped_links,
                                        on_error=self._listing_failed):
                if self.stop.is_set():
                    break
                try:
                    job = self._guarded(self.tree.job, path)
                except OSError as exc:
                    LOG.error("cannot stat %s: %s", escape_line(path), exc.strerror or exc)
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
                if not self._ledger("mark_running", job):
                    break
                _put(jobq, job, self.stop)
        except _Stopped:
            pass                                     # stats.fatal says why
        except Exception as exc:  # noqa: BLE001 - a walk that breaks stops the run, never silently
            LOG.debug("walk failed:\n%s", traceback.format_exc())
            self._fatal(f"walking {escape_line(self.tree.input)} failed: {type(exc).__name__}: "
                        f"{text_safe(str(exc))}; rerun to continue")
        finally:
            if self.stats.unlisted:
                LOG.error("%d folder(s) could not be listed; their images were not processed: %s",
                          len(self.stats.unlisted), "; ".join(f"{f}: {r}" for f, r in self.stats.unlisted))
            _put(jobq, _END, None)

    def _tick(self):
        if self.progress is not None:
            self.progress.update(self.stats)

    # --- results -----------------------------------------------------------------------------------
    def _record_failure(self, f: Failure):
        if isinstance(f, _ReadOnly):
            # Not the image's fault, and nothing can be recorded there: it stays `running`.
            where = Path(f.where or self.tree.output)
            self._fatal(f"{escape_line(_mount_point(where))} is read-only (writing {escape_line(f.job.output)}: "
                        f"{text_safe(f.reason)}); make it writable, then rerun to continue")
            return
        self.stats.failed += 1
        if isinstance(f, _NoSpace) or _NO_SPACE_TEXT.search(f.reason):
            self._record_no_space(f)
            return
        LOG.error("FAILED %s (%s): %s", escape_line(f.job.path), f.stage, text_safe(f.reason))
        # The reference's error tree: a copy of the input and <stem>_error.txt, written before
        # the ledger says failed, so a run killed in between redoes the image.
        report = f"{escape_line(f.job.path)}\nstage: {f.stage}\nerror: {text_safe(f.reason)}\n"
        try:
            if self.tree.refusal(f.job.path) is None and f.job.path.is_file():
                copy_atomic(f.job.path, f.job.error_dir / f.job.path.name)
            write_atomic(f.job.error_dir / f"{f.job.path.stem}_error.txt", report.encode("utf-8"))
        except OSError as exc:
            LOG.error("could not write the error copy for %s: %s", escape_line(f.job.path), text_safe(str(exc)))
        self._ledger("mark_failed", f.job, f.stage, text_safe(f.reason), f.timings)
        if self.notifier is not None:
            self.notifier.processing_error(report.rstrip("\n"))

    def _record_no_space(self, f: Failure) -> None:
        """No space for an image's outputs: not the image's fault, so no error-tree copy (it
        would fill the disk further); recorded so that the next run tries it again as is. After
        `enospc_limit` such images in a row the run stops."""
        where = Path(getattr(f, "where", None) or self.tree.output)
        reason = f"{NO_SPACE_PREFIX} on {_mount_point(where)}: {text_safe(f.reason)}"
        LOG.error("NOT WRITTEN %s (%s): %s; the next run tries it again", escape_line(f.job.path), f.stage, reason)
        self.stats.no_space += 1
        self._enospc += 1
        if self._enospc >= self.enospc_limit:
            self._fatal(f"{NO_SPACE_PREFIX} on {_mount_point(where)} ({self._enospc} images in a row could not be "
                        "written); free space, then rerun to continue")
        self._ledger("mark_failed", f.job, f.stage, reason, f.timings)

    def _record_result(self, r: Result):
        if self.db is not None and r.record is not None:
            # Spooled before the ledger says done: a crash in between redoes the image, and the
            # upsert keeps the row single; the other order could lose the row.
            reason = self.db.add(r.record)
            if reason:
                # Fix 6: the row is rejected, not the image (its JSON and image are written).
                self.stats.db_rejected += 1
                LOG.warning("database row for %s rejected: %s", escape_line(r.job.key), reason)
        if not self._ledger("mark_done", r.job, r.outputs, r.detections, r.timings):
            return                            # stays `running`: redone by the next run
        if r.masked:
            self.stats.anonymised += 1
        else:
            self.stats.unchanged += 1
        for k, v in r.detections.items():
            self.stats.detections[k] = self.stats.detections.get(k, 0) + v
        for k, v in r.timings.items():
            self.stats.stage_seconds[k] = self.stats.stage_seconds.get(k, 0.0) + v
        self._enospc = 0
        if self.delete_input:
            self._delete_input(r.job, r.outputs)
        if self.db is not None and self.db.pending() >= self.db.batch:
            self._flush_db()
        LOG.debug("done %s: %s, %s", escape_line(r.job.key), r.detections or "nothing found",
                  " ".join(f"{k}={v * 1000:.0f}ms" for k, v in r.timings.items()))

    def _delete_input(self, job: Job, outputs: list[str]) -> None:
        """delete_input: remove the input once every expected output exists (they were fsync'ed
        before the ledger marked the image done), then its emptied folders up to the root."""
        missing = [p for p in outputs if not os.path.isfile(p) or os.path.getsize(p) == 0]
        if missing or job.archive is None or not job.archive.is_file():
            LOG.error("not deleting %s: outputs missing: %s", escape_line(job.path),
                      [escape_line(p) for p in missing] or [escape_line(job.archive)])
            return
        try:
            job.path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            LOG.error("could not delete the input %s: %s", escape_line(job.path), exc.strerror or exc)
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
            self._fatal(str(exc))

    def cleanup_interrupted(self) -> int:
        """Remove the temporary files (image, archive copy, JSON, previews, error copy) in the
        folders of images a previous run left half-done. Temporary names are short hashes
        (fsutil.partial_name), so every one of ours in those folders goes; the run lock keeps
        other runs out of this output."""
        dirs = set()
        for key in self.ledger.interrupted():
            rel = Path(key).parent
            dirs.update((self.tree.output / rel, self.tree.input / rel, self.tree.errors / rel))
            if self.tree.archive is not None:
                dirs.add(self.tree.archive / rel)
        n = 0
        for d in sorted(dirs):
            try:
                with os.scandir(d) as it:
                    leftovers = [e.path for e in it if is_partial(e.name) and e.is_file(follow_symlinks=False)]
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                LOG.warning("cannot look for temporary files in %s: %s", escape_line(d), exc.strerror or exc)
                continue
            for p in leftovers:
                try:
                    os.unlink(p)
                    n += 1
                except FileNotFoundError:
                    pass
        if n:
            LOG.warning("removed %d temporary file(s) left by an interrupted run", n)
        return n

    def run(self) -> RunStats:
        t_start = time.perf_counter()
        self._note_roots()
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
            if self._drain(resq, failq):
                # Every stage has ended: the images queued but never started are not "running",
                # they are simply not done; their rows go (a rerun finds them as new).
                self.cleanup_interrupted()
                self.ledger.forget_running()
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

    def _drain(self, resq, failq, timeout: float = 30.0) -> bool:
        """Record what the stages still finish after a stop; True when every stage has ended."""
        end = time.perf_counter() + timeout
        ended = False
        while time.perf_counter() < end:
            self._flush_failures(failq)
            try:
                item = resq.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                ended = True
                break
            self._record_result(item)
        self._flush_failures(failq)
        return ended
