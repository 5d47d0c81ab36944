"""Sliding windows (the reference system's cutouts) over an image.

Windows are `(y0, x0, h, w)` in full-image pixels.
"""
from __future__ import annotations

__all__ = ["cutout_windows", "seam_window", "crop_view", "wrap_regions", "tile_grid", "spread_windows"]

import math


def _starts(n: int, win: int, step: int) -> list[int]:
    if win >= n:
        return [0]
    # A step larger than the window left bands between windows unseen at full resolution
    # (8000x4000 defaults: rows 1333..1500); never step past the window's end.
    step = min(step, win)
    starts = list(range(0, n - win + 1, step))
    if starts[-1] != n - win:
        # The reference stopped at the last full step and left the far edge to the
        # full-image pass alone; an edge-aligned last window covers it at full resolution.
        starts.append(n - win)
    return starts


def _wrap_starts(n: int, win: int, step: int) -> list[int]:
    # Around a 360° image the x axis is a circle: windows start every `step` all the way
    # round, and the last ones run past the right edge into the left (see crop_view).
    step = min(step, win)
    if win >= n:
        return [0]
    starts = list(range(0, n, step))
    # Windows that tile the circle exactly would all end at the seam: add one centred on it.
    if not any(s + win > n for s in starts):
        starts.append(n - win // 2)
    return starts


def cutout_windows(h: int, w: int, downscale: tuple[int, int], step: tuple[int, int], *, wrap: bool = False):
    """Windows `(y0, x0, h, w)` of `int(h/downscale[0]) x int(w/downscale[1])` stepped by
    `step` = (dy, dx), row by row (docs/reference.md §3.4), plus edge-aligned last row and
    column; a step larger than the window is reduced to the window size, so every pixel is
    inside some window. With `wrap` (360° images) columns go round the seam: `x0 + w` may
    exceed the image width, and an object cut by the seam is whole in some window."""
    wh, ww = max(1, int(h / downscale[0])), max(1, int(w / downscale[1]))
    xs = _wrap_starts(w, ww, step[1]) if wrap else _starts(w, ww, step[1])
    return [(y, x, wh, ww) for y in _starts(h, wh, step[0]) for x in xs]


def _side(n: int, size: int, overlap: int, multiple: int, circle: bool) -> int:
    """The side of `n` equal tiles covering `size` px with `overlap` px between neighbours (round
    a circle: n tiles evenly spaced), rounded up to `multiple` (the models pad to it anyway)."""
    if n == 1 and not circle:
        return size
    s = math.ceil(size / n) + overlap if circle else math.ceil((size + (n - 1) * overlap) / n)
    s = math.ceil(s / multiple) * multiple
    return s if circle else min(s, size)


def _spread(n: int, size: int, side: int, circle: bool) -> list[int]:
    if circle:
        return [round(i * size / n) for i in range(n)]
    if n == 1:
        return [0]
    return [round(i * (size - side) / (n - 1)) for i in range(n)]


def tile_grid(h: int, w: int, overlap: int, max_area: int, *, multiple: int = 32, wrap: bool = False):
    """Equal tiles `(y0, x0, th, tw)` covering an h x w image, neighbours overlapping by at
    least `overlap` px (an object up to that size is whole in some tile), none over `max_area`
    pixels (unless a single row and column of `multiple` px already is), the fewest pixels in
    all. With `wrap` (360°) the columns are evenly spaced round the circle and the last ones
    run past the right edge (crop_view), so the seam is covered like any other edge."""
    best = None
    for ny in range(1, max(1, h // max(1, multiple - overlap)) + 2):
        th = _side(ny, h, overlap, multiple, False)
        if ny > 1 and th <= overlap:
            break
        for nx in range(1, max(1, w // max(1, multiple - overlap)) + 2):
            tw = _side(nx, w, overlap, multiple, wrap)
            if nx > 1 and tw <= overlap + (0 if wrap else 0):
                break
            if th * tw <= max_area or tw <= multiple + overlap:
                if best is None or ny * nx * th * tw < best[0]:
                    best = (ny * nx * th * tw, ny, nx, th, tw)
                break                                  # more columns: more overlap, more pixels
        if best is not None and th * _side(1, w, overlap, multiple, wrap) * ny > 4 * best[0]:
            break
    _, ny, nx, th, tw = best
    return [(y, x, th, tw) for y in _spread(ny, h, th, False) for x in _spread(nx, w, tw, wrap)]


def spread_windows(h: int, w: int, wh: int, ww: int, overlap: float = 1 / 3, *, wrap: bool = False):
    """Windows `(y0, x0, wh, ww)` over an h x w image, evenly spread, neighbours sharing at least
    `overlap` of a window (x round the circle with `wrap`): the fewest windows of that size
    that leave no band unseen."""
    wh, ww = min(wh, h), ww if wrap else min(ww, w)

    def count(size, side, circle):
        if side >= size and not circle:
            return 1
        step = max(1.0, side * (1 - overlap))
        return max(2, math.ceil(size / step - 1e-9)) if circle else math.ceil((size - side) / step - 1e-9) + 1

    ny, nx = count(h, wh, False), count(w, ww, wrap)
    if wrap and ww >= w + math.ceil(overlap * ww):
        nx = 1
    return [(y, x, wh, ww) for y in _spread(ny, h, wh, False) for x in _spread(nx, w, ww, wrap)]


def seam_window(h: int, w: int, width: int | None = None):
    """A full-height window centred on the left/right seam of a 360° image (default width w/2)."""
    width = min(w, width or max(1, w // 2))
    return (0, w - width // 2, h, width)


def crop_view(image, y0: int, x0: int, vh: int, vw: int):
    """`image[y0:y0+vh, x0:x0+vw]`, with columns taken modulo the width when the view runs past
    the right edge (360° seam). A view inside the image is returned as a view (no copy)."""
    from kernels._xp import get_array_module

    w = image.shape[1]
    if x0 + vw <= w:
        return image[y0:y0 + vh, x0:x0 + vw]
    xp = get_array_module(image)
    return xp.take(image[y0:y0 + vh], xp.arange(x0, x0 + vw) % w, axis=1)


def wrap_regions(regions, w: int):
    """Split box-local regions `(y0, x0, mask)` that run past the right (or left) edge of a
    360° image of width `w` into the part inside and the part wrapped round to the other edge."""
    out = []
    for y0, x0, m in regions:
        if x0 < 0:                                     # dilated past the left edge
            out.append((y0, x0 + w, m[:, :-x0]))
            m, x0 = m[:, -x0:], 0
        if x0 >= w:
            out.append((y0, x0 - w, m))
        elif x0 + m.shape[1] > w:
            cut = w - x0
            out.append((y0, x0, m[:, :cut]))
            out.append((y0, 0, m[:, cut:]))
        else:
            out.append((y0, x0, m))
    return out
