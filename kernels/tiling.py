"""Sliding windows (the reference system's cutouts) over an image.

Windows are `(y0, x0, h, w)` in full-image pixels.
"""
from __future__ import annotations

__all__ = ["cutout_windows", "seam_window", "crop_view", "wrap_regions"]


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
