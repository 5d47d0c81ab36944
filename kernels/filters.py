"""Box filtering over a region only, with results identical to a full-image filter there.

Coordinate convention: regions are `(y0, y1, x0, x1)`, end-exclusive, in image pixels.
The border mode is OpenCV's default, BORDER_REFLECT_101 (`gfedcb|abcdefgh|gfedcba`), and the
anchor is OpenCV's default centre (for an even ksize the window spans `k//2` before and
`k - 1 - k//2` after the pixel), so `box_filter_region` equals `cv2.blur(img, (k, k))` cropped
to the region, within 1 grey level (rounding of the mean).
"""
from __future__ import annotations

from kernels._xp import get_array_module

__all__ = ["reflect101", "box_filter_region", "rgb_to_gray"]


def reflect101(idx, n: int):
    """Map integer indices (any range) into 0..n-1 by reflect-101. `idx` int array, any module."""
    xp = get_array_module(idx)
    if n == 1:
        return xp.zeros_like(idx)
    period = 2 * n - 2
    i = xp.abs(idx) % period
    return xp.where(i >= n, period - i, i)


def _gather(image, y0: int, y1: int, x0: int, x1: int):
    """image[y0:y1, x0:x1] with reflect-101 outside the image (a view when fully inside)."""
    xp = get_array_module(image)
    h, w = image.shape[:2]
    if y0 >= 0 and x0 >= 0 and y1 <= h and x1 <= w:
        return image[y0:y1, x0:x1]
    rows = reflect101(xp.arange(y0, y1), h)
    cols = reflect101(xp.arange(x0, x1), w)
    return image[rows[:, None], cols[None, :]]


def _window_sums(a, k: int, axis: int):
    """Sums of k consecutive elements along `axis` (length n + k - 1 -> n), int32."""
    xp = get_array_module(a)
    c = xp.cumsum(a, axis=axis, dtype=xp.int32)

    def sl(start, stop):
        idx = [slice(None)] * a.ndim
        idx[axis] = slice(start, stop)
        return tuple(idx)

    out = c[sl(k - 1, None)].copy()                    # window ending at each position ...
    out[sl(1, None)] -= c[sl(None, -k)]                # ... minus the sum before the window
    return out


def box_filter_region(image, ksize: int, region: tuple[int, int, int, int]):
    """Mean over a `ksize x ksize` window for the pixels of `region` only.

    image   (H, W) or (H, W, C) uint8, host or device (not mutated)
    returns (y1-y0, x1-x0[, C]) uint8, newly allocated. Work is O(region area), not O(H*W):
            separable running sums in int32 (exact), rounded half up like OpenCV.
    """
    xp = get_array_module(image)
    if ksize < 1:
        raise ValueError(f"ksize must be >= 1, got {ksize}")
    if ksize * ksize * 255 >= 2 ** 31:
        raise ValueError(f"ksize {ksize} is too large for int32 window sums")
    y0, y1, x0, x1 = region
    before, after = ksize // 2, ksize - 1 - ksize // 2
    patch = _gather(image, y0 - before, y1 + after, x0 - before, x1 + after)
    sums = _window_sums(_window_sums(patch, ksize, 0), ksize, 1)
    area = ksize * ksize
    return ((sums * 2 + area) // (2 * area)).astype(xp.uint8)


def rgb_to_gray(rgb):
    """(..., 3) uint8 RGB -> (...) uint8, ITU-R 601 weights as cv2.COLOR_RGB2GRAY (rounded)."""
    xp = get_array_module(rgb)
    f = rgb.astype(xp.float32)
    g = f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114
    return xp.floor(g + 0.5).clip(0, 255).astype(xp.uint8)
