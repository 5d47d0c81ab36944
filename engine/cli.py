"""Command line: `sladd run`, `sladd demo`, `sladd models`.

Exit codes of `sladd run` / `sladd demo`:
  0  every image found is done (anonymised, or nothing to mask)
  1  the run finished, but some images failed (now or in an earlier run; see the ledger)
  2  bad usage or configuration (nothing was processed)
  3  the run was aborted (interrupted, or a fatal error such as a missing model)
"""
from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path

from engine import ov_prefetch

if sys.argv[1:2] == ["run"]:
    # No collector passes over the ~10^5 objects the start makes (10-20 ms of it): build_worker
    # freezes them and turns it back on (engine.worker.build).
    gc.disable()
    # Before the imports below (~0.15 s on one core): the other core loads OpenVINO's compiled
    # large pass of the last run meanwhile (engine.ov_prefetch).
    ov_prefetch.start()

import yaml  # noqa: E402 - after the prefetch starts

from engine import __version__  # noqa: E402
from engine.cli_commands import _cmd_correct, _cmd_db, _cmd_meta, _cmd_models
from engine.cli_parsers import add_serve_parser, review_arguments
from engine.config.load import PROFILES

__all__ = ["main", "build_parser"]

LOG = logging.getLogger("sladd")


def _dump_yaml(data) -> str:
    """YAML of the configuration for the log: libyaml's emitter where PyYAML has it (the same
    text, ~2 ms less of every start than the pure-Python one)."""
    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False, allow_unicode=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sladd", description="Anonymise street-level imagery (faces, people, vehicles).")
    p.add_argument("--version", action="version", version=f"sladd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="anonymise a folder tree of JPEGs")
    r.add_argument("-i", "--input", required=True, type=Path, help="input folder (walked recursively)")
    r.add_argument("-o", "--output", required=True, type=Path, help="output folder (mirrors the input tree)")
    r.add_argument("-a", "--archive", type=Path, default=None, help="archive folder: a mirrored copy of each original")
    r.add_argument("-k", "--config", type=Path, default=None, help="YAML file overriding the keys it names")
    r.add_argument("-l", "--log-dir", type=Path, default=None, help="folder for the log file")
    _common_run_args(r)

    d = sub.add_parser("demo", help="build a small sample tree from bundled photographs and anonymise it")
    d.add_argument("--dir", type=Path, default=Path("demo"), help="where to build the demo (default ./demo)")
    _common_run_args(d)

    j = sub.add_parser("json", help="write the metadata JSON of every image (no model; create_json)")
    _tree_args(j, output_required=False)
    pv = sub.add_parser("preview", help="write previews of every (unmasked) image (create_preview)")
    _tree_args(pv, output_required=False)
    c = sub.add_parser("check", help="report per image whether every expected output exists (check_folders)")
    _tree_args(c, output_required=True)
    c.add_argument("--missing-only", action="store_true", help="list only images with a missing output")

    db = sub.add_parser("db", help="database tables and rows (the reference's db scripts)")
    dsub = db.add_subparsers(dest="db_command", required=True)
    for name, hlp in (("create-table", "create the table of table_name / database.table_definition"),
                      ("insert-geom-metadata", "register geometry columns in USER_SDO_GEOM_METADATA (Oracle)"),
                      ("execute-sql", "run one SQL statement (string or --file)"),
                      ("load-json", "load a folder of metadata JSON files as rows (json_to_db)"),
                      ("flush", "send the rows a run left pending in OUTPUT/.sladd/db_spool.sqlite"),
                      ("create-config", "write a db config with the password Fernet-encrypted (key ORACLE_KEY)")):
        d = dsub.add_parser(name, help=hlp)
        d.add_argument("-k", "--config", type=Path, default=None, help="YAML file overriding the keys it names")
        d.add_argument("--profile", choices=PROFILES, default=None)
        d.add_argument("-o", "--output", type=Path, default=None,
                       help="output folder of a run (where the embedded SQLite database and the spool live)")
        if name == "create-table":
            d.add_argument("--drop", action="store_true", help="drop the table first")
        if name == "execute-sql":
            d.add_argument("sql", nargs="?", default=None)
            d.add_argument("--file", type=Path, default=None)
        if name == "flush":
            d.add_argument("--retry-refused", action="store_true", help="send rows the database refused again")
        if name == "load-json":
            d.add_argument("folder", type=Path)
            d.add_argument("-a", "--archive", type=Path, default=None, help="move loaded JSON files here (mirrored)")
        if name == "create-config":
            for arg in ("--user", "--password", "--dsn", "--table-name"):
                d.add_argument(arg, required=True)
            d.add_argument("--schema", default=None)
            d.add_argument("--out", type=Path, default=Path("db_config.py"))

    co = sub.add_parser("correct", help="re-render images from their originals with added/removed regions")
    co.add_argument("-o", "--output", required=True, type=Path, help="output folder of a run")
    src = co.add_mutually_exclusive_group(required=True)
    src.add_argument("-a", "--archive", type=Path, default=None, help="the run's archive folder (the originals)")
    src.add_argument("-i", "--input", type=Path, default=None, help="the run's input folder (the originals)")
    co.add_argument("-k", "--config", type=Path, default=None, help="the run's YAML configuration")
    co.add_argument("--profile", choices=PROFILES, default=None, help="the run's profile")
    co.add_argument("--file", required=True, type=Path, help='{"images": [{"image", "add", "remove"}]}')

    review_arguments(sub.add_parser("review", help="local web page to go through a run: add and remove masked regions"))

    cf = sub.add_parser("config", help="print the effective configuration (defaults, profile, -k file) as YAML")
    cf.add_argument("-k", "--config", type=Path, default=None, help="YAML file overriding the keys it names")
    cf.add_argument("--profile", choices=PROFILES, default=None, help="shipped profile under -k")

    be = sub.add_parser("build-engine", help="compile an ONNX model to a TensorRT plan (needs TensorRT and a GPU)",
                        add_help=False)
    be.add_argument("args", nargs=argparse.REMAINDER)

    add_serve_parser(sub)                  # `sladd serve` (engine/service)
    m = sub.add_parser("models", help="install or list models")
    msub = m.add_subparsers(dest="models_command", required=True)
    f = msub.add_parser("fetch", help="install a shipped card's model file into the models cache")
    f.add_argument("name")
    msub.add_parser("list", help="list shipped model cards and whether their files are installed")
    return p


def _tree_args(p: argparse.ArgumentParser, output_required: bool) -> None:
    p.add_argument("-i", "--input", required=True, type=Path, help="input folder (walked recursively)")
    p.add_argument("-o", "--output", required=output_required, type=Path, default=None, help="output folder")
    p.add_argument("-a", "--archive", type=Path, default=None, help="archive folder")
    p.add_argument("-k", "--config", type=Path, default=None, help="YAML file overriding the keys it names")
    p.add_argument("--profile", choices=PROFILES, default=None, help="shipped profile under -k")
    p.add_argument("--device", default=None, help=argparse.SUPPRESS)
    p.add_argument("--old-metadata", action="store_true", help="pre-2022 metadata variant (metadata.format: old)")


def _common_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="shipped profile under the -k file (default: 360 if it sets image_type 360)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="overrides engine.device")
    p.add_argument("--force", action="store_true", help="redo images the ledger marks done")
    p.add_argument("--retry-failed", action="store_true", help="retry images that failed in an earlier run")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar; warnings and the summary only")
    p.add_argument("--old-metadata", action="store_true", help="pre-2022 metadata variant (metadata.format: old)")
    p.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="overrides engine.executor: local threads, or Ray actors (one per GPU)")
    p.add_argument("--workers", type=int, default=None, help="Ray actors (engine.workers; default: one per GPU, or 1)")
    p.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (engine.ray_address; default RAY_ADDRESS, else an embedded local one)")
    p.add_argument("--wait-lock", action="store_true",
                   help="if another run uses the same output folder, wait for it to end instead of refusing")


