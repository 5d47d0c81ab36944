"""Stage and pipeline benchmark on a road-style corpus (see benchmarks/corpus.py).

    python -m benchmarks.bench --corpus benchmarks/_corpus/2448 [--settings centerface-fast,centerface:1.0] [--runs 3]

Each stage is timed alone (after a warm-up) over the corpus, then `sladd run` end to end; the
report gives images/s, p50/p95 latency, the end-to-end / slowest-stage ratio, face recall per
inference scale, peak resident memory, and the machine and library versions. Results are
appended to benchmarks/results/results.jsonl and printed as a Markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from engine.codecs import TurboDecoder
from engine.runtimes.cpuinfo import cpu_model
from engine.config import load_config
from engine.decode import read_bytes
from engine.detect import Detector, build_models
from engine.runtimes import create_runtime
from engine.types import Job
from kernels import iou_matrix

RESULTS = Path(__file__).resolve().parent / "results" / "results.jsonl"


def _quality(path: Path):
    from engine.jpeg import estimate_quality, parse_jpeg
    return estimate_quality(parse_jpeg(path.read_bytes()).luma_table)


def machine() -> dict:
    cpu = cpu_model()
    versions = {}
    for pkg in ("numpy", "onnxruntime", "PyTurboJPEG", "onnx"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": None, "python": platform.python_version(), **versions}


def _stats(times: list[float]) -> dict:
    t = sorted(times)
    return {"images_per_s": len(t) / sum(t), "p50_ms": 1000 * statistics.median(t),
            "p95_ms": 1000 * t[min(len(t) - 1, int(round(0.95 * (len(t) - 1))))]}


def _job(p: Path) -> Job:
    return Job(path=p, key=p.name, output=p, archive=None, error_dir=p.parent, size=0, mtime_ns=0)


def stage_times(cfg, files: list[Path], runs: int) -> tuple[dict, list]:
    """Each stage alone, as the pipeline runs it: decode at the DCT scale the models need,
    detect, then mask + encode (with the full-size decode this needs when scale < 1)."""
    from engine.codecs import ScaledDecoder, create_decoder
    from engine.worker.write import Writer

    rt = create_runtime("onnxruntime", device="cpu", threads=cfg.engine.inference_threads)
    slots, names = build_models(cfg, rt)
    detector = Detector(cfg, slots, names)
    decoder = ScaledDecoder(create_decoder("turbojpeg", min_scale=1.0, max_pixels=cfg.engine.max_image_pixels),
                            detector.needed_scale)
    writer = Writer(cfg, decoder)
    datas = [read_bytes(p) for p in files]
    frames = [decoder.decode(_job(p), d) for p, d in zip(files, datas)]
    for f in frames[:2]:
        detector(f)                                       # warm-up: ORT's first run is slow
    out = {k: [] for k in ("read", "decode", "detect", "mask+encode", "encode")}
    dets = []
    dali = None
    try:
        from engine.codecs import create_decoder
        dali = create_decoder("dali", max_pixels=cfg.engine.max_image_pixels)
        dali.decode(_job(files[0]), datas[0])            # warm-up (builds the pipeline)
        out["decode (DALI CPU)"] = []
    except ImportError:
        pass
    for _ in range(runs):
        dets = []
        for p, d, f in zip(files, datas, frames):
            if dali is not None:
                t = time.perf_counter(); dali.decode(_job(p), d); out["decode (DALI CPU)"].append(time.perf_counter() - t)
            t = time.perf_counter(); read_bytes(p); out["read"].append(time.perf_counter() - t)
            t = time.perf_counter(); decoder.decode(_job(p), d); out["decode"].append(time.perf_counter() - t)
            t = time.perf_counter(); det = detector(f); out["detect"].append(time.perf_counter() - t)
            g = dataclasses.replace(f, pixels=f.pixels.copy(), timings={})   # render draws in place
            t = time.perf_counter(); writer.render(g, det); out["mask+encode"].append(time.perf_counter() - t)
            t = time.perf_counter(); writer.encoder.encode(f.pixels, f.quality or 90, f.subsampling)
            out["encode"].append(time.perf_counter() - t)
            dets.append(det)
    return {k: _stats(v) for k, v in out.items()}, dets


def recall(dets, files, truth, iou=0.3) -> tuple[int, int]:
    found = total = 0
    for det, p in zip(dets, files):
        gt = np.array(truth[p.name], np.float32).reshape(-1, 4)
        total += len(gt)
        if len(det) and len(gt):
            found += int((iou_matrix(gt, det.boxes) >= iou).any(1).sum())
    return found, total


def pipeline(corpus: Path, runs: int, config: Path) -> dict:
    """`sladd run` end to end in a child process (its own peak memory), median of `runs`."""
    import subprocess
    import sys

    rates, rss, cpu = [], 0, []
    for _ in range(runs):
        out = Path(tempfile.mkdtemp(prefix="sladd-bench-"))
        try:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "engine.cli", "run", "-i", str(corpus), "-o", str(out),
                            "-k", str(config), "-q"], check=True, capture_output=True)
            wall = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            rates.append(len(list(corpus.glob("*.jpg"))) / wall)
            used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            cpu.append(used / wall / (os.cpu_count() or 1))
            rss = max(rss, after.ru_maxrss / 1024)
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return {"images_per_s": statistics.median(rates), "runs": rates, "peak_rss_mb": rss,
            "cpu_utilisation": statistics.median(cpu),
            "note": "includes process start, model load and ORT warm-up"}


def main(argv=None):
    ap = argparse.ArgumentParser(description="sladd stage + pipeline benchmark")
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--settings", default="centerface-fast,centerface:1.0",
                    help="comma-separated CARD[:SCALE] settings to compare")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-pipeline", action="store_true")
    args = ap.parse_args(argv)
    files = sorted(args.corpus.glob("*.jpg"))
    truth = json.loads((args.corpus / "faces.json").read_text())
    h, w = TurboDecoder().tj.decode_header(files[0].read_bytes())[1::-1]
    rows = []
    for setting in args.settings.split(","):
        card, _, scale = setting.partition(":")
        spec = {"card": card, **({"scale": float(scale)} if scale else {})}
        overrides = {"models": [spec]}
        cfg, _ = load_config(overrides=overrides)
        cfg_file = Path(tempfile.mkdtemp(prefix="sladd-bench-cfg-")) / "bench.yml"
        cfg_file.write_text(json.dumps({**overrides, "remote_json": False}))
        stages, dets = stage_times(cfg, files, args.runs)
        found, total = recall(dets, files, truth)
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), "image": f"{w}x{h}",
               "images": len(files), "model": card, "scale": float(scale) if scale else None,
               "setting": setting, "precision": "fp32", "batch": cfg.engine.batch_size or 1,
               "quality": _quality(files[0]), "stages": stages,
               "faces_found": found, "faces_total": total}
        if not args.no_pipeline:
            row["pipeline"] = pipeline(args.corpus, args.runs, cfg_file)
            slowest = min(v["images_per_s"] for k, v in stages.items() if k != "decode (DALI CPU)")
            row["pipeline_vs_slowest_stage"] = row["pipeline"]["images_per_s"] / slowest
        rows.append(row)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with open(RESULTS, "a") as fh:
            fh.write(json.dumps(row) + "\n")
    text = report(rows)
    print(text)
    (RESULTS.parent / "latest.md").write_text(text + "\n", encoding="utf-8")
    write_csv(rows, RESULTS.parent / "latest.csv")
    plot(rows, RESULTS.parent / "stages.png")


def write_csv(rows, path: Path) -> None:
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "cpu", "cores", "image", "images", "setting", "stage", "images_per_s", "p50_ms", "p95_ms",
                    "faces_found", "faces_total"])
        for r in rows:
            stages = dict(r["stages"])
            if "pipeline" in r:
                stages["sladd run"] = {"images_per_s": r["pipeline"]["images_per_s"], "p50_ms": "", "p95_ms": ""}
            for name, st in stages.items():
                w.writerow([r["time"], r["machine"]["cpu"], r["machine"]["cores"], r["image"], r["images"],
                            r["setting"], name, st["images_per_s"], st["p50_ms"], st["p95_ms"], r["faces_found"],
                            r["faces_total"]])


def plot(rows, path: Path) -> None:
    """Bar chart of images/s per stage (log scale), one group per inference scale."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib missing: no plot)")
        return
    names = ["decode", "detect", "mask+encode"] + (["sladd run"] if "pipeline" in rows[0] else [])
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    width = 0.8 / len(rows)
    for k, r in enumerate(rows):
        vals = [r["stages"][n]["images_per_s"] if n in r["stages"] else r["pipeline"]["images_per_s"] for n in names]
        xs = [i + k * width for i in range(len(names))]
        ax.bar(xs, vals, width, label=f"{r['setting']} ({r['faces_found']}/{r['faces_total']} faces)")
    ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(names))], names)
    ax.set_yscale("log")
    ax.set_ylabel("images/s")
    m = rows[0]["machine"]
    ax.set_title(f"sladd, {rows[0]['image']} JPEGs, {m['cores']} CPU cores, no GPU", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pct(v) -> str:
    return f"{v:.0%}" if v else "-"


def _mb(v) -> str:
    return f"{v:.0f} MB" if v else "-"


def report(rows) -> str:
    m = rows[0]["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, no GPU; onnxruntime {m['onnxruntime']}, "
             f"PyTurboJPEG {m['PyTurboJPEG']}; {rows[0]['images']} images {rows[0]['image']}", "",
             "| setting | faces found | read | decode | detect | mask+encode | encode | decode (DALI CPU) | `sladd run` img/s | run / slowest stage | run CPU | run peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["stages"]
        cell = lambda k: f"{s[k]['images_per_s']:.1f} img/s (p95 {s[k]['p95_ms']:.0f} ms)"
        pipe = r.get("pipeline", {}).get("images_per_s")
        ratio = r.get("pipeline_vs_slowest_stage")
        lines.append(f"| {r['setting']} | {r['faces_found']}/{r['faces_total']} | {cell('read')} | {cell('decode')} | "
                     f"{cell('detect')} | {cell('mask+encode')} | {cell('encode')} | "
                     f"{cell('decode (DALI CPU)') if 'decode (DALI CPU)' in s else '-'} | "
                     f"{f'{pipe:.2f}' if pipe else '-'} | {f'{ratio:.0%}' if ratio else '-'} | "
                     f"{_pct(r.get('pipeline', {}).get('cpu_utilisation'))} | "
                     f"{_mb(r.get('pipeline', {}).get('peak_rss_mb'))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
