"""`sladd run`: build the stages from the configuration and run the stream."""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Optional

from engine.config import Config
from engine.driver import Driver, ResumePolicy, RunStats, ledger_path
from engine.driver.stream import LocalExecutor
from engine.ledger import Ledger
from engine.lock import RunLock
from engine.progress import Progress
from engine.walk import Tree
from engine.worker.build import build_worker

__all__ = ["run", "check_roots", "UsageError", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_ABORTED"]

LOG = logging.getLogger("sladd")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3


class _Interrupted:
    """Which signal stopped the run (set by the CLI's handler), for the summary."""
    reason: Optional[str] = None


INTERRUPTED = _Interrupted()



class UsageError(ValueError):
    """The command line or configuration cannot work; nothing was touched (exit 2)."""


def _same_or_inside(inner: Path, outer: Path) -> bool:
    """True when `inner` is `outer` or lies below it: by resolved path, and by device and inode
    for each of inner's ancestors (bind mounts and aliases that resolve() cannot see)."""
    inner, outer = inner.resolve(), outer.resolve()
    if inner == outer or outer in inner.parents:
        return True
    try:
        o = os.stat(outer)
    except OSError:
        return False                     # does not exist (yet): cannot contain an existing folder
    for d in (inner, *inner.parents):
        try:
            s = os.stat(d)
        except OSError:
            continue
        if (s.st_dev, s.st_ino) == (o.st_dev, o.st_ino):
            return True
    return False


def check_roots(input_dir: Path, output_dir: Path, archive_dir: Optional[Path]) -> None:
    """Refuse, before anything is written, trees whose outputs would land on the inputs.

    Output i goes to OUTPUT/<rel>, so with OUTPUT == INPUT every original is overwritten, and with
    INPUT inside OUTPUT an input folder can be a mirror target (INPUT = OUT/x and a file x/a.jpg
    in the input maps onto OUT/x/a.jpg = INPUT/a.jpg). The archive and the error tree
    (OUTPUT_error) follow the same rule. An output inside the input is fine: the walk skips it.
    """
    from engine.walk import error_root

    targets = [("-o/--output", output_dir), ("the error tree", error_root(Path(output_dir).resolve()))]
    if archive_dir is not None:
        targets.append(("-a/--archive", archive_dir))
    for what, root in targets:
        if _same_or_inside(Path(input_dir), Path(root)):
            raise UsageError(f"{what} {root} is the input folder {input_dir} or contains it: outputs would "
                             "overwrite the originals; choose a folder outside the input tree")
    if archive_dir is not None and Path(archive_dir).resolve() == Path(output_dir).resolve():
        raise UsageError("-a/--archive must differ from -o/--output")


def check_run_config(cfg: Config, archive_dir: Optional[Path]) -> None:
    """The reference's check_config rules that depend on the command line."""
    if archive_dir is None:
        for key in ("archive_json", "archive_preview"):
            if getattr(cfg, key):
                raise ValueError(f"{key}: true needs an archive folder (-a ARCHIVE); set it to false or pass -a")
    if (cfg.remote_preview or cfg.local_preview or cfg.archive_preview or cfg.separate_preview_directory) \
            and cfg.preview_dim is None:
        raise ValueError("previews are enabled but preview_dim is null; set preview_dim: [width, height]")


def run(cfg: Config, input_dir: Path, output_dir: Path, archive_dir: Optional[Path] = None, *,
        force: bool = False, retry_failed: bool = False, progress: Optional[Progress] = None,
        config_file: Optional[Path] = None, notifier=None, wait_lock: bool = False) -> RunStats:
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    try:
        check_run_config(cfg, archive_dir)
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if cfg.delete_input and archive_dir is None:
        raise UsageError("delete_input: true needs an archive folder (-a ARCHIVE), as in the reference: the "
                         "original is kept there before the input is removed")
    if not input_dir.exists():
        from engine.fsutil import PathNotReachable, wait_for_path
        try:
            wait_for_path(input_dir, cfg.file_access_retry_seconds, cfg.file_access_timeout_seconds, "input folder")
        except PathNotReachable as exc:
            raise FileNotFoundError(str(exc)) from None
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} is not a folder")
    check_roots(input_dir, output_dir, archive_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Taken before the models load, so a second run on the same output is refused at once.
    lock = RunLock(output_dir, wait=wait_lock).acquire()
    try:
        return _run_locked(cfg, input_dir, output_dir, archive_dir, force=force, retry_failed=retry_failed,
                           progress=progress, config_file=config_file, notifier=notifier)
    finally:
        lock.release()


def _run_locked(cfg: Config, input_dir: Path, output_dir: Path, archive_dir: Optional[Path], *, force: bool,
                retry_failed: bool, progress, config_file, notifier) -> RunStats:
    tree = Tree(input_dir, output_dir, archive_dir, cfg.output.extensions, follow_symlinks=cfg.input_follow_symlinks)
    with contextlib.ExitStack() as stack:
        ledger = Ledger(ledger_path(output_dir))          # first: a read-only output fails fast
        stack.callback(ledger.close)
        db = None
        if cfg.write_exif_to_db:
            from engine.db.connect import sink_from_config

            db = sink_from_config(cfg, output_dir, ledger_path(output_dir).parent / "db_spool.sqlite")
            stack.callback(db.close)
            if not cfg.data_eier and any(c.formatter == "Dataeier" and c.not_null for c in db.table.columns):
                LOG.warning("data_eier is null but column Dataeier is NOT NULL: every database row will be "
                            "rejected (the images and JSON are still written); set data_eier")
        if cfg.engine.executor == "ray":
            from engine.driver.ray_executor import RayExecutor

            executor = RayExecutor(cfg, tree, config_file=config_file, db=db is not None)
        else:
            worker, cfg = build_worker(cfg, tree, config_file=config_file, db=db is not None)
            executor = LocalExecutor(worker, queue_size=cfg.engine.queue_size, decoders=cfg.engine.decoders,
                                     writers=cfg.engine.writers, publishers=cfg.engine.publishers,
                                     batch_size=cfg.engine.batch_size, detectors=cfg.engine.detectors or 1)
        stack.callback(executor.close)
        gc.enable()            # `sladd run` starts with it off (engine.cli); the Ray driver has no build_worker
        pipe = Driver(tree=tree, ledger=ledger, executor=executor, resume=ResumePolicy(force, retry_failed),
                      queue_size=cfg.engine.queue_size, progress=progress, db=db, delete_input=cfg.delete_input,
                      retry_seconds=cfg.file_access_retry_seconds, timeout_seconds=cfg.file_access_timeout_seconds,
                      notifier=notifier)
        if progress is not None:
            threading.Thread(target=lambda: progress.set_total(tree.count()), daemon=True,
                             name="sladd-count").start()
        try:
            return pipe.run()
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM (docker stop, systemd, Kubernetes): the images in flight were
            # finished or left to the next run; report what was done.
            pipe.stats.fatal = pipe.stats.fatal or f"interrupted ({INTERRUPTED.reason or 'SIGINT'}); rerun to continue"
            return pipe.stats


def is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
