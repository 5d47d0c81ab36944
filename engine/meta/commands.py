"""`sladd json`, `sladd preview`, `sladd check`: the reference system's create_json,
create_preview and check_folders scripts over a folder tree."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from engine.codecs import TurboDecoder
from engine.decode import read_bytes
from engine.embedded import clean_exif
from engine.jpeg import parse_jpeg
from engine.meta.exif import read_exif
from engine.meta.outputs import crop_preview, targets_for, write_json_files, write_previews
from engine.meta.record import MetaContext, build_record, dumps
from engine.types import ImageError
from engine.walk import Tree

__all__ = ["make_json", "make_previews", "check_tree", "CommandStats"]

LOG = logging.getLogger("sladd")


@dataclass
class CommandStats:
    images: int = 0
    written: int = 0
    failed: int = 0
    failures: list = field(default_factory=list)


def _run(tree: Tree, fn, workers: int) -> CommandStats:
    stats = CommandStats()

    def one(path: Path):
        job = tree.job(path)
        try:
            return job, fn(job), None
        except (ImageError, OSError, ValueError) as exc:
            return job, 0, str(exc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for job, n, err in pool.map(one, tree.paths()):
            stats.images += 1
            if err is not None:
                stats.failed += 1
                stats.failures.append((job.key, err))
                LOG.error("FAILED %s: %s", job.path, err)
            else:
                stats.written += n
    return stats


def make_json(cfg, config_file: Path, input_dir: Path, output_dir: Optional[Path], archive_dir: Optional[Path] = None,
              *, workers: int = 2) -> CommandStats:
    """Metadata JSON only, without any model: `detekterte_objekter` is null (as create_json)."""
    if output_dir is None and (cfg.remote_json or cfg.archive_json):
        cfg = cfg.model_copy(update={"remote_json": False, "archive_json": False})
    if not (cfg.remote_json or cfg.local_json or cfg.archive_json):
        raise ValueError("no JSON output is enabled: set remote_json (with -o), local_json or archive_json (with -a)")
    ctx = MetaContext.from_config(cfg, config_file)
    tree = Tree(input_dir, output_dir or input_dir, archive_dir, cfg.output.extensions,
                follow_symlinks=cfg.input_follow_symlinks)

    def fn(job):
        data = read_bytes(job.path)
        info = parse_jpeg(data)
        record, warnings = build_record(read_exif(clean_exif(info.exif)), info.width, info.height, str(job.path), ctx,
                                        file_path=job.path, detections=None,
                                        preview_name=f"{job.path.stem}_preview.jpg")
        for w in warnings:
            LOG.debug("%s: %s", job.key, w)
        paths = targets_for(cfg, job).json
        write_json_files(dumps(record), paths)
        return len(paths)

    return _run(tree, fn, workers)


def make_previews(cfg, input_dir: Path, output_dir: Optional[Path], archive_dir: Optional[Path] = None,
                  *, workers: int = 2) -> CommandStats:
    """Previews of the *unmasked* inputs (as the reference's create_preview)."""
    if output_dir is None and cfg.remote_preview:
        cfg = cfg.model_copy(update={"remote_preview": False})
    if cfg.preview_dim is None or not (cfg.remote_preview or cfg.local_preview or cfg.archive_preview
                                       or cfg.separate_preview_directory):
        raise ValueError("no preview output is enabled: set remote_preview (with -o), local_preview, "
                         "archive_preview (with -a) or separate_preview_directory, and preview_dim")
    tree = Tree(input_dir, output_dir or input_dir, archive_dir, cfg.output.extensions,
                follow_symlinks=cfg.input_follow_symlinks)
    decoder = TurboDecoder(max_pixels=cfg.engine.max_image_pixels)

    def fn(job):
        from engine.codecs import TurboEncoder

        frame = decoder.decode(job, read_bytes(job.path))
        crop = crop_preview(frame.pixels, cfg.preview_dim, cfg.preview_center)
        jpeg = TurboEncoder().encode(crop, frame.quality or cfg.output.min_quality, 2)
        paths = targets_for(cfg, job).previews
        write_previews(jpeg, paths)
        return len(paths)

    return _run(tree, fn, workers)


OUTPUT_KINDS = ("image", "json", "preview", "archive", "archive_json", "archive_preview")


def expected_outputs(cfg, job) -> dict[str, Optional[Path]]:
    """Each output kind -> its path, or None when the configuration does not produce it. The
    files come from the run's own sinks (engine.worker.sinks); the report splits the JSON and
    preview copies by folder, as the reference's check_folders did."""
    from engine.worker.sinks import expected

    files = expected(cfg, job)
    arch_dir = job.archive.parent if job.archive is not None else None
    out = dict.fromkeys(OUTPUT_KINDS)
    out["image"] = files["image"][0]
    out["json"] = next((p for p in files["json"] if p.parent == job.output.parent), None)
    out["preview"] = next((p for p in files["preview"] if p.parent == job.output.parent), None)
    if job.archive is not None:
        out["archive"] = files["archive"][0]
        out["archive_json"] = next((p for p in files["json"] if p.parent == arch_dir), None)
        out["archive_preview"] = next((p for p in files["preview"] if p.parent == arch_dir), None)
    return out


def check_tree(cfg, input_dir: Path, output_dir: Path, archive_dir: Optional[Path] = None, *,
               unlisted: Optional[list] = None, skipped: Optional[list] = None):
    """Yields (key, {kind: "OK" | "Missing" | "None"}) per input image (check_folders).

    Keys are as the walk gives them (surrogate-escaped str for names that are not UTF-8; print
    them with fsutil.escape_line). Folders that cannot be listed are appended to `unlisted` and
    symbolic links or special files not taken to `skipped`, as (path, reason), as `sladd run` does.
    """
    from engine.fsutil import escape_line

    tree = Tree(input_dir, output_dir, archive_dir, cfg.output.extensions,
                follow_symlinks=cfg.input_follow_symlinks)
    for path in tree.paths(unlisted=unlisted, skipped=skipped):
        try:
            job = tree.job(path)
        except OSError as exc:                       # vanished since it was listed
            if skipped is not None:
                skipped.append((escape_line(path), f"cannot stat: {exc.strerror or exc}"))
            continue
        row = {}
        for kind, p in expected_outputs(cfg, job).items():
            row[kind] = "None" if p is None else ("OK" if p.is_file() else "Missing")
        yield job.key, row
