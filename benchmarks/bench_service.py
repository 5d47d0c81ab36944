"""The service under load, beside the batch run, and lossless patching beside re-encoding.

    python -m benchmarks.bench_service [--corpus benchmarks/_corpus/2448] [--clients 1,4,16] [--requests 48]

1. Lossless vs re-encode (in process, after a warm-up): the same decoded frames and detections
   rendered both ways — mask + lossless transform with the touched MCUs patched, against mask +
   TurboJPEG encode at the input's quality — median ms per image, output sizes.
2. `sladd run` on the same images (child process), with `output.lossless` false and true: whole
   (start and model loading included) and steady (run on 3 copies minus run on 1 copy).
3. `sladd serve` on 127.0.0.1 (child process, localhost only): 1, 4, 16 concurrent clients each
   making Panoramax's call (multipart `picture`, Accept: multipart/form-data) in a loop over the
   corpus; images/s, p50/p95 latency, the mean batch size the service formed.

Rows are appended to benchmarks/results/service.jsonl with the machine and versions; the plot
goes to benchmarks/results/service.svg (text, so the repository holds no binary for it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

# Runs `sladd` with the engine/lossless.py hook in Renderer.render when render.py does not have
# it yet (it is the 3-line hook described in engine/lossless.py's render_lossless).
_HOOKED_CLI = """
import sys
from engine.worker import render
from engine.lossless import render_lossless
if "render_lossless" not in open(render.__file__, encoding="utf-8").read():
    _plain = render.Renderer.render
    def _render(self, frame, dets, need_pixels=False):
        done = render_lossless(self, frame, dets, need_pixels) if self.cfg.output.lossless else None
        return done if done is not None else _plain(self, frame, dets, need_pixels)
    render.Renderer.render = _render
from engine.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def machine() -> dict:
    from benchmarks.bench import machine as base

    out = base()
    for pkg in ("fastapi", "uvicorn", "requests"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


# --- 1. lossless vs re-encode ------------------------------------------------------------------------
def lossless_vs_reencode(files: list[Path], cfg, runs: int) -> dict:
    from engine.lossless import patch_render
    from engine.worker.build import build_worker
    from engine.worker.memory import MemoryWorker

    class _NoTree:
        refusal = staticmethod(lambda path: None)

    worker, cfg = build_worker(cfg, _NoTree())
    mem = MemoryWorker(worker, cfg)
    renderer = worker.writer().renderer
    times = {"lossless": [], "reencode": []}
    sizes = {"lossless": [], "reencode": [], "input": []}
    touched = []
    for f in files:
        data = f.read_bytes()
        dets = mem.detect_batch([mem.decode(data)])[0]
        for i in range(runs + 1):                       # the first round warms up
            frame = mem.decode(data)
            t = time.perf_counter()
            res = patch_render(renderer, frame, dets)
            t_l = time.perf_counter() - t
            frame = mem.decode(data)
            t = time.perf_counter()
            out, _, _ = renderer.render(frame, dets)
            t_r = time.perf_counter() - t
            if i:
                times["lossless"].append(t_l)
                times["reencode"].append(t_r)
        sizes["lossless"].append(len(res.data))
        sizes["reencode"].append(len(out))
        sizes["input"].append(len(data))
        mh, mw = res.mcu
        w, h = frame.full_size[1], frame.full_size[0]
        touched.append(len(res.mcus) * mh * mw / (w * h) if res.mcus is not None else 1.0)
    lo, re_ = statistics.median(times["lossless"]), statistics.median(times["reencode"])
    return {"kind": "render", "lossless_ms": lo * 1e3, "reencode_ms": re_ * 1e3, "ratio": lo / re_,
            "lossless_p95_ms": _pct(times["lossless"], 95) * 1e3, "reencode_p95_ms": _pct(times["reencode"], 95) * 1e3,
            "bytes_input": statistics.mean(sizes["input"]), "bytes_lossless": statistics.mean(sizes["lossless"]),
            "bytes_reencode": statistics.mean(sizes["reencode"]), "touched_fraction": statistics.mean(touched),
            "images": len(files), "runs": runs}


# --- 2. the batch run ------------------------------------------------------------------------------
def _run_once(files: list[Path], lossless: bool, copies: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="sladd-bench-service-"))
    try:
        inp = tmp / "in"
        inp.mkdir()
        for k in range(copies):
            for f in files:
                shutil.copyfile(f, inp / f"{k}_{f.name}")
        cfg = tmp / "run.yml"
        cfg.write_text(f"output:\n  lossless: {'true' if lossless else 'false'}\nremote_json: false\n")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", _HOOKED_CLI, "run", "-i", str(inp), "-o", str(tmp / "out"),
                        "-k", str(cfg), "--profile", "faces-plates", "--device", "cpu", "-q"],
                       check=True, capture_output=True, cwd=ROOT)
        return time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def batch_runs(files: list[Path], rounds: int = 2) -> list[dict]:
    """`sladd run` over the corpus once and three times, re-encoding and lossless alternately,
    best of `rounds` each (the cores may be shared): images/s whole (process start and model
    loading included) and steady (the two extra copies over the extra time)."""
    walls: dict = {}
    for _ in range(rounds):
        for lossless in (False, True):
            for copies in (1, 3):
                w = _run_once(files, lossless, copies)
                walls[lossless, copies] = min(w, walls.get((lossless, copies), w))
    n = len(files)
    return [{"kind": "batch", "lossless": lossless, "images": 3 * n, "images_per_s": 3 * n / walls[lossless, 3],
             "steady_images_per_s": 2 * n / (walls[lossless, 3] - walls[lossless, 1]), "rounds": rounds,
             "note": "sladd run; images_per_s includes process start and model loading, steady does not"}
            for lossless in (False, True)]


