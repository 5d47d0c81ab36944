"""Binary dilation with the reference system's square structuring element."""
from __future__ import annotations

from kernels._xp import get_array_module

__all__ = ["dilate_square"]


def _grow_axis(mask, p: int, axis: int):
    xp = get_array_module(mask)
    n = mask.shape[axis]
    pad = [(0, 0)] * mask.ndim
    pad[axis] = (2 * p + 1, 2 * p)                       # one extra leading zero for the diff
    c = xp.pad(mask.astype(xp.int32), pad).cumsum(axis=axis)
    hi = xp.take(c, xp.arange(2 * p + 1, n + 4 * p + 1), axis=axis)
    lo = xp.take(c, xp.arange(0, n + 2 * p), axis=axis)
    return (hi - lo) > 0


def dilate_square(mask, p: int):
    """Dilate a box-local bool mask by `p` pixels with a (2p+1)x(2p+1) square of ones.

    mask    (h, w) bool, host or device (not mutated)
    returns (h + 2p, w + 2p) bool; its origin is the input's origin shifted by (-p, -p).
    Equals `cv2.dilate(mask, np.ones((2p+1, 2p+1)))` on a frame large enough to hold the growth.
    Separable running sums: O(h*w), independent of p.
    """
    if p < 0:
        raise ValueError(f"p must be >= 0, got {p}")
    if p == 0:
        return mask.astype(bool, copy=True)
    return _grow_axis(_grow_axis(mask, p, 0), p, 1)
