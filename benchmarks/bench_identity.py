"""Identity leak: is an anonymised face still recognisable? sladd and deface side by side.

    python -m benchmarks.bench_identity [--count 8] [--out benchmarks/results/identity.md]

For every true face of a road-style corpus (benchmarks/corpus.py: real faces pasted at known
boxes, here 40-300 px tall), dlib's face descriptor (ResNet, the model the face_recognition
package uses: PyPI `face_recognition_models`, CC0, run with `dlib-bin`) is computed on the
original and on each tool's output, both at the original face's 68 landmarks, so that the
anonymised face is looked at exactly where the face was. A distance below 0.6 is dlib's "same
person": the face is still recognisable. Also reported: faces anonymised (mean absolute change
in the box > 12 grey levels, as benchmarks/peer.py counts), identity matches, the minimum and
median distance, and whether dlib's own HOG detector still finds a face there.

dlib runs in its own environment (.cache/identity_venv); deface in the peer's
(benchmarks/peer.py). A deliberately weak setting (a 3 px blur) is included as a control: it
should leak, and does.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.corpus import build
from benchmarks.peer import peer_python, run_deface

ROOT = Path(__file__).resolve().parent.parent
DLIB_VENV = Path(os.environ.get("SLADD_DLIB_VENV", ROOT / ".cache" / "identity_venv"))
DLIB_PACKAGES = ["dlib-bin==20.0.1.post1", "face_recognition_models==0.3.0", "numpy", "pillow"]

# Runs inside DLIB_VENV: reads [{"orig", "outs": {tool: path}, "boxes"}] on stdin, writes
# {tool: [[distance, redetected], ...]} (one pair per face, in order) on stdout.
_DESCRIBE = r"""
import json, sys
import dlib, numpy as np
import face_recognition_models as frm
from PIL import Image
shape = dlib.shape_predictor(frm.pose_predictor_model_location())
net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
hog = dlib.get_frontal_face_detector()
def load(p):
    return np.ascontiguousarray(np.asarray(Image.open(p).convert("RGB")))
def found_near(img, box):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    X1, Y1 = max(0, int(x1 - w)), max(0, int(y1 - h))
    crop = np.ascontiguousarray(img[Y1:int(y2 + h), X1:int(x2 + w)])
    up = 2 if max(w, h) < 80 else (1 if max(w, h) < 200 else 0)
    for r in hog(crop, up):
        cx, cy = X1 + r.center().x, Y1 + r.center().y
        if x1 <= cx <= x2 and y1 <= cy <= y2:
            return True
    return False
out = {}
for item in json.load(sys.stdin):
    a = load(item["orig"])
    marks = [shape(a, dlib.rectangle(*[int(round(v)) for v in b])) for b in item["boxes"]]
    ref = [np.array(net.compute_face_descriptor(a, m)) for m in marks]
    for tool, path in item["outs"].items():
        b = load(path)
        for box, m, d0 in zip(item["boxes"], marks, ref):
            d = float(np.linalg.norm(np.array(net.compute_face_descriptor(b, m)) - d0))
            out.setdefault(tool, []).append([d, found_near(b, box)])
