"""The GPU check's figure checks: CuPy mask kernels, nvImageCodec (nvJPEG) decode and encode,
CenterFace's decoding on the device. Each `check_<name>(ctx)` runs in its own process under
scripts/device_check.py (which documents the whole check; the JSON schema is in
docs/device_check.md) and records its figures as it goes with `ctx.figure()`.

On a GPU `ctx.cp` is CuPy; in a rehearsal (no GPU) it is the strict stand-in of
tests/cupy_sim.py, the sizes are small (`ctx.size(gpu, rehearsal)`) and nvImageCodec's CPU-only
backend stands in for its GPU one.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Same tolerances as tests/test_gpu_path.py and tests/test_nvimgcodec.py.
DECODE_MEAN_TOLERANCE = 1.5
DECODE_P999_TOLERANCE = 24
ENCODE_MEAN_TOLERANCE = 1.0
KERNEL_MAX_DIFF = 1



class Skip(Exception):
    """The check cannot run here; the message is the reason."""


class Ctx:
    """What a check gets: the device module (CuPy, or the stand-in when rehearsing), sizes,
    a scratch folder, and `figure()` which records a figure at once (kept if the check is
    killed later)."""

    def __init__(self, result: Path, workdir: Path, rehearse: bool):
        self.result, self.workdir, self.rehearse = result, workdir, rehearse
        self._cp = None

    def emit(self, **kv):
        with open(self.result, "a") as fh:
            fh.write(json.dumps(kv, default=_jsonable) + "\n")

    def figure(self, key, value):
        self.emit(figures={key: value})

    @property
    def cp(self):
        """CuPy with a usable device; the strict stand-in when rehearsing."""
        if self._cp is None:
            if self.rehearse:
                from tests import cupy_sim

                class _Patch:
                    @staticmethod
                    def setitem(d, k, v):
                        d[k] = v
                self._cp = cupy_sim.install(_Patch())
            else:
                from kernels._xp import cupy_or_none
                self._cp = cupy_or_none()
                if self._cp is None:
                    raise Skip("CuPy with a usable CUDA device is not available")
        return self._cp

    def sync(self):
        self.cp.cuda.Device().synchronize()

    def size(self, gpu, rehearsal):
        return rehearsal if self.rehearse else gpu


def _jsonable(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


def _median_time(fn, repeat, sync=None, warm=1):
    for _ in range(warm):
        fn()
    if sync:
        sync()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _jpegs(n, h, w, quality=90, subsampling=2, faces=False):
    """n generated road scenes (with a pasted portrait when `faces` and one is found) as JPEGs."""
    import numpy as np

    from engine.codecs import TurboEncoder
    from engine.demo import road_scene

    portrait = _portrait() if faces else None
    enc = TurboEncoder()
    out = []
    for k in range(n):
        img = road_scene(h, w, k)
        if portrait is not None:
            from engine.demo import paste_portrait
            for j, frac in enumerate((0.18, 0.09)):                      # a near and a far face
                ph = max(24, int(h * frac))
                x = int((0.15 + 0.45 * j + 0.05 * k) * w) % max(1, w - ph)
                y = int(0.35 * h)
                if y + ph < h and x + ph < w:
                    paste_portrait(img, portrait, x, y, ph)
        out.append(enc.encode(np.ascontiguousarray(img), quality, subsampling))
    return out


def _portrait():
    """The demo's sample portrait (matplotlib's grace_hopper.jpg), or the copy `prepare`
    carries in .device; None when neither is there (the scenes then have no faces)."""
    from PIL import Image

    try:
        from engine.demo import sample_portrait
        return Image.open(sample_portrait()).convert("RGB")
    except Exception:  # noqa: BLE001 - matplotlib is not on the device machine
        pass
    p = ROOT / ".device" / "grace_hopper.jpg"
    return Image.open(p).convert("RGB") if p.is_file() else None


def _job(workdir: Path, name="x.jpg"):
    from engine.types import Job
    return Job(workdir / name, name, workdir / ("o-" + name), None, workdir, 0, 0)


def check_kernels(ctx: Ctx):
    import numpy as np

    from benchmarks.bench_kernels import _regions
    from kernels import blur_ksize, draw_regions

    cp = ctx.cp
    sizes = ctx.size([(2448, 2048), (8000, 4000)], [(320, 256)])
    masks = ctx.size([3, 30], [3])
    repeat = ctx.size(3, 1)
    rng = np.random.default_rng(0)
    rows, worst = [], 0
    for w, h in sizes:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        d_img = cp.asarray(img)
        k = blur_ksize(15, w)
        mp = h * w / 1e6
        for n in masks:
            regions = _regions(h, w, n, rng)
            for mode in ("normalized_gray_blur", "blur"):
                a = img.copy()
                t_np = _median_time(lambda: draw_regions(a, regions, mode=mode, ksize=k, out=a), repeat)
                d_b = d_img.copy()
                t_cp = _median_time(lambda: draw_regions(d_b, regions, mode=mode, ksize=k, out=d_b), repeat,
                                    sync=ctx.sync)
                want = draw_regions(img, regions, mode=mode, ksize=k)
                got = cp.asnumpy(draw_regions(d_img, regions, mode=mode, ksize=k))
                diff = int(np.abs(got.astype(int) - want.astype(int)).max())
                worst = max(worst, diff)
                row = {"image": f"{w}x{h}", "masks": n, "mode": mode, "ksize": k,
                       "numpy_mp_s": round(mp / t_np, 1), "cupy_mp_s": round(mp / t_cp, 1),
                       "cupy_vs_numpy": round(t_np / t_cp, 2), "max_diff_vs_numpy": diff}
                rows.append(row)
                ctx.figure("rows", rows)
                print(json.dumps(row), flush=True)
    if worst > KERNEL_MAX_DIFF:
        raise AssertionError(f"CuPy's masks differ from NumPy's by up to {worst} grey levels (> {KERNEL_MAX_DIFF})")
    return f"{len(rows)} kernel rows at {sizes[0][0]}x{sizes[0][1]}"


def _nv():
    try:
        from nvidia import nvimgcodec as nv
    except Exception as exc:  # noqa: BLE001
        raise Skip(f"nvImageCodec is not importable ({type(exc).__name__}: {exc}); carry "
                   "nvidia-nvimgcodec-cu13 and nvidia-nvjpeg (bash scripts/device_check.sh prepare)") from None
    return nv


def check_nvjpeg_decode(ctx: Ctx):
    import numpy as np

    from engine.codecs import TurboDecoder

    nv = _nv()
    w, h = ctx.size((2448, 2048), (320, 256))
    n, repeat = ctx.size(16, 4), ctx.size(3, 1)
    datas = _jpegs(n, h, w)
    if ctx.rehearse:
        dec = nv.Decoder(device_id=nv.NVIMGCODEC_DEVICE_CPU_ONLY, backends=[nv.Backend(nv.CPU_ONLY)])
        to_np = lambda im: np.asarray(im.cpu())                       # noqa: E731
        sync = None
    else:
        cp = ctx.cp
        try:
            dec = nv.Decoder()
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"nvImageCodec could not start a GPU decoder: {exc}") from None
        to_np = lambda im: cp.asnumpy(cp.asarray(im))                 # noqa: E731
        sync = ctx.sync
    ctx.figure("image", f"{w}x{h}")
    ctx.figure("count", n)
    ctx.figure("backend", "nvImageCodec CPU-only backend (rehearsal)" if ctx.rehearse else "nvImageCodec GPU (nvJPEG)")
    t_one = _median_time(lambda: [dec.decode(d) for d in datas], repeat, sync=sync)
    ctx.figure("nvimagecodec_img_s", round(n / t_one, 1))
    t_batch = _median_time(lambda: dec.decode(datas), repeat, sync=sync)
    ctx.figure("nvimagecodec_batch_img_s", round(n / t_batch, 1))
    tj = TurboDecoder()
    t_tj = _median_time(lambda: [tj.decode_pixels(d) for d in datas], repeat)
    ctx.figure("turbojpeg_img_s", round(n / t_tj, 1))
    ctx.figure("batch_vs_turbojpeg", round(t_tj / t_batch, 2))
    diffs = [np.abs(to_np(dec.decode(d)).astype(int) - tj.decode_pixels(d).astype(int)) for d in datas[:4]]
    mean = max(float(x.mean()) for x in diffs)
    p999 = max(float(np.percentile(x, 99.9)) for x in diffs)
    ctx.figure("max_mean_diff_vs_turbojpeg", round(mean, 3))
    ctx.figure("max_p999_diff_vs_turbojpeg", p999)
    if mean > DECODE_MEAN_TOLERANCE or p999 > DECODE_P999_TOLERANCE:
        raise AssertionError(f"nvImageCodec's pixels differ from TurboJPEG's: mean {mean:.2f}, p99.9 {p999}")
    return f"{n} JPEGs at {w}x{h} with the CPU-only backend"


def check_nvjpeg_encode(ctx: Ctx):
    import numpy as np

    from engine.codecs import TurboDecoder, TurboEncoder
    from engine.codecs.nvimgcodec import NvImageCodecEncoder
    from kernels import to_host

    _nv()
    w, h = ctx.size((2448, 2048), (320, 256))
    n, repeat = ctx.size(16, 4), ctx.size(3, 1)
    tj_dec, tj = TurboDecoder(), TurboEncoder()
    host = [tj_dec.decode_pixels(d) for d in _jpegs(n, h, w)]
    ctx.figure("image", f"{w}x{h}")
    ctx.figure("count", n)
    if ctx.rehearse:
        enc = NvImageCodecEncoder(device="cpu")
        frames = host
        ctx.figure("backend", "nvImageCodec CPU-only backend on host frames (rehearsal)")
    else:
        cp = ctx.cp
        try:
            enc = NvImageCodecEncoder(device="cuda")
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"nvImageCodec could not start a GPU encoder: {exc}") from None
        frames = [cp.asarray(p) for p in host]
        ctx.sync()
        ctx.figure("backend", "nvImageCodec GPU (nvJPEG) on device frames")
    for ss, label in ((2, "420"), (0, "444")):
        t_nv = _median_time(lambda: [enc.encode(f, 90, ss) for f in frames], repeat)
        t_tj = _median_time(lambda: [tj.encode(p, 90, ss) for p in host], repeat)
        t_tj_copy = _median_time(lambda: [tj.encode(to_host(f), 90, ss) for f in frames], repeat)
        got, ref = enc.encode(frames[0], 90, ss), tj.encode(host[0], 90, ss)
        diff = float(np.abs(tj_dec.decode_pixels(got).astype(int) - tj_dec.decode_pixels(ref).astype(int)).mean())
        ctx.figure(label, {"nvimagecodec_img_s": round(n / t_nv, 1), "turbojpeg_img_s": round(n / t_tj, 1),
                           "turbojpeg_with_copy_img_s": round(n / t_tj_copy, 1),
                           "nvimagecodec_vs_turbojpeg_with_copy": round(t_tj_copy / t_nv, 2),
                           "bytes_nvimagecodec": len(got), "bytes_turbojpeg": len(ref),
                           "mean_diff_vs_turbojpeg": round(diff, 3)})
        if diff >= ENCODE_MEAN_TOLERANCE:
            raise AssertionError(f"{label}: nvImageCodec's JPEG decodes {diff:.2f} grey levels from TurboJPEG's on average")
    return f"{n} frames at {w}x{h} with the CPU-only backend"


def check_centerface_decode(ctx: Ctx):
    import numpy as np

    from engine.models import load_card
    from engine.models.centerface import CenterFaceAdapter

    cp = ctx.cp
    ih, iw = ctx.size((736, 1280), (128, 160))                   # the model input; outputs at stride 4
    oh, ow = ih // 4, iw // 4
    repeat = ctx.size(30, 2)
    rng = np.random.default_rng(2)
    heat = (rng.random((1, 1, oh, ow), dtype=np.float32) * 0.3).astype(np.float32)
    for _ in range(20):                                          # a few faces, each a small peak
        y, x = int(rng.integers(1, oh - 1)), int(rng.integers(1, ow - 1))
        heat[0, 0, y - 1:y + 2, x - 1:x + 2] = np.float32(0.6 + 0.3 * rng.random())
    scale = rng.normal(2.5, 0.3, (1, 2, oh, ow)).astype(np.float32)
    offset = rng.random((1, 2, oh, ow), dtype=np.float32)
    ad = CenterFaceAdapter.__new__(CenterFaceAdapter)
    ad.card = load_card("centerface")
    d_heat, d_scale, d_offset = cp.asarray(heat), cp.asarray(scale), cp.asarray(offset)
    t_host = _median_time(lambda: ad.decode(heat, scale, offset, (ih, iw)), repeat)
    t_dev = _median_time(lambda: ad.decode(d_heat, d_scale, d_offset, (ih, iw)), repeat, sync=ctx.sync)
    host = ad.decode(heat, scale, offset, (ih, iw))
    dev = ad.decode(d_heat, d_scale, d_offset, (ih, iw))
    ctx.figure("outputs", f"{ow}x{oh} (input {iw}x{ih})")
    ctx.figure("decode_host_ms", round(1000 * t_host, 3))
    ctx.figure("decode_device_ms", round(1000 * t_dev, 3))
    ctx.figure("boxes", int(len(host.boxes)))
    if len(host.boxes) == 0 or len(host.boxes) != len(dev.boxes) or not np.allclose(host.boxes, dev.boxes, atol=1e-3):
        raise AssertionError(f"device decoding gave {len(dev.boxes)} boxes, the host {len(host.boxes)}, or other boxes")
    view = rng.integers(0, 256, (ih - 16, iw, 3), dtype=np.uint8)   # a frame view padded to the input
    d_view = cp.asarray(view)
    t_blob_dev = _median_time(lambda: CenterFaceAdapter.blob([d_view], ih, iw), repeat, sync=ctx.sync)
    ctx.figure("blob_device_ms", round(1000 * t_blob_dev, 3))
    try:
        t_blob_host = _median_time(lambda: CenterFaceAdapter.blob([view], ih, iw), repeat)
        ctx.figure("blob_host_ms", round(1000 * t_blob_host, 3))
        same = np.array_equal(cp.asnumpy(CenterFaceAdapter.blob([d_view], ih, iw)), CenterFaceAdapter.blob([view], ih, iw))
        if not same:
            raise AssertionError("the device blob differs from the host blob")
    except ImportError as exc:
        ctx.figure("blob_host_ms", f"not measured: {exc}")
    return f"outputs {ow}x{oh} on the CuPy stand-in"
