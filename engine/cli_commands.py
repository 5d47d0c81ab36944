"""The command handlers of `sladd` other than `run` (engine.cli): check/json/preview, db,
models, correct. Each returns the exit code."""
from __future__ import annotations

import logging
import sys

__all__ = ["_cmd_correct", "_cmd_meta", "_cmd_db", "_cmd_models"]

LOG = logging.getLogger("sladd")


def _cmd_correct(args, cfg) -> int:
    import json as _json

    from engine.correct import CorrectionError, apply_corrections
    from engine.lock import LockHeld

    logging.getLogger("sladd").setLevel(logging.INFO)
    try:
        doc = _json.loads(args.file.read_text(encoding="utf-8"))
        done = apply_corrections(cfg, args.output, archive=args.archive, input=args.input, corrections=doc)
    except (OSError, ValueError, CorrectionError, LockHeld) as exc:
        print(f"sladd correct: {exc}", file=sys.stderr)
        return 2
    print(f"{len(done)} image(s) re-rendered", file=sys.stderr)
    return 0


def _cmd_meta(args, cfg, cfg_path) -> int:
    from engine.meta.commands import OUTPUT_KINDS, check_tree, make_json, make_previews

    logging.getLogger("sladd").setLevel(logging.INFO)
    if not args.input.is_dir():
        print(f"sladd {args.command}: input folder {args.input} does not exist", file=sys.stderr)
        return 2
    try:
        if args.command == "json":
            st = make_json(cfg, cfg_path, args.input, args.output, args.archive)
            print(f"{st.images} images, {st.written} JSON files written, {st.failed} failed", file=sys.stderr)
            return 1 if st.failed else 0
        if args.command == "preview":
            st = make_previews(cfg, args.input, args.output, args.archive)
            print(f"{st.images} images, {st.written} previews written, {st.failed} failed", file=sys.stderr)
            return 1 if st.failed else 0
    except ValueError as exc:
        print(f"sladd {args.command}: {exc}", file=sys.stderr)
        return 2
    from engine.fsutil import escape_line

    totals = {k: {"OK": 0, "Missing": 0, "None": 0} for k in OUTPUT_KINDS}
    incomplete = 0
    unlisted, skipped = [], []
    # One line per image: keys are escaped (\\ \\n \\t \\xNN for control characters and bytes that
    # are not UTF-8), so a name with a newline or from another system cannot split or break a line.
    print("key\t" + "\t".join(OUTPUT_KINDS))
    for key, row in check_tree(cfg, args.input, args.output, args.archive, unlisted=unlisted, skipped=skipped):
        for k, v in row.items():
            totals[k][v] += 1
        missing = "Missing" in row.values()
        incomplete += missing
        if missing or not args.missing_only:
            print(escape_line(key) + "\t" + "\t".join(row[k] for k in OUTPUT_KINDS))
    print("totals\t" + "\t".join(f"OK {t['OK']} / Missing {t['Missing']} / None {t['None']}"
                                  for t in totals.values()))
    print(f"{incomplete} image(s) with a missing output", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} symbolic link(s) or special file(s) skipped (see above)", file=sys.stderr)
    if unlisted:
        # Their images are unknown: the check is incomplete, whatever the rows say.
        print(f"{len(unlisted)} folder(s) could not be listed; the check is incomplete", file=sys.stderr)
    return 1 if (incomplete or unlisted) else 0


def _cmd_db(args, cfg) -> int:
    from engine.db import commands as dbc

    logging.getLogger("sladd").setLevel(logging.INFO)
    c = args.db_command
    try:
        if c == "create-config":
            dbc.create_config(args.out, user=args.user, password=args.password, dsn=args.dsn, schema=args.schema,
                              table_name=args.table_name)
            print(f"wrote {args.out}", file=sys.stderr)
        elif c == "create-table":
            print(";\n".join(dbc.create_table(cfg, args.output, drop=args.drop)))
        elif c == "insert-geom-metadata":
            print(";\n".join(dbc.insert_geom_metadata(cfg, args.output)))
        elif c == "execute-sql":
            if (args.sql is None) == (args.file is None):
                print("sladd db execute-sql: give either SQL or --file", file=sys.stderr)
                return 2
            sql = args.sql if args.sql is not None else args.file.read_text(encoding="utf-8")
            for row in dbc.execute_sql(cfg, args.output, sql):
                print("\t".join("" if v is None else str(v) for v in row))
        elif c == "load-json":
            added, rejected = dbc.load_json(cfg, args.output, args.folder, args.archive)
            print(f"{added} rows written, {rejected} rejected", file=sys.stderr)
            return 1 if rejected else 0
        elif c == "flush":
            sent, pending, refused = dbc.flush(cfg, args.output, retry_refused=args.retry_refused)
            print(f"{sent} rows sent, {pending} still pending, {refused} refused by the database "
                  "(kept in the spool; --retry-refused)", file=sys.stderr)
            return 1 if (pending or refused) else 0
    except (ValueError, ImportError, OSError) as exc:
        print(f"sladd db {c}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - database errors: report, do not trace back
        print(f"sladd db {c}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_models(args) -> int:
    from engine.models.fetch import fetch, main_list

    logging.basicConfig(level=logging.INFO, format="[%(levelname)s]: %(message)s")
    if args.models_command == "list":
        print(main_list())
        return 0
    try:
        path = fetch(args.name)
    except (RuntimeError, ValueError) as exc:
        print(f"sladd models fetch: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
