"""Kernel throughput: region-only drawing vs filtering the whole image, per mode and mask count.

    python -m benchmarks.bench_kernels [--sizes 2448x2048,8000x4000] [--masks 0,3,30] [--repeat 3]

Full-image reference = what the reference system did: box-filter the whole image (OpenCV's
cv2.blur when installed, else the same kernels over the whole frame), then copy the masked
pixels. Region-only = kernels.draw_regions. Both outputs are compared inside the masks.
Reports megapixels/s (of the whole image) and the speed-up on NumPy; where CuPy sees a GPU,
also the region-only path on the device (image on the device, host masks moved in one packed
copy, synchronised before the clock stops) and its largest difference from NumPy's result.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from kernels import blur_ksize, dilate_square, draw_regions, rgb_to_gray
from kernels._xp import cupy_or_none
from kernels.filters import box_filter_region

RESULTS = Path(__file__).resolve().parent / "results" / "kernels.jsonl"


def _regions(h, w, n, rng):
    out = []
    for _ in range(n):
        rh, rw = int(rng.integers(h // 40, h // 8)), int(rng.integers(w // 80, w // 16))
        y, x = int(rng.integers(0, h - rh)), int(rng.integers(0, w - rw))
        yy, xx = np.ogrid[:rh, :rw]
        m = ((yy - rh / 2) / (rh / 2)) ** 2 + ((xx - rw / 2) / (rw / 2)) ** 2 <= 1
        out.append((y - 4, x - 4, dilate_square(m, 4)))
    return out


def _full_image(img, regions, mode, k):
    """The reference's way: filter everything, copy masked pixels."""
    try:
        import cv2
        blur = lambda a, kk: cv2.blur(a, (kk, kk))
        gray = lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    except ImportError:
        blur = lambda a, kk: box_filter_region(a, kk, (0, a.shape[0], 0, a.shape[1]))
        gray = rgb_to_gray
    if mode == "blur":
        f = blur(img, k)
    else:
        g = gray(img)
        if mode == "gray_blur":
            f = np.repeat(blur(g, k)[..., None], 3, 2)
        else:
            d = blur(g, k).astype(np.int16) - blur(g, int(1.2 * k)).astype(np.int16) + 100
            f = np.repeat(np.clip(d, 0, 255).astype(np.uint8)[..., None], 3, 2)
    out = img                                   # in place, as the reference drew
    h, w = img.shape[:2]
    for y0, x0, m in regions:
        ys, xs = slice(max(0, y0), min(h, y0 + m.shape[0])), slice(max(0, x0), min(w, x0 + m.shape[1]))
        mm = m[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        out[ys, xs][mm] = f[ys, xs][mm]
    return out


def _time(fn, repeat):
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _time_device(fn, repeat, cp):
    def synced():
        fn()
        cp.cuda.Device().synchronize()
    return _time(synced, repeat)


def main(argv=None):
    ap = argparse.ArgumentParser(description="kernel benchmark")
    ap.add_argument("--sizes", default="2448x2048,8000x4000")
    ap.add_argument("--masks", default="0,3,30")
    ap.add_argument("--modes", default="normalized_gray_blur,blur")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    cp = cupy_or_none()
    extra = " CuPy region-only | CuPy vs NumPy |" if cp is not None else ""
    print("| image | masks | mode | full-image | region-only | speed-up | max diff in masks |" + extra)
    print("|---|---|---|---|---|---|---|" + ("---|---|" if cp is not None else ""))
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        k = blur_ksize(15, w)
        for n in (int(v) for v in args.masks.split(",")):
            regions = _regions(h, w, n, rng)
            for mode in args.modes.split(","):
                # Both draw in place (the engine owns its decoded pixels); outputs compared on copies.
                a, b = img.copy(), img.copy()
                t_full = _time(lambda: _full_image(a, regions, mode, k), args.repeat)
                t_reg = _time(lambda: draw_regions(b, regions, mode=mode, ksize=k, out=b), args.repeat)
                region_only = draw_regions(img, regions, mode=mode, ksize=k)
                diff = int(np.abs(_full_image(img.copy(), regions, mode, k).astype(int)
                                  - region_only.astype(int)).max())
                # Same kernels over the whole frame: the region-only result must be identical.
                whole = [(0, 0, np.zeros((h, w), bool))] + list(regions)
                same = bool((draw_regions(img, whole, mode=mode, ksize=k) == region_only).all()) if n else True
                mp = h * w / 1e6
                row = {"image": size, "masks": n, "mode": mode, "backend": "numpy", "ksize": k,
                       "full_mp_s": mp / t_full, "region_mp_s": mp / t_reg, "speedup": t_full / t_reg,
                       "max_diff_vs_opencv": diff, "identical_to_own_full_frame": same}
                dev = ""
                if cp is not None:
                    d_img = cp.asarray(img)
                    d_b = d_img.copy()
                    t_dev = _time_device(lambda: draw_regions(d_b, regions, mode=mode, ksize=k, out=d_b), args.repeat,
                                         cp)
                    d_diff = int(np.abs(cp.asnumpy(draw_regions(d_img, regions, mode=mode, ksize=k)).astype(int)
                                        - region_only.astype(int)).max())
                    row.update(backend="numpy+cupy", device_mp_s=mp / t_dev, device_max_diff_vs_numpy=d_diff)
                    dev = f" {mp / t_dev:.0f} MP/s | {d_diff} |"
                rows.append(row)
                print(f"| {size} | {n} | {mode} | {mp / t_full:.0f} MP/s | {mp / t_reg:.0f} MP/s | "
                      f"{t_full / t_reg:.1f}x | {diff} (OpenCV); identical to full-frame: {same} |" + dev)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