json.dump(out, sys.stdout)
"""


def dlib_python() -> Path:
    py = DLIB_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DLIB_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *DLIB_PACKAGES], check=True)
    return py


def run_sladd(corpus: Path, config: str) -> tuple[float, dict]:
    out = Path(tempfile.mkdtemp(prefix="identity-sladd-"))
    cfg = out.parent / (out.name + ".yml")
    cfg.write_text("remote_json: false\n" + config)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "engine.cli", "run", "-i", str(corpus), "-o", str(out), "-k", str(cfg), "-q"],
                   check=True, capture_output=True)
    return time.perf_counter() - t, {f.name: out / f.name for f in corpus.glob("*.jpg")}


def anonymised(corpus: Path, outs: dict, truth: dict) -> list[bool]:
    flags = []
    for name, boxes in truth.items():
        a = np.asarray(Image.open(corpus / name).convert("RGB")).astype(np.float32)
        b = np.asarray(Image.open(outs[name]).convert("RGB")).astype(np.float32)
        for x1, y1, x2, y2 in boxes:
            ys, xs = slice(int(y1), int(np.ceil(y2))), slice(int(x1), int(np.ceil(x2)))
            flags.append(bool(np.abs(a[ys, xs] - b[ys, xs]).mean() > 12))
    return flags


TOOLS = {
    "sladd default (centerface-fast, normalized_gray_blur)": ("sladd", "models: [{card: centerface-fast}]\n"),
    "sladd mask.mode: blur": ("sladd", "models: [{card: centerface-fast}]\nmask: {mode: blur}\n"),
    "sladd mask.mode: pixelate": ("sladd", "models: [{card: centerface-fast}]\nmask: {mode: pixelate}\n"),
    "control: sladd with a 3 px blur (weak on purpose)": (
        "sladd", "models: [{card: centerface-fast}]\nmask: {mode: blur, blur: 1, min_kernel_fraction: 0.0}\n"),
    "deface 1.5.0 default (blur)": ("deface", []),
    "deface 1.5.0 --replacewith mosaic": ("deface", ["--replacewith", "mosaic"]),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=8, help="corpus images (2448x2048, 3 faces each)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results/identity.md")
    args = ap.parse_args(argv)
    corpus = build(ROOT / ".cache" / "identity_corpus", args.count, (2048, 2448), faces_per_image=3, seed=7,
                   face_heights=(40, 60, 90, 140, 200, 300))
    truth = json.loads((corpus / "faces.json").read_text())
    outs, secs, flags = {}, {}, {}
    for tool, (kind, opt) in TOOLS.items():
        if kind == "sladd":
            secs[tool], outs[tool] = run_sladd(corpus, opt)
        else:
            secs[tool], outs[tool] = _deface(corpus, opt)
        flags[tool] = anonymised(corpus, outs[tool], truth)
    request = [{"orig": str(corpus / n), "boxes": b, "outs": {t: str(outs[t][n]) for t in TOOLS}} for n, b in truth.items()]
    res = subprocess.run([str(dlib_python()), "-c", _DESCRIBE], input=json.dumps(request), capture_output=True,
                         text=True, check=True)
    dist = json.loads(res.stdout)
    heights = [round(b[3] - b[1]) for boxes in truth.values() for b in boxes]
    lines = [f"{len(truth)} images 2448x2048, {len(heights)} faces {min(heights)}-{max(heights)} px tall "
             f"(benchmarks/corpus.py, seed 7); {platform.machine()}, {os.cpu_count()} cores; dlib "
             f"{DLIB_PACKAGES[0].split('==')[1]}, face_recognition_models 0.3.0. Distance: dlib's descriptor of "
             "the output against the original's at the original's landmarks (< 0.6: same person).", "",
             "| tool | faces anonymised | identity matches (< 0.6) | min distance | median distance | "
             "dlib still detects the face | s/image |", "|---|---|---|---|---|---|---|"]
    for tool in TOOLS:
        d = np.array([x[0] for x in dist[tool]])
        found = sum(x[1] for x in dist[tool])
        lines.append(f"| {tool} | {sum(flags[tool])}/{len(d)} | {int((d < 0.6).sum())}/{len(d)} | {d.min():.3f} | "
                     f"{np.median(d):.3f} | {found}/{len(d)} | {secs[tool] / len(truth):.2f} |")
    small = [i for i, h in enumerate(heights) if h < 100]
    lines += ["", f"Faces under 100 px tall: {len(small)}; identity matches among them per tool: "
              + "; ".join(f"{t.split(' (')[0]}: {sum(dist[t][i][0] < 0.6 for i in small)}" for t in TOOLS)]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


def _deface(corpus: Path, extra: list[str]) -> tuple[float, dict]:
    py = peer_python()
    if not extra:
        return run_deface(py, corpus, None)
    work = Path(tempfile.mkdtemp(prefix="identity-deface-"))
    files = sorted(corpus.glob("*.jpg"))
    for f in files:
        (work / f.name).write_bytes(f.read_bytes())
    t = time.perf_counter()
    subprocess.run([str(py), "-m", "deface.deface", *[str(work / f.name) for f in files], "--backend", "onnxrt", *extra],
                   check=True, capture_output=True)
    return time.perf_counter() - t, {f.name: work / f"{f.stem}_anonymized.jpg" for f in files}


if __name__ == "__main__":
    main()
