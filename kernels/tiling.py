"""Sliding windows (the reference system's cutouts) over an image.

Windows are `(y0, x0, h, w)` in full-image pixels.
"""
from __future__ import annotations

__all__ = ["cutout_windows"]


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


def cutout_windows(h: int, w: int, downscale: tuple[int, int], step: tuple[int, int]):
    """Windows of `int(h/downscale[0]) x int(w/downscale[1])` stepped by `step` = (dy, dx),
    row by row (REFERENCE_NPRA.md §3.4), plus edge-aligned last row and column; a step larger
    than the window is reduced to the window size, so every pixel is inside some window."""
    wh, ww = max(1, int(h / downscale[0])), max(1, int(w / downscale[1]))
    return [(y, x, wh, ww) for y in _starts(h, wh, step[0]) for x in _starts(w, ww, step[1])]
