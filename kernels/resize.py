"""Resampling for model inputs and box-local masks."""
from __future__ import annotations

import numpy as np

from kernels._xp import cv2_or_none, get_array_module

__all__ = ["resize_bilinear", "letterbox", "downscale_mean", "padded_planes"]


def _axis(xp, n_in: int, n_out: int):
    # Half-pixel centres, as cv2.INTER_LINEAR and torch align_corners=False.
    pos = (xp.arange(n_out, dtype=xp.float32) + 0.5) * (n_in / n_out) - 0.5
    pos = xp.clip(pos, 0, n_in - 1)
    i0 = xp.floor(pos).astype(xp.int64)
    i1 = xp.minimum(i0 + 1, n_in - 1)
    return i0, i1, (pos - i0).astype(xp.float32)


def resize_bilinear(src, out_h: int, out_w: int):
    """Bilinear resize of `(H, W)` or `(H, W, C)` (any dtype) to float32 `(out_h, out_w[, C])`.

    No antialiasing: downscale by at most ~2x per call for clean results (the decoder's DCT
    scaling does the coarse reduction).
    """
    xp = get_array_module(src)
    h, w = src.shape[:2]
    cv2 = cv2_or_none() if xp is np and src.ndim in (2, 3) and src.size else None
    if cv2 is not None:
        # Host: OpenCV's INTER_LINEAR on float32 (the same half-pixel bilinear; within 0.03 of a
        # 255 range of the NumPy code below, float rounding): 0.9 ms instead of 7.8 ms for a
        # 1224x1024 view resized to the plate model's 640 px.
        out = cv2.resize(np.asarray(src, np.float32), (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        return out.reshape((out_h, out_w) + src.shape[2:])
    y0, y1, wy = _axis(xp, h, out_h)
    x0, x1, wx = _axis(xp, w, out_w)
    extra = (None,) * (src.ndim - 2)
    wx_ = wx[(None, slice(None)) + extra]
    wy_ = wy[(slice(None), None) + extra]
    # Separable, each output value computed as (top row: x, then bottom row: x, then y) from the
    # source rows it needs only: the horizontal pass once per needed row, not once per output
    # row and neighbour (1.3-4.5x faster than gathering four out_h x out_w samples; same values).
    rows = xp.unique(xp.concatenate([y0, y1]))
    sub = src[rows]
    c0 = xp.take(sub, x0, axis=1).astype(xp.float32)
    c1 = xp.take(sub, x1, axis=1).astype(xp.float32)
    across = c0 * (1 - wx_) + c1 * wx_
    t, b = across[xp.searchsorted(rows, y0)], across[xp.searchsorted(rows, y1)]
    return t * (1 - wy_) + b * wy_


def letterbox(src, size_hw: tuple[int, int], pad_value: float = 114.0):
    """Fit `(H, W, 3)` into `size_hw` keeping the aspect ratio, padding bottom/right.

    returns (float32 (h, w, 3) canvas, scale) where input pixel coords = model coords / scale.
    """
    xp = get_array_module(src)
    th, tw = size_hw
    h, w = src.shape[:2]
    scale = min(th / h, tw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    canvas = xp.full((th, tw, src.shape[2]), pad_value, xp.float32)
    canvas[:nh, :nw] = resize_bilinear(src, nh, nw) if (nh, nw) != (h, w) else src
    return canvas, scale


def downscale_mean(src, factor: int):
    """Integer-factor downscale by block means: `(H, W, C)` -> `(H//f, W//f, C)`. Exact area
    averaging (no aliasing). uint8 in, uint8 out, each mean rounded half up, `(sum + f*f//2) //
    (f*f)`, on the host and on the device alike; on the host OpenCV's INTER_AREA computes exactly
    that for f = 2 and 3 (5x faster than NumPy). Other dtypes: float32 means."""
    xp = get_array_module(src)
    h, w = src.shape[0] // factor * factor, src.shape[1] // factor * factor
    if src.dtype == xp.uint8:
        if xp is np and factor in (2, 3) and src.ndim == 3 and src.shape[2] in (1, 3, 4) and cv2_or_none() is not None:
            cv2 = cv2_or_none()
            out = cv2.resize(src[:h, :w], (w // factor, h // factor), interpolation=cv2.INTER_AREA)
            return out.reshape((h // factor, w // factor) + src.shape[2:])
        acc = xp.zeros((h // factor, w // factor) + src.shape[2:], xp.int32)
        for dy in range(factor):
            for dx in range(factor):
                acc += src[dy:h:factor, dx:w:factor]
        acc += factor * factor // 2
        acc //= factor * factor
        return acc.astype(xp.uint8)
    acc = xp.zeros((h // factor, w // factor) + src.shape[2:], xp.float32)
    for dy in range(factor):
        for dx in range(factor):
            acc += src[dy:h:factor, dx:w:factor]
    acc *= 1.0 / (factor * factor)
    return acc


def padded_planes(views: list, ih: int, iw: int):
    """`(N, 3, ih, iw)` float32 of N views `(h, w, 3)` of one shape, zero-padded below and right
    (NCHW model input); on the device for device views. Allocates."""
    h, w = views[0].shape[:2]
    xp = get_array_module(views[0])
    if xp is not np:
        blob = xp.zeros((len(views), 3, ih, iw), xp.float32)
        for i, v in enumerate(views):
            blob[i, :, :h, :w] = v.transpose(2, 0, 1)
        return blob
    # Host: only the padding is zeroed, and each channel is copied from a contiguous plane (a
    # strided HWC -> CHW conversion into a fresh zeroed array took 25 ms at 1224x1024; this 1.5).
    blob = np.empty((len(views), 3, ih, iw), np.float32)
    blob[:, :, h:, :] = 0
    blob[:, :, :h, w:] = 0
    cv2 = cv2_or_none()                          # without OpenCV: NumPy's planes, slower
    for i, v in enumerate(views):
        v = np.ascontiguousarray(v)
        planes = cv2.split(v) if cv2 is not None else [v[..., c] for c in range(v.shape[2])]
        for c, plane in enumerate(planes):
            blob[i, c, :h, :w] = plane
    return blob
