"""Where a search-region model (a card with `search`: plates) looks: crops around other models'
detections (vehicles) and, optionally, tiles over the whole image, each at native resolution
and padded to one of a few sizes so that crops of different vehicles and images share model
calls (and, on runtimes with fixed-size plans, plans).

Rectangles are `(x0, y0, x1, y1)` ints in full-resolution pixels; for 360° images x is
unwrapped: x0 in [0, W), x1 up to x0 + W (kernels.crop_view takes the columns round the seam).
"""
from __future__ import annotations

import math

import numpy as np

from kernels import crop_view, get_array_module, resize_bilinear

__all__ = ["region_rects", "tile_rects", "crop_scales", "bucket_crop"]


def _contained(r, k) -> bool:
    return k[0] <= r[0] and k[1] <= r[1] and r[2] <= k[2] and r[3] <= k[3]


def region_rects(boxes: np.ndarray, margin: float, h: int, w: int, *, wrap: bool = False,
                 min_side: int = 32) -> list[tuple[int, int, int, int]]:
    """One rectangle per box `(N, 4)` float xyxy (full-res px, unwrapped x for 360°), grown by
    `margin` x its size on every side (a plate may stick out of a tight vehicle box), clipped
    to the image (x wraps instead for 360°). A rectangle inside another is dropped."""
    rects = []
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4).tolist():
        mx, my = margin * (x2 - x1), margin * (y2 - y1)
        y0, y1_ = max(0, int(y1 - my)), min(h, int(math.ceil(y2 + my)))
        if wrap:
            x0 = int(math.floor(x1 - mx))
            x1_ = min(x0 + w, int(math.ceil(x2 + mx)))
            shift = (x0 // w) * w                     # x0 into [0, W)
            x0, x1_ = x0 - shift, x1_ - shift
        else:
            x0, x1_ = max(0, int(x1 - mx)), min(w, int(math.ceil(x2 + mx)))
        if x1_ - x0 >= min_side // 4 and y1_ - y0 >= min_side // 4:
            rects.append((x0, y0, x1_, y1_))
    rects.sort(key=lambda r: (r[2] - r[0]) * (r[3] - r[1]), reverse=True)
    kept: list = []
    for r in rects:
        if not any(_contained(r, k) for k in kept):
            kept.append(r)
    return kept


def _starts(n: int, win: int, step: int, wrap: bool) -> list[int]:
    if win >= n:
        return [0]
    if wrap:
        return list(range(0, n, step))            # the last ones run round the seam
    starts = list(range(0, n - win + 1, step))
    if starts[-1] != n - win:
        starts.append(n - win)                    # an edge-aligned last tile
    return starts


def tile_rects(h: int, w: int, tile: int, overlap: int, *, wrap: bool = False) -> list[tuple[int, int, int, int]]:
    """Tiles of `tile` px overlapping by `overlap` px over the whole image, row by row; with
    `wrap` (360°) columns go round the seam, so a plate cut by it is whole in some tile."""
    step = tile - overlap
    th, tw = min(tile, h), min(tile, w)
    return [(x, y, x + tw, y + th) for y in _starts(h, th, step, False) for x in _starts(w, tw, step, wrap)]


def crop_scales(rect, frame_scale: float, scales, largest: int, min_side: int) -> list[float]:
    """The distinct scales (model px per full-res px) a rectangle is looked at: each of
    `scales` x native resolution, none beyond what fits `largest` px, none that leaves its
    longer side under `min_side` px (the native look is always kept)."""
    side = max(rect[2] - rect[0], rect[3] - rect[1]) * frame_scale
    fit = min(frame_scale, frame_scale * largest / side)
    out: list[float] = []
    for s in scales:
        s = min(s * frame_scale, fit)
        if all(abs(s - o) > 1e-3 * o for o in out) and (not out or side / frame_scale * s >= min_side):
            out.append(s)
    return out


def bucket_crop(pixels, rect, frame_scale: float, buckets: tuple[int, ...], pad_value: float = 114.0,
                scale: float | None = None):
    """The pixels of `rect` (full-res px) from a frame decoded at `frame_scale`, resized to
    `scale` model px per full-res px (default: as decoded, shrunk to fit the largest bucket if
    needed) and padded (bottom/right, `pad_value`) to the smallest bucket per side that holds
    it. Returns (`(bh, bw, 3)` uint8 canvas, host or device as `pixels`; model px per full-res
    px). Allocates."""
    x0, y0, x1, y1 = rect
    fs = frame_scale
    crop = crop_view(pixels, round(y0 * fs), round(x0 * fs), max(1, round((y1 - y0) * fs)),
                     max(1, round((x1 - x0) * fs)))
    ch, cw = crop.shape[:2]
    s = min(1.0, buckets[-1] / max(ch, cw)) if scale is None else min(scale / fs, buckets[-1] / max(ch, cw))
    if s != 1.0:
        crop = resize_bilinear(crop, max(1, round(ch * s)), max(1, round(cw * s)))
        ch, cw = crop.shape[:2]
    bh = next(b for b in buckets if b >= ch)
    bw = next(b for b in buckets if b >= cw)
    xp = get_array_module(pixels)
    canvas = xp.full((bh, bw, 3), int(round(pad_value)), xp.uint8)
    canvas[:ch, :cw] = crop if crop.dtype == xp.uint8 else xp.clip(xp.rint(crop), 0, 255).astype(xp.uint8)
    return canvas, fs * s
