"""Side-by-side comparison with the peer `deface` 1.5.0 on the same images, in the same run.

    python -m benchmarks.peer --corpus benchmarks/_corpus/2448 [--deface-scale 1224x1024]

deface is installed into its own environment (benchmarks/_peer_venv, with onnx and onnxruntime
so that it uses ONNX Runtime, not OpenCV's DNN fallback); it is never a sladd dependency.
Both tools anonymise a copy of the corpus; a true face counts as anonymised when the mean
absolute change inside its box exceeds 12 grey levels; fidelity is the PSNR outside the faces.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PEER_VENV = Path(os.environ.get("SLADD_PEER_VENV", Path(__file__).resolve().parent / "_peer_venv"))


def peer_python() -> Path:
    py = PEER_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "deface==1.5.0", "onnx", "onnxruntime"], check=True)
    return py


def faces_anonymised(src: Path, out: Path, truth: dict) -> tuple[int, int, list[float]]:
    found = total = 0
    psnrs = []
    for name, boxes in truth.items():
        a = np.asarray(Image.open(src / name).convert("RGB")).astype(np.float32)
        b = np.asarray(Image.open(out[name] if isinstance(out, dict) else out / name).convert("RGB")).astype(np.float32)
        outside = np.ones(a.shape[:2], bool)
        for x1, y1, x2, y2 in boxes:
            total += 1
            ys, xs = slice(int(y1), int(np.ceil(y2))), slice(int(x1), int(np.ceil(x2)))
            found += int(np.abs(a[ys, xs] - b[ys, xs]).mean() > 12)
            h, w = y2 - y1, x2 - x1                       # exclude the head around the face too
            outside[max(0, int(y1 - h)):int(y2 + h), max(0, int(x1 - w)):int(x2 + w)] = False
        mse = float(((a - b)[outside] ** 2).mean())
        psnrs.append(99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse))
    return found, total, psnrs


def run_deface(py: Path, corpus: Path, scale: str | None) -> tuple[float, dict]:
    work = Path(tempfile.mkdtemp(prefix="peer-deface-"))
    files = sorted(corpus.glob("*.jpg"))
    for f in files:
        shutil.copy(f, work / f.name)
    cmd = [str(py), "-m", "deface.deface", *[str(work / f.name) for f in files], "--backend", "onnxrt"]
    if scale:
        cmd += ["--scale", scale]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    seconds = time.perf_counter() - t
    return seconds, {f.name: work / f"{f.stem}_anonymized.jpg" for f in files}


def run_sladd(corpus: Path, extra: list[str], card: str | None = "centerface", config: str = "") -> tuple[float, Path]:
    """`card`: faces only with that card; None: the default profile (faces, people, vehicles and
    plates, as installed). `config`: more YAML lines."""
    out = Path(tempfile.mkdtemp(prefix="peer-sladd-"))
    cfg = out.parent / (out.name + ".yml")
    cfg.write_text("remote_json: false\n" + (f"models: [{{card: {card}}}]\n" if card else "") + config)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "engine.cli", "run", "-i", str(corpus), "-o", str(out), "-k", str(cfg),
                    "-q", *extra], check=True, capture_output=True)
    return time.perf_counter() - t, out


def main(argv=None):
    ap = argparse.ArgumentParser(description="sladd vs deface, side by side")
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--deface-scale", default="1224x1024", help="second deface setting (its --scale)")
    args = ap.parse_args(argv)
    truth = json.loads((args.corpus / "faces.json").read_text())
    n = len(truth)
    py = peer_python()
    rows = []
    t, outs = run_deface(py, args.corpus, None)
    rows.append(("deface 1.5.0 default (full resolution)", t, faces_anonymised(args.corpus, outs, truth)))
    t, outs = run_deface(py, args.corpus, args.deface_scale)
    rows.append((f"deface 1.5.0 --scale {args.deface_scale}", t, faces_anonymised(args.corpus, outs, truth)))
    t, out = run_sladd(args.corpus, [])
    rows.append(("sladd, card centerface (default: native resolution)", t, faces_anonymised(args.corpus, out, truth)))
    t, out = run_sladd(args.corpus, [], card="centerface-fast", config="engine: {precision: fp32}\n")
    rows.append(("sladd faces only, centerface-fast, fp32", t, faces_anonymised(args.corpus, out, truth)))
    t, out = run_sladd(args.corpus, [], card="centerface-fast")
    rows.append(("sladd faces only (centerface-fast; INT8 where the CPU has VNNI/AMX)", t,
                 faces_anonymised(args.corpus, out, truth)))
    t, out = run_sladd(args.corpus, [], card=None)
    rows.append(("sladd default profile (faces, people, vehicles, plates)", t, faces_anonymised(args.corpus, out, truth)))
    base = rows[0][1]
    print(f"{n} images from {args.corpus}; every command timed whole (process start and model load included)\n")
    print("| tool | s/image | images/s | vs deface default | faces anonymised | PSNR outside faces (median) |")
    print("|---|---|---|---|---|---|")
    for name, secs, (found, total, psnr) in rows:
        print(f"| {name} | {secs / n:.2f} | {n / secs:.2f} | {base / secs:.1f}x | {found}/{total} | "
              f"{np.median(psnr):.1f} dB |")


if __name__ == "__main__":
    main()