def _on_stop_signals():
    """SIGTERM (docker stop, systemd, Kubernetes) and SIGHUP stop a run as Ctrl-C does: the images
    in flight are finished or left for the next run, the summary is printed, exit 3. Only the
    first signal interrupts; later ones are logged, so the clean stop itself is not cut short.
    Returns a function that restores the previous handlers."""
    import signal

    from engine.run import INTERRUPTED

    INTERRUPTED.reason = None

    def handler(signum, _frame):
        name = signal.Signals(signum).name
        if INTERRUPTED.reason is not None:
            LOG.warning("%s received while stopping; still finishing the images in flight", name)
            return
        INTERRUPTED.reason = name
        LOG.warning("%s received: stopping; images in flight are finished or redone by the next run", name)
        raise KeyboardInterrupt(name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}

    def restore():
        for s, h in previous.items():
            signal.signal(s, h)
    return restore


def _load(args):
    from engine.config import load_config

    engine = {k: v for k, v in (("device", getattr(args, "device", None)), ("executor", getattr(args, "executor", None)),
                                ("workers", getattr(args, "workers", None)),
                                ("ray_address", getattr(args, "ray_address", None))) if v is not None}
    overrides = {"engine": engine} if engine else {}
    if getattr(args, "old_metadata", False):
        overrides["metadata"] = {"format": "old"}
    return load_config(getattr(args, "config", None), profile=args.profile, overrides=overrides or None)


