"""GPU benchmark: DALI decode-only, inference-only and end-to-end images/s, per image size and
runtime/precision, side by side in one run.

    python -m benchmarks.bench_gpu [--sizes 2448x2048,8000x4000] [--count 32] [--runs 3]
                                   [--runtimes tensorrt:fp16,tensorrt:int8,onnxruntime] [--device cuda]

Stages, each timed alone after a warm-up (TensorRT plans are built and cached by the warm-up):
- decode: DALI `mixed` (nvJPEG) batches of `--batch` into GPU memory (CuPy frames), and
  TurboJPEG on the host for comparison;
- detect: the configured face model on the decoded device frames (input preparation on the
  device, the runtime, CenterFace's reduction on the device), per runtime/precision;
- mask+copy+encode: device masking of the detections and the encoder `auto` picks
  (nvImageCodec on the GPU when installed, else one copy back and TurboJPEG on the host);
- encode alone: TurboJPEG (including the copy to the host) vs nvImageCodec (device frames on
  cuda, its CPU backend on cpu), on the same frames;
- end to end: `sladd run` in a child process (DALI → runtime → device masks → host encode),
  after one untimed run that builds the plans.
The report states the end-to-end / DALI-decode-only ratio (target on a GPU: >= 0.7).

`--device cpu` runs the same code with DALI's CPU-only mode and ONNX Runtime on the CPU: that
is how CI checks this script; its figures are not GPU figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from benchmarks.bench import _job, machine, recall
from benchmarks.corpus import build
from engine.codecs import TurboDecoder
from engine.config import load_config
from engine.decode import read_bytes
from engine.detect import Detector, build_models
from engine.runtimes import create_runtime

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: str) -> None:
    if device == "cuda":
        import cupy

        cupy.cuda.Device().synchronize()


def gpu_info(device: str) -> dict:
    info = {"gpu": None}
    if device != "cuda":
        return info
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
    info["gpu_memory_gb"] = round(props["totalGlobalMem"] / 2**30, 1)
    for pkg in ("cupy-cuda12x", "nvidia-dali-cuda120", "onnxruntime-gpu", "tensorrt"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    return info


def _rate(n: int, seconds: list[float]) -> dict:
    best = statistics.median(seconds)
    return {"images_per_s": n / best, "ms_per_image": 1000 * best / n, "runs": [round(n / s, 2) for s in seconds]}


def decode_only(files: list[Path], device: str, batch: int, runs: int) -> dict:
    from engine.codecs.dali import DaliDecoder

    datas = [read_bytes(p) for p in files]
    items = [(_job(p), d) for p, d in zip(files, datas)]
    dali = DaliDecoder(device="mixed" if device == "cuda" else "cpu", batch=batch, threads=4)
    dali.decode_batch(items[:batch])                         # builds the pipeline
    out = {}
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        for c in range(0, len(items), batch):
            frames = dali.decode_batch(items[c:c + batch])
            assert all(not isinstance(f, Exception) for f in frames), frames
            del frames
        _sync(device)
        times.append(time.perf_counter() - t)
    out["dali"] = _rate(len(files), times)
    tj = TurboDecoder()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        for p, d in zip(files, datas):
            tj.decode(_job(p), d)
        times.append(time.perf_counter() - t)
    out["turbojpeg (host, 1 thread)"] = _rate(len(files), times)
    return out


def detect_and_mask(files: list[Path], device: str, runtime: str, precision: str, runs: int, batch: int,
                    calib: Path) -> tuple[dict, list]:
    """Detect alone and mask+copy+encode alone on frames decoded by DALI (device frames on cuda)."""
    from engine.codecs import create_encoder
    from engine.codecs.dali import DaliDecoder
    from engine.device import choose_encoder
    from engine.worker.write import Writer
    from kernels import to_host

    cfg, _ = load_config()
    rt = create_runtime(runtime, device=device, precision=precision, calibration_images=calib)
    slots, names = build_models(cfg, rt)
    detector = Detector(cfg, slots, names)
    dali = DaliDecoder(device="mixed" if device == "cuda" else "cpu", batch=batch)
    frames = []
    for c in range(0, len(files), batch):
        frames += dali.decode_batch([(_job(p), read_bytes(p)) for p in files[c:c + batch]])
    for f in frames:                                         # warm-up: every shape once (plans)
        detector(f)
    writer = Writer(cfg, dali, encoder=create_encoder(choose_encoder("auto", device), device))
    encoders = {"turbojpeg": create_encoder("turbojpeg")}
    try:
        encoders["nvimagecodec"] = create_encoder("nvimagecodec", device)
    except (ImportError, RuntimeError) as exc:
        print(f"bench_gpu: nvImageCodec not measured: {exc}", file=sys.stderr)
    enc_t = {k: [] for k in encoders}
    det_t, mask_t, dets = [], [], []
    for _ in range(runs):
        dets = []
        t = time.perf_counter()
        for f in frames:
            dets.append(detector(f))
        _sync(device)
        det_t.append(time.perf_counter() - t)
        copies = [dataclasses.replace(f, pixels=f.pixels.copy(), timings={}) for f in frames]
        _sync(device)
        t = time.perf_counter()
        for g, d in zip(copies, dets):
            writer.render(g, d)
        _sync(device)
        mask_t.append(time.perf_counter() - t)
        del copies
        for name, enc in encoders.items():
            t = time.perf_counter()
            for f in frames:
                px = f.pixels if getattr(enc, "accepts_device_arrays", False) else to_host(f.pixels)
                enc.encode(px, f.quality or 90, f.subsampling)
            enc_t[name].append(time.perf_counter() - t)
    out = {"detect": _rate(len(files), det_t), "mask+copy+encode": _rate(len(files), mask_t),
           "encoder": writer.encoder.name}
    out.update({f"encode ({k})": _rate(len(files), v) for k, v in enc_t.items()})
    return out, dets


def end_to_end(corpus: Path, device: str, runtime: str, precision: str, runs: int, batch: int,
               calib: Path) -> dict:
    cfg_file = Path(tempfile.mkdtemp(prefix="sladd-gpu-cfg-")) / "bench.yml"
    engine = {"runtime": runtime, "decoder": "dali", "decode_batch": batch}
    if runtime == "tensorrt":
        engine.update(precision=precision, calibration_images=str(calib))
    cfg_file.write_text(json.dumps({"engine": engine, "remote_json": False}))
    n = len(list(corpus.glob("*.jpg")))
    times = []
    for k in range(runs + 1):                                # the first run builds/caches plans
        out = Path(tempfile.mkdtemp(prefix="sladd-gpu-out-"))
        try:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "engine.cli", "run", "-i", str(corpus), "-o", str(out), "-k",
                            str(cfg_file), "--device", device, "-q"], check=True, capture_output=True)
            if k:
                times.append(time.perf_counter() - t)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    r = _rate(n, times)
    r["note"] = "whole process: start, model load, plans from the cache"
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="sladd GPU benchmark (decode-only, inference-only, end to end)")
    ap.add_argument("--sizes", default="2448x2048,8000x4000", help="comma-separated WxH")
    ap.add_argument("--count", type=int, default=32, help="images per size")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="DALI decode batch")
    ap.add_argument("--runtimes", default=None,
                    help="comma-separated RUNTIME[:PRECISION] (default on cuda: tensorrt:fp16,tensorrt:int8,"
                         "onnxruntime when installed; on cpu: onnxruntime)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--corpus-root", type=Path, default=None, help="reuse/keep corpora here")
    ap.add_argument("--no-end-to-end", action="store_true")
    ap.add_argument("--results", type=Path, default=RESULTS, help="gpu.jsonl and gpu-latest.md go here")
    args = ap.parse_args(argv)

    from engine.device import choose_device, gpu_components
    if args.device == "cuda":
        try:
            choose_device("cuda")
        except RuntimeError as exc:
            print(f"bench_gpu: {exc}", file=sys.stderr)
            return 2
    comps = gpu_components() if args.device == "cuda" else {}
    if args.runtimes:
        runtimes = [tuple((r + ":fp32").split(":")[:2]) for r in args.runtimes.split(",")]
    elif args.device == "cuda":
        runtimes = ([("tensorrt", "fp16"), ("tensorrt", "int8")] if comps.get("tensorrt") else []) + \
                   ([("onnxruntime", "fp32")] if comps.get("onnxruntime-cuda") else [])
    else:
        runtimes = [("onnxruntime", "fp32")]
    root = args.corpus_root or Path(tempfile.mkdtemp(prefix="sladd-gpu-corpus-"))
    rows = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        corpus = root / f"{w}x{h}"
        if not (corpus / "faces.json").is_file() or len(list(corpus.glob("*.jpg"))) != args.count:
            shutil.rmtree(corpus, ignore_errors=True)
            build(corpus, args.count, (h, w))
        files = sorted(corpus.glob("*.jpg"))
        truth = json.loads((corpus / "faces.json").read_text())
        dec = decode_only(files, args.device, args.batch, args.runs)
        for runtime, precision in runtimes:
            stages, dets = detect_and_mask(files, args.device, runtime, precision, args.runs, args.batch, corpus)
            found, total = recall(dets, files, truth)
            row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": {**machine(), **gpu_info(args.device)},
                   "device": args.device, "image": f"{w}x{h}", "images": len(files), "runtime": runtime,
                   "precision": precision, "decode": dec, **stages, "faces_found": found, "faces_total": total}
            if not args.no_end_to_end:
                row["end_to_end"] = end_to_end(corpus, args.device, runtime, precision, args.runs, args.batch, corpus)
                row["end_to_end_vs_decode"] = row["end_to_end"]["images_per_s"] / dec["dali"]["images_per_s"]
            rows.append(row)
            args.results.mkdir(parents=True, exist_ok=True)
            with open(args.results / "gpu.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
    text = report(rows)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "gpu-latest.md").write_text(text + "\n", encoding="utf-8")
    if args.corpus_root is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _ips(row: dict, key: str) -> str:
    return f"{row[key]['images_per_s']:.1f}" if key in row else "-"


def report(rows: list[dict]) -> str:
    if not rows:
        return "no results"
    m = rows[0]["machine"]
    head = (f"Machine: {m.get('gpu') or 'no GPU'} ({m.get('gpu_memory_gb', '-')} GiB), {m['cpu']}, {m['cores']} "
            f"cores; device {rows[0]['device']}")
    lines = [head, "",
             "| image | runtime | DALI decode img/s | TurboJPEG img/s | detect img/s | mask+copy+encode img/s "
             "| encode TurboJPEG img/s | encode nvImageCodec img/s | end to end img/s | e2e / decode | faces |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e2e = r.get("end_to_end", {}).get("images_per_s")
        ratio = r.get("end_to_end_vs_decode")
        lines.append(
            f"| {r['image']} | {r['runtime']} {r['precision']} | {r['decode']['dali']['images_per_s']:.1f} "
            f"| {r['decode']['turbojpeg (host, 1 thread)']['images_per_s']:.1f} | {r['detect']['images_per_s']:.1f} "
            f"| {r['mask+copy+encode']['images_per_s']:.1f} ({r['encoder']}) "
            f"| {_ips(r, 'encode (turbojpeg)')} | {_ips(r, 'encode (nvimagecodec)')} | {'-' if e2e is None else f'{e2e:.1f}'} "
            f"| {'-' if ratio is None else f'{ratio:.0%}'} | {r['faces_found']}/{r['faces_total']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
