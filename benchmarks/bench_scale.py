"""Scale benchmark: a synthetic tree of N small JPEGs, run by `sladd run` with the local and the
Ray executor, as a user runs it (a separate process).

    python -m benchmarks.bench_scale --n 10000,100000 [--executors local,ray] [--workers 2]
                                     [--models faces|default] [--root benchmarks/_scale]

For each N and executor it measures: first-run images/s (the run's own clock and the whole
process), the driver's peak RSS and each Ray actor's peak RSS (VmHWM, sampled every 0.5 s), a
rerun of the finished tree (images/s skipped; target >= 5,000/s), the ledger's size per image,
and the driver's per-image bookkeeping (ledger, metadata, write incl. fsync) from the run's
summary. Results go to benchmarks/results/scale.jsonl and a Markdown table on stdout; `--plot`
draws benchmarks/results/scale.png.

The tree generator writes a few distinct 64x48 road-style JPEGs under 1,000 files per folder, so
it scales to 10^6 files (about 1.5 KB each) in minutes. `--models faces` (default) runs the face
model only: the fixed cost per image is then mostly bookkeeping, which is what scales; `default`
adds NanoDet (about 34 ms per image at 416x416 on 2 cores).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from PIL import Image

from engine.demo import road_scene
from engine.driver.reaper import ray_actors

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "scale.jsonl"
PER_FOLDER = 1000


def make_tree(root: Path, n: int) -> Path:
    """N JPEGs of 64x48 (8 distinct ones, written as bytes), 1,000 per folder; reused if complete."""
    tree = root / f"tree_{n}"
    marker = tree / ".complete"
    if marker.exists():
        return tree
    blobs = []
    for seed in range(8):
        buf = io.BytesIO()
        Image.fromarray(road_scene(48, 64, seed)).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    for i in range(n):
        d = tree / f"f{i // PER_FOLDER:05d}"
        if i % PER_FOLDER == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"img_{i:07d}.jpg").write_bytes(blobs[i % len(blobs)])
    marker.write_text(str(n))
    return tree


def _vmhwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_once(cmd: list[str]) -> dict:
    """Run `cmd`; wall seconds, the summary's figures, peak RSS of the driver and of each actor."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peaks = {"driver": 0, "actors": {}}

    def sample():
        while p.poll() is None:
            peaks["driver"] = max(peaks["driver"], _vmhwm(p.pid))
            for a in ray_actors(p.pid):
                peaks["actors"][a] = max(peaks["actors"].get(a, 0), _vmhwm(a))
            time.sleep(0.5)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = p.communicate()
    wall = time.perf_counter() - t0
    t.join()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{err[-2000:]}")
    m = re.search(r"Total time spent: ([\d.]+) s \(([\d.]+) images/s\)", err)
    per = re.search(r"Per image \(ms[^:]*\): (.*)", err)
    skipped = re.search(r"Skipped, done earlier: (\d+)", err)
    stages = dict((k, float(v)) for k, v in re.findall(r"(\w+) ([\d.]+)", per.group(1))) if per else {}
    return {"wall_s": wall, "run_s": float(m.group(1)) if m else None, "skipped": int(skipped.group(1)) if skipped else 0,
            "driver_peak_mb": peaks["driver"] / 2**20,
            "actor_peak_mb": max(peaks["actors"].values(), default=0) / 2**20, "actors": len(peaks["actors"]),
            "stage_ms": stages}


def bench(n: int, executor: str, workers: int, models: str, root: Path) -> dict:
    tree = make_tree(root, n)
    out = root / f"out_{n}_{executor}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = root / f"cfg_{models}.yml"
    cfg.write_text("models: [{card: centerface-fast}]\n" if models == "faces" else "{}\n")
    cmd = [sys.executable, "-m", "engine.cli", "run", "-i", str(tree), "-o", str(out), "-k", str(cfg), "-q",
           "--executor", executor]
    if executor == "ray":
        cmd += ["--workers", str(workers)]
    first = run_once(cmd)
    rerun = run_once(cmd)
    ledger = out / ".sladd" / "ledger.sqlite"
    size = sum(p.stat().st_size for p in ledger.parent.glob("ledger.sqlite*"))
    st = first["stage_ms"]
    row = {
        "n": n, "executor": executor, "workers": workers if executor == "ray" else 1, "models": models,
        "first_images_per_s": n / first["run_s"], "first_wall_s": first["wall_s"],
        "driver_peak_mb": first["driver_peak_mb"], "actor_peak_mb": first["actor_peak_mb"],
        "rerun_skipped": rerun["skipped"], "rerun_images_per_s": n / rerun["wall_s"], "rerun_wall_s": rerun["wall_s"],
        "ledger_bytes_per_image": size / n,
        "bookkeeping_ms_per_image": sum(st.get(k, 0.0) for k in ("ledger", "metadata", "write")),
        "stage_ms": st,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
    }
    shutil.rmtree(out, ignore_errors=True)
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ex in sorted({r["executor"] for r in rows}):
        rs = sorted((r for r in rows if r["executor"] == ex), key=lambda r: r["n"])
        ns = [r["n"] for r in rs]
        axes[0].plot(ns, [r["first_images_per_s"] for r in rs], "o-", label=ex)
        axes[1].plot(ns, [r["driver_peak_mb"] for r in rs], "o-", label=f"{ex} driver")
        if ex == "ray":
            axes[1].plot(ns, [r["actor_peak_mb"] for r in rs], "s--", label="ray actor")
        axes[2].plot(ns, [r["rerun_images_per_s"] for r in rs], "o-", label=ex)
    for ax, title in zip(axes, ("first run, images/s", "peak RSS, MB", "rerun (all skipped), images/s")):
        ax.set_xscale("log")
        ax.set_xlabel("images in the tree")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="10000", help="comma-separated tree sizes")
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", choices=["faces", "default"], default="faces")
    ap.add_argument("--root", type=Path, default=ROOT / "_scale")
    ap.add_argument("--plot", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    for n in (int(x) for x in args.n.split(",")):
        for ex in args.executors.split(","):
            row = bench(n, ex, args.workers, args.models, args.root)
            rows.append(row)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            with open(RESULTS, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), file=sys.stderr, flush=True)
    print("| N | executor | first run img/s | driver peak MB | actor peak MB | rerun img/s | ledger B/img | "
          "bookkeeping ms/img |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['executor']} | {r['first_images_per_s']:.0f} | {r['driver_peak_mb']:.0f} | "
              f"{r['actor_peak_mb']:.0f} | {r['rerun_images_per_s']:.0f} | {r['ledger_bytes_per_image']:.0f} | "
              f"{r['bookkeeping_ms_per_image']:.2f} |")
    if args.plot:
        plot(rows, ROOT / "results" / "scale.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
