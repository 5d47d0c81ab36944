"""Where an image's metadata JSON and previews go (docs/reference.md §5-6), and writing them.

JSON: `remote_json` -> output folder, `local_json` -> beside the input, `archive_json` ->
archive folder; `<stem>.json`. Previews: `<stem>_preview.jpg` in the output (`remote_preview`),
input (`local_preview`) and archive (`archive_preview`, fix 14: the preview itself, not over the
JSON) folders, and under `separate_preview_directory`/<folders below exif_top_dir>/.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from engine.fsutil import write_atomic
from engine.meta.common import relative_to_top

__all__ = ["MetaTargets", "targets_for", "preview_box", "crop_preview"]


@dataclass(frozen=True)
class MetaTargets:
    json: tuple[Path, ...]
    previews: tuple[Path, ...]

    @property
    def all(self) -> tuple[Path, ...]:
        return self.json + self.previews


def targets_for(cfg, job) -> MetaTargets:
    stem = job.path.stem
    jname, pname = f"{stem}.json", f"{stem}_preview.jpg"
    out_dir, in_dir = job.output.parent, job.path.parent
    arch_dir = job.archive.parent if job.archive is not None else None

    def mirrored(name: str, remote: bool, local: bool, archive: bool) -> list[Path]:
        """The output, input and archive copies the three reference switches ask for."""
        wanted = [(remote, out_dir), (local, in_dir), (archive and arch_dir is not None, arch_dir)]
        return [d / name for on, d in wanted if on]

    js = mirrored(jname, cfg.remote_json, cfg.local_json, cfg.archive_json)
    pv = []
    if cfg.preview_dim is not None:
        pv = mirrored(pname, cfg.remote_preview, cfg.local_preview, cfg.archive_preview)
        if cfg.separate_preview_directory:
            rel = relative_to_top(str(job.path), cfg.exif_top_dir)
            if rel is None:                     # no top folder in the path: mirror the input tree
                rel = Path(job.key).parent.as_posix()
            pv.append(Path(cfg.separate_preview_directory) / rel / pname)
    return MetaTargets(tuple(js), tuple(pv))


def preview_box(h: int, w: int, dim: tuple[int, int], center: tuple[float, float]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a `dim` = [width, height] crop centred at `center` = [h_frac, w_frac].

    Fix 5: the window is shifted to stay inside the image (the reference padded with black),
    and shrunk only where the image is smaller than the window.
    """
    cw, ch = min(dim[0] // 2 * 2, w), min(dim[1] // 2 * 2, h)
    cx, cy = int(w * center[1]), int(h * center[0])
    x0 = min(max(cx - cw // 2, 0), w - cw)
    y0 = min(max(cy - ch // 2, 0), h - ch)
    return x0, y0, x0 + cw, y0 + ch


def crop_preview(pixels: np.ndarray, dim, center) -> np.ndarray:
    h, w = pixels.shape[:2]
    x0, y0, x1, y1 = preview_box(h, w, dim, center)
    return np.ascontiguousarray(pixels[y0:y1, x0:x1])


def write_json_files(text: str, paths) -> list[str]:
    data = text.encode("utf-8")
    for p in paths:
        write_atomic(Path(p), data)
    return [str(p) for p in paths]


def write_previews(jpeg: Optional[bytes], paths) -> list[str]:
    for p in paths:
        write_atomic(Path(p), jpeg)
    return [str(p) for p in paths]
