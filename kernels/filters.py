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


def _window_sums(a, k: int, axis: int, dtype):
    """Sums of k consecutive elements along `axis` (length n + k - 1 -> n), in unsigned `dtype`.

    The running sums wrap modulo 2**bits on a long axis; unsigned wrap-around is defined in
    NumPy and in CUDA alike, so each difference is the exact window sum as long as that sum fits
    (box_filter_region picks `dtype` for that)."""
    xp = get_array_module(a)
    c = xp.cumsum(a, axis=axis, dtype=dtype)

    def sl(start, stop):
        idx = [slice(None)] * a.ndim
        idx[axis] = slice(start, stop)
        return tuple(idx)

    out = c[sl(k - 1, None)].copy()                    # window ending at each position ...
    out[sl(1, None)] -= c[sl(None, -k)]                # ... minus the sum before the window
    return out


def _sum_dtype(xp, ksize: int):
    """uint32 while the largest window sum plus the rounding term fits (ksize <= 4100), else
    uint64. The rounding is `(sum + area // 2) // area`, so nothing larger than that is formed."""
    area = ksize * ksize
    return xp.uint32 if area * 255 + area // 2 < 2 ** 32 else xp.uint64


def box_filter_region(image, ksize: int, region: tuple[int, int, int, int]):
    """Mean over a `ksize x ksize` window for the pixels of `region` only.

    image   (H, W) or (H, W, C) uint8, host or device (not mutated)
    returns (y1-y0, x1-x0[, C]) uint8, newly allocated. Work is O(region area), not O(H*W):
            separable running sums, exact for any ksize (uint32, uint64 from ksize 4101),
            rounded half up, where OpenCV rounds half to even (hence "within 1 grey level").
    """
    xp = get_array_module(image)
    if ksize < 1:
        raise ValueError(f"ksize must be >= 1, got {ksize}")
    y0, y1, x0, x1 = region
    before, after = ksize // 2, ksize - 1 - ksize // 2
    patch = _gather(image, y0 - before, y1 + after, x0 - before, x1 + after)
    dtype = _sum_dtype(xp, ksize)
    sums = _window_sums(_window_sums(patch, ksize, 0, dtype), ksize, 1, dtype)
    area = ksize * ksize
    # (2s + a) // 2a, the textbook half-up rounding, doubled the sum and overflowed int32 from
    # ksize 2052 (an all-255 image gave 24); (s + a // 2) // a is the same integer for every s.
    sums += area // 2
    sums //= area
    return sums.astype(xp.uint8)


def rgb_to_gray(rgb):
    """(..., 3) uint8 RGB -> (...) uint8, ITU-R 601 weights as cv2.COLOR_RGB2GRAY (rounded)."""
    xp = get_array_module(rgb)
    f = rgb.astype(xp.float32)
    g = f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114
    return xp.floor(g + 0.5).clip(0, 255).astype(xp.uint8)