def _cmd_run(args, input_dir: Path, output_dir: Path, archive_dir, log_dir, cfg_path) -> int:
    from engine.logs import FILE_ONLY, setup_logging
    from engine.driver import ledger_path, summary_lines
    from engine.progress import Progress
    from engine.lock import LockHeld
    from engine.run import EXIT_ABORTED, EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, is_tty, run

    cfg = args._cfg
    tty = is_tty() and not args.quiet
    console = "WARNING" if args.quiet else ("INFO" if cfg.log_level == "DEBUG" and tty else cfg.log_level)
    log_file = setup_logging(cfg.log_level, cfg.datetime_format, log_dir, cfg.log_file_name,
                             console_level=console, tty=tty)
    LOG.info("call: %s", " ".join(sys.argv), extra=FILE_ONLY)
    LOG.info("%s CONFIG START %s\n%s\n%s CONFIG END %s", "#" * 40, "#" * 40,
             _dump_yaml(cfg.redacted_dump()).rstrip(),
             "#" * 40, "#" * 40, extra=FILE_ONLY)
    if log_file:
        LOG.info("log file: %s", log_file)
    from engine.notify import Notifier

    notifier = Notifier(cfg, log_file)
    progress = Progress(tty=tty, enabled=not args.quiet)
    restore_signals = _on_stop_signals()
    try:
        stats = run(cfg, input_dir, output_dir, archive_dir, force=args.force, retry_failed=args.retry_failed,
                    progress=progress, config_file=cfg_path, notifier=notifier, wait_lock=args.wait_lock)
    except KeyboardInterrupt:
        progress.close()
        LOG.error("interrupted before the run started; nothing was processed")
        return EXIT_ABORTED
    except (UsageError, LockHeld) as exc:
        progress.close()
        LOG.error("%s", exc)
        return EXIT_USAGE
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as exc:
        progress.close()
        LOG.error("%s", exc)
        notifier.crashed(exc, f"{type(exc).__name__}: {exc}")
        return EXIT_ABORTED
    except OSError as exc:
        # A read-only or full output folder, a vanished share at start-up: say which, no traceback.
        progress.close()
        where = f" ({exc.filename})" if exc.filename else ""
        LOG.error("cannot continue: %s%s", exc.strerror or exc, where)
        notifier.crashed(exc, f"{type(exc).__name__}: {exc}")
        return EXIT_ABORTED
    except Exception as exc:  # noqa: BLE001 - an uncaught error: mail it (if asked), then raise
        import traceback
        progress.close()
        LOG.critical("uncaught %s", type(exc).__name__, exc_info=True)
        notifier.crashed(exc, traceback.format_exc())
        raise
    finally:
        restore_signals()
    progress.close()
    LOG.info("-" * 150, extra=FILE_ONLY)
    lines = summary_lines(stats, input_dir, output_dir, archive_dir, ledger_path(output_dir))
    for line in lines:
        # The summary always reaches the console, whatever the log level, and the log file.
        LOG.info(line, extra=FILE_ONLY)
        print(line, file=sys.stderr)
    notifier.finished("\n".join(lines))
    if stats.fatal:
        return EXIT_ABORTED
    # Folders that could not be listed: their images were never seen, so the run is incomplete.
    return EXIT_FAILED if (stats.failed or stats.skipped_failed or stats.unlisted) else EXIT_OK


def main(argv=None) -> int:
    from engine.config import ConfigError

    args = build_parser().parse_args(argv)
    if args.command == "models":
        return _cmd_models(args)
    if args.command == "build-engine":
        from engine.build_cli import main as build_main
        return build_main(args.args)
    if args.command == "serve":
        from engine.service.server import cli_main
        return cli_main(args)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s]: %(message)s")
    try:
        cfg, cfg_path = _load(args)
    except ConfigError as exc:
        print(f"sladd: {exc}", file=sys.stderr)
        return 2
    args._cfg = cfg
    if args.command == "run":
        if args.archive is not None and args.archive.resolve() == args.output.resolve():
            print("sladd: -a/--archive must differ from -o/--output", file=sys.stderr)
            return 2
        return _cmd_run(args, args.input, args.output, args.archive, args.log_dir, cfg_path)
    if args.command == "correct":
        return _cmd_correct(args, cfg)
    if args.command == "review":
        from engine.review import cli_main as review_main
        return review_main(args, cfg)
    if args.command == "config":
        # Every key with its value, passwords redacted: the list of keys and defaults.
        print(_dump_yaml(cfg.redacted_dump()).rstrip())
        return 0
    if args.command in ("json", "preview", "check"):
        return _cmd_meta(args, cfg, cfg_path)
    if args.command == "db":
        return _cmd_db(args, cfg)
    if args.command == "demo":
        from engine.demo import build_demo_tree

        root = args.dir
        inp = build_demo_tree(root / "input")
        print(f"demo input tree: {inp}", file=sys.stderr)
        code = _cmd_run(args, inp, root / "output", None, root / "logs", cfg_path)
        print(f"demo output: {(root / 'output').resolve()}  (compare with {inp.resolve()})", file=sys.stderr)
        return code
    return 2


def entry() -> None:
    """The `sladd` program (console script, `python -m engine.cli`). After `run` and `demo`, whose
    outputs, ledger and logs are closed and on disk when they return, the process leaves without
    the interpreter's teardown where no other thread is left (freeing every module and the
    runtimes' sessions: ~20 ms of a 1 s run); at-exit handlers and log handlers run first."""
    code = main()
    if sys.argv[1:2] in (["run"], ["demo"]):
        import atexit
        import os
        import threading

        if threading.active_count() == 1:
            atexit._run_exitfuncs()
            logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):          # a closed pipe: nothing more can be said
                    pass
            os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