# --- 3. the service under load ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def service_load(files: list[Path], clients: list[int], requests_per_level: int) -> list[dict]:
    import requests

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bodies = [f.read_bytes() for f in files]
    rows = []
    try:
        deadline = time.time() + 300
        while True:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("sladd serve did not become ready")
            time.sleep(0.5)
        for body in bodies[:2]:                                          # warm-up
            requests.post(url + "/blur/", files={"picture": ("w.jpg", body, "image/jpeg")}).raise_for_status()
        for c in clients:
            total = max(requests_per_level, 2 * c)
            latencies, errors, lock, counter = [], [], threading.Lock(), iter(range(total))
            before = requests.get(url + "/metrics").text

            def client():
                with requests.Session() as s:
                    while True:
                        with lock:
                            i = next(counter, None)
                        if i is None:
                            return
                        t = time.perf_counter()
                        r = s.post(url + "/blur/", files={"picture": ("p.jpg", bodies[i % len(bodies)], "image/jpeg")},
                                   headers={"Accept": "multipart/form-data"}, timeout=600)
                        with lock:
                            (latencies if r.status_code == 200 else errors).append(time.perf_counter() - t)
            threads = [threading.Thread(target=client) for _ in range(c)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            after = requests.get(url + "/metrics").text
            batches = _metric(after, "sladd_batch_size_count") - _metric(before, "sladd_batch_size_count")
            pictures = _metric(after, "sladd_batch_size_sum") - _metric(before, "sladd_batch_size_sum")
            rows.append({"kind": "service", "clients": c, "requests": total, "errors": len(errors),
                         "images_per_s": len(latencies) / wall, "p50_s": _pct(latencies, 50),
                         "p95_s": _pct(latencies, 95), "mean_batch": pictures / batches if batches else None})
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    return rows


# --- report -----------------------------------------------------------------------------------------
def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    svc = [r for r in rows if r["kind"] == "service"]
    batch = [r for r in rows if r["kind"] == "batch"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    xs = [str(r["clients"]) for r in svc]
    ax.bar(xs, [r["images_per_s"] for r in svc], color="#4c72b0", label="sladd serve")
    for r, style in zip(batch, ("--", ":")):
        ax.axhline(r["steady_images_per_s"], color="#dd8452", linestyle=style,
                   label=f"sladd run ({'lossless' if r['lossless'] else 're-encode'})")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("images/s")
    ax2 = ax.twinx()
    ax2.plot(xs, [r["p50_s"] for r in svc], "o-", color="#55a868", label="p50 latency")
    ax2.plot(xs, [r["p95_s"] for r in svc], "s--", color="#c44e52", label="p95 latency")
    ax2.set_ylabel("latency (s)")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="upper left")
    ax.set_title("2448x2048 JPEGs, Panoramax's call, localhost", fontsize=9)
    fig.tight_layout()
    plt.rcParams["svg.hashsalt"] = "sladd"              # reproducible ids in the SVG
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def report(rows: list[dict]) -> str:
    out = []
    for r in rows:
        if r["kind"] == "render":
            out += ["| render step | ms/image (median) | p95 | mean bytes |", "|---|---|---|---|",
                    f"| mask + lossless patch | {r['lossless_ms']:.1f} | {r['lossless_p95_ms']:.1f} | "
                    f"{r['bytes_lossless']:.0f} |",
                    f"| mask + re-encode | {r['reencode_ms']:.1f} | {r['reencode_p95_ms']:.1f} | "
                    f"{r['bytes_reencode']:.0f} |",
                    f"\nlossless / re-encode: {r['ratio']:.2f}x; touched MCUs: "
                    f"{100 * r['touched_fraction']:.1f}% "
                    f"of the pixels; input {r['bytes_input']:.0f} bytes\n"]
    out += ["| | clients | images/s | p50 | p95 | mean batch |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "batch":
            out.append(f"| sladd run ({'lossless' if r['lossless'] else 're-encode'}), steady (whole) | - | "
                       f"{r['steady_images_per_s']:.2f} ({r['images_per_s']:.2f}) | | | |")
        if r["kind"] == "service":
            mb = f"{r['mean_batch']:.2f}" if r["mean_batch"] else "-"
            out.append(f"| sladd serve | {r['clients']} | {r['images_per_s']:.2f} | {r['p50_s']:.2f} s | "
                       f"{r['p95_s']:.2f} s | {mb} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=None,
                    help="folder of JPEGs (default: 12 built with benchmarks.corpus)")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=48, help="requests per concurrency level (at least 2 per client)")
    ap.add_argument("--runs", type=int, default=3, help="renders per image for the lossless comparison")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: render,batch,service")
    args = ap.parse_args(argv)
    from engine.service import service_config

    tmp = None
    corpus = args.corpus
    if corpus is None:
        from benchmarks.corpus import build

        tmp = Path(tempfile.mkdtemp(prefix="sladd-corpus-"))
        corpus = build(tmp, 12, (2048, 2448))
    files = sorted(corpus.glob("*.jpg"))
    skip = set(filter(None, args.skip.split(",")))
    info = {"machine": machine(), "corpus": str(corpus), "images": len(files), "time": time.strftime("%Y-%m-%d %H:%M")}
    rows = []
    try:
        if "render" not in skip:
            rows.append(lossless_vs_reencode(files, service_config(None, None, {"engine": {"device": "cpu"}})[0],
                                             args.runs))
        if "batch" not in skip:
            rows += batch_runs(files)
        if "service" not in skip:
            rows += service_load(files, [int(c) for c in args.clients.split(",")], args.requests)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    shown = rows
    if "batch" in skip and (RESULTS / "service.jsonl").is_file():
        # The plot and table compare with the batch run: the latest one recorded, if not run now.
        old = [json.loads(line) for line in (RESULTS / "service.jsonl").read_text().splitlines() if line.strip()]
        shown = [r for r in old if r["kind"] == "batch"][-2:] + rows
    if any(r["kind"] == "service" for r in rows):
        try:
            plot(shown, RESULTS / "service.svg")
        except ImportError:
            print("matplotlib is not installed: no plot", file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "service.jsonl", "a", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({**info, **r}) + "\n")
    print(json.dumps(info["machine"]))
    print(report(shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
