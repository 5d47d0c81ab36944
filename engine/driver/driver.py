"""The driver: walks the tree, decides what to skip or redo, feeds the worker's stages, and
keeps the books — ledger, database spool, error tree, input deletion, progress, statistics.

The per-image work is the worker's (engine.worker); the driver only consumes its result
records. It stops early, with `stats.fatal` set and the images in flight left `running` for the
next run, when the ledger cannot be written, when `enospc_limit` images in a row found no space,
and when the input, output or archive root is gone (a share unmounted) for `timeout_seconds`.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
import traceback
from pathlib import Path
from typing import Optional

from engine.driver.roots import Roots
from engine.driver.stats import RunStats
from engine.driver.stream import END, put
from engine.failures import NO_SPACE_PREFIX, NO_SPACE_TEXT, NoSpace, ReadOnly, Stopped, mount_point
from engine.fsutil import copy_atomic, escape_line, is_partial, text_safe, write_atomic
from engine.ledger import DONE, FAILED, Ledger, LedgerError
from engine.types import Failure, Job, Result
from engine.walk import Tree

__all__ = ["Driver", "ResumePolicy", "ledger_path"]

LOG = logging.getLogger("sladd")
WALK_BATCH = 16                     # images marked running per ledger commit


def ledger_path(output: Path) -> Path:
    return Path(output) / ".sladd" / "ledger.sqlite"


class ResumePolicy:
    """What a rerun does with images the ledger knows: `force` redoes those done, `retry_failed`
    those that failed (an image that only found no space is always tried again)."""

    def __init__(self, force: bool = False, retry_failed: bool = False):
        self.force, self.retry_failed = force, retry_failed


class Driver:
    """Runs one `sladd run`: the walk feeds `executor` (engine.driver.stream.LocalExecutor, the
    threads of this process, or engine.driver.ray_executor.RayExecutor), whose result records
    come back through `record`. A local executor's worker gets the driver's I/O guard (roots on
    shares that come and go) and refusal rule. `db` is a database sink (engine.db.sink) or None."""

    def __init__(self, *, tree: Tree, ledger: Ledger, executor, resume: ResumePolicy = ResumePolicy(),
                 queue_size: int = 8, progress=None, db=None, delete_input: bool = False,
                 retry_seconds: float = 10.0, timeout_seconds: float = 60.0, enospc_limit: int = 3, notifier=None):
        self.tree, self.ledger, self.executor = tree, ledger, executor
        self.force, self.retry_failed = resume.force, resume.retry_failed
        self.queue_size = queue_size
        self.progress, self.db, self.notifier = progress, db, notifier
        self.delete_input = delete_input
        self.enospc_limit, self._enospc = enospc_limit, 0
        self.stop = threading.Event()
        self.stats = RunStats()
        self.roots = Roots(tree, self.stop, self._fatal, retry_seconds, timeout_seconds)
        worker = getattr(executor, "worker", None)
        if worker is not None:
            worker.io, worker.refusal = self.roots, tree.refusal
        self._ledger_ok = True

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
        t0 = time.perf_counter()
        try:
            getattr(self.ledger, method)(*args)
            return True
        except LedgerError as exc:
            self._ledger_ok = False
            folder = Path(exc.filename or self.ledger.path).parent
            if exc.errno == errno.ENOSPC:
                self._fatal(f"no space left on {mount_point(folder)} (the ledger in {escape_line(folder)} cannot "
                            f"be written: {exc.strerror}); free space, then rerun to continue")
            else:
                self._fatal(f"the ledger {escape_line(exc.filename)} cannot be written ({exc.strerror}); "
                            "rerun to continue")
            return False
        finally:
            self.stats.stage_seconds["ledger"] = self.stats.stage_seconds.get("ledger", 0.0) + time.perf_counter() - t0

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
            if not present() and (root := self.roots.gone(outputs_only=True)) is not None:
                self.roots.wait(root)      # the outputs are on a share that went away: wait, look again
            return DONE if present() else None      # an output removed since: redo the image
        if row["status"] == FAILED and not self.retry_failed and not (row["error"] or "").startswith(NO_SPACE_PREFIX):
            return FAILED                   # (an image that only found no space is tried again)
        return None

    def _listing_failed(self, folder: Path, exc: OSError) -> bool:
        """Tree.paths' on_error: a listing that failed because a root is gone waits for the root
        (True: list the folder again); any other is recorded by the walk as unlisted."""
        root = self.roots.gone()
        if root is None:
            return False
        self.roots.wait(root)
        return True

    def _start(self, jobs: list, jobq: queue.Queue) -> bool:
        """Mark `jobs` running in one committed transaction, then queue them: a row is durable
        before its image's first temporary file can exist, so a crash's leftovers are found."""
        if not jobs or self.stop.is_set():
            return not self.stop.is_set()
        if not self._ledger("mark_running_many", jobs):
            return False
        for job in jobs:
            put(jobq, job, self.stop)
        jobs.clear()
        return True

    def _walk(self, jobq: queue.Queue):
        batch: list = []
        try:
            for path in self.tree.paths(unlisted=self.stats.unlisted, skipped=self.stats.skipped_links,
                                        on_error=self._listing_failed):
                if self.stop.is_set():
                    break
                try:
                    job = self.roots.call(self.tree.job, path)
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
                batch.append(job)
                if len(batch) >= WALK_BATCH and not self._start(batch, jobq):
                    break
            else:
                self._start(batch, jobq)
        except Stopped:
            pass                                     # stats.fatal says why
        except Exception as exc:  # noqa: BLE001 - a walk that breaks stops the run, never silently
            LOG.debug("walk failed:\n%s", traceback.format_exc())
            self._fatal(f"walking {escape_line(self.tree.input)} failed: {type(exc).__name__}: "
                        f"{text_safe(str(exc))}; rerun to continue")
        finally:
            if self.stats.unlisted:
                LOG.error("%d folder(s) could not be listed; their images were not processed: %s",
                          len(self.stats.unlisted), "; ".join(f"{f}: {r}" for f, r in self.stats.unlisted))
            put(jobq, END, None)

    def _tick(self):
        if self.progress is not None:
            self.progress.update(self.stats)

    # --- results -----------------------------------------------------------------------------------
    def _record_failure(self, f: Failure):
        if isinstance(f, ReadOnly):
            # Not the image's fault, and nothing can be recorded there: it stays `running`.
            where = Path(f.where or self.tree.output)
            self._fatal(f"{escape_line(mount_point(where))} is read-only (writing {escape_line(f.job.output)}: "
                        f"{text_safe(f.reason)}); make it writable, then rerun to continue")
            return
        self.stats.failed += 1
        if isinstance(f, NoSpace) or NO_SPACE_TEXT.search(f.reason):
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
        reason = f"{NO_SPACE_PREFIX} on {mount_point(where)}: {text_safe(f.reason)}"
        LOG.error("NOT WRITTEN %s (%s): %s; the next run tries it again", escape_line(f.job.path), f.stage, reason)
        self.stats.no_space += 1
        self._enospc += 1
        if self._enospc >= self.enospc_limit:
            self._fatal(f"{NO_SPACE_PREFIX} on {mount_point(where)} ({self._enospc} images in a row could not be "
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
        if not self._ledger("flush"):               # the row saying "done" is durable first
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
        self.roots.note()
        self.cleanup_interrupted()
        if self.db is not None and self.db.pending():
            LOG.info("sending %d database row(s) left by an earlier run", self.db.pending())
            self._flush_db(all_rows=True)
        jobq: queue.Queue = queue.Queue(self.queue_size)
        walker = threading.Thread(target=self._walk, args=(jobq,), name="sladd-walk", daemon=True)
        walker.start()
        try:
            self.executor.execute(jobq, END, self.record, self.stop)
        except KeyboardInterrupt:
            self.stop.set()
            LOG.warning("interrupted: finishing the images in flight; rerun to continue")
            if self.executor.drain(self.record, timeout=30.0):
                # Every stage has ended: the images queued but never started are not "running",
                # they are simply not done; their rows go (a rerun finds them as new).
                self.cleanup_interrupted()
                self.ledger.forget_running()
            raise
        finally:
            # The last group of ledger rows: a failure here (a full disk) stops the run as any
            # ledger write does, rather than a done run whose last rows were never kept.
            self._ledger("flush")
            if self.db is not None:
                if not self.stats.fatal:
                    self._flush_db(all_rows=True)
                self.stats.db_pending = self.db.pending()
            self.stats.seconds = time.perf_counter() - t_start
        return self.stats

    def record(self, item) -> None:
        """One result record (Result or Failure) from wherever the image was processed."""
        if isinstance(item, Failure):
            self._record_failure(item)
        else:
            self._record_result(item)
        self._tick()
