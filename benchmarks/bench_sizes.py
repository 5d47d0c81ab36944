"""How the cost of `sladd run` grows with image size (5, 12, 32 MP) and with the number of faces.

    python -m benchmarks.bench_sizes [--count 6] [--runs 3] [--profiles faces,default]
                                     [--sizes 2448x2048,4000x3000,6928x4616] [--size-faces 3]
                                     [--faces 0,3,10,30] [--faces-size 2448x2048]
                                     [--out-dir benchmarks/_corpus/sizes] [--results benchmarks/results]

Two series of road-style corpora from benchmarks/corpus.py (matplotlib's Grace Hopper portrait
pasted at known boxes, faces 30-120 px tall): every size in --sizes with --size-faces faces per
image, and --faces-size images with each count in --faces. Corpora are written under --out-dir
and reused when present (same image count); an image in which a portrait was pasted over an
earlier face (the generator gives up finding a clear place in a crowded image: 30 faces at 5 MP)
is drawn again with another seed, so every true face is a whole face to find. Each corpus
is run by `sladd run` as a user runs it (`python -m engine.cli run -i IN -o OUT -q`, a child
process, timed whole) with each profile:

- ``faces``: faces only, ``-k`` a file with ``models: [{card: centerface-fast}]``;
- ``default``: no ``-k``: the default profile (CenterFace, and NanoDet and the plate model when
  they have been fetched to the models cache; the row says which were there).

Per-image time, the figure the table leads with: (T_N - T_1) / (N - 1), where T_N is the whole
command's wall time on the N-image corpus and T_1 on a corpus of its first image alone (each the
median of --runs runs, after one untimed run of the one-image corpus that compiles bytecode and
brings the model files and the images into the page cache). The difference removes what a run
pays once (interpreter start, imports, model load, the first image's warm-up) and keeps
everything an image costs: decode, detection, masking, encoding, metadata, write. The run's own
"Total time spent" line was not chosen: it is printed to 0.1 s, which is too coarse for a few
images, and it starts after the models are loaded but still contains the first inference's
warm-up. It is kept in the JSON (``run_s``) for reference, as is the whole command over N
(``whole_s_per_image``, the way benchmarks.peer counts, process start included). The difference
is only as good as the process start is steady (about +-0.1 s on a shared 2-core machine): use
images whose cost is well above that, --count 6 or more and --runs 3 (the default); a tiny image
can come out near zero or even negative.

Also per row: the detect stage in ms per image from the run's summary line ("Per image (ms,
...): ... detect X", summed over threads), taken the same way, (N x detect_N - detect_1) / (N - 1),
so the first inference's warm-up is left out too (``detect_ms_run``: the N-image run's own
average, warm-up included; ``stage_ms``/``stage_ms_run``: every stage), the child's peak RSS
(GNU time's %M, the largest over all its runs), and the faces anonymised k/n, counted with
benchmarks.peer.faces_anonymised (mean absolute change > 12 grey levels inside each true box).

Derived figures, per profile, by least squares: per-image time = a + b x MP over the size series
("cost per MP"), and = c + d x faces over the faces series ("added cost per face"); the same
for the detect stage. Results in --results (benchmarks/results): a Markdown report and
sizes.jsonl (one JSON line per row, then one line per profile with ``"kind": "derived"``), both
named by STEM and both rewritten by every run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.corpus import build
from benchmarks.peer import faces_anonymised
from engine.runtimes.cpuinfo import cpu_model

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
DEFAULT_SIZES = "2448x2048,4000x3000,6928x4616"
DEFAULT_FACES = "0,3,10,30"
PROFILES = ("faces", "default")
FACES_CFG = "models: [{card: centerface-fast}]\n"
STEM = "sizes"                  # the report's file names: STEM + .md (Markdown) and .jsonl


def report_paths(results: Path) -> tuple[Path, Path]:
    """The Markdown report and the JSON lines under `results`."""
    return results / f"{STEM}.md", results / f"{STEM}.jsonl"


def parse_size(s: str) -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    w, h = (int(v) for v in s.lower().split("x"))
    return w, h


# Where the face lies inside the pasted portrait (benchmarks.corpus), to find the portrait's box.
_FACE = (175 / 512, 131 / 600, 357 / 512, 336 / 600)


def covered(boxes: list) -> int:
    """How many true faces a later-pasted portrait overlaps. benchmarks.corpus gives up placing a
    portrait clear of the others after 100 tries and pastes it anyway: in a crowded image (30
    faces at 5 MP) an earlier face is then partly painted over and no longer a face to find."""
    fx0, fy0, fx1, fy1 = _FACE
    ports = []
    for x1, y1, x2, y2 in boxes:
        pw, ph = (x2 - x1) / (fx1 - fx0), (y2 - y1) / (fy1 - fy0)
        ports.append((x1 - fx0 * pw, y1 - fy0 * ph, x1 - fx0 * pw + pw, y1 - fy0 * ph + ph))
    return sum(any(not (x2 < a or c < x1 or y2 < b or d < y1) for a, b, c, d in ports[i + 1:])
               for i, (x1, y1, x2, y2) in enumerate(boxes))


def corpus(out_dir: Path, size: tuple[int, int], faces: int, count: int, face_heights) -> tuple[Path, Path]:
    """The N-image corpus (benchmarks.corpus.build) and a one-image corpus (its first image),
    built once and reused. An image where a portrait covers an earlier face is drawn again,
    alone, with another seed (deterministic: 10000 + 100 x index + try) until none does."""
    w, h = size
    base = out_dir / f"{w}x{h}_f{faces}_n{count}"
    full, one = base / "all", base / "one"
    truth_file = full / "faces.json"
    if not (truth_file.exists() and len(json.loads(truth_file.read_text())) == count):
        shutil.rmtree(base, ignore_errors=True)
        build(full, count, (h, w), faces, face_heights=tuple(face_heights))
        truth = json.loads(truth_file.read_text())
        for i, name in enumerate(sorted(truth)):
            for k in range(200):
                if not covered(truth[name]):
                    break
                scratch = base / "redraw"
                shutil.rmtree(scratch, ignore_errors=True)
                build(scratch, 1, (h, w), faces, seed=10000 + 100 * i + k, face_heights=tuple(face_heights))
                ((drawn, boxes),) = json.loads((scratch / "faces.json").read_text()).items()
                os.replace(scratch / drawn, full / name)
                truth[name] = boxes
                shutil.rmtree(scratch)
            else:
                raise RuntimeError(f"{w}x{h} with {faces} faces: portraits keep covering faces; "
                                   "use smaller --face-heights or fewer faces")
        truth_file.write_text(json.dumps(truth, indent=1))
    first = sorted(json.loads(truth_file.read_text()))[0]
    if not (one / first).exists():
        shutil.rmtree(one, ignore_errors=True)
        one.mkdir(parents=True)
        shutil.copy2(full / first, one / first)
    return full, one


def _vmhwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_sladd(inp: Path, cfg: Path | None, work: Path, keep: bool = False) -> dict:
    """One whole `sladd run` in a child process: wall seconds, peak RSS, the summary's figures.

    Peak RSS comes from /usr/bin/time -f %M (GNU time): wait4's ru_maxrss seen from here would
    not do, as Linux carries the parent's high-water mark across fork/vfork and exec, so every
    child would report at least this process's peak. Without GNU time, VmHWM is sampled."""
    out = Path(tempfile.mkdtemp(prefix="out-", dir=work))
    cmd = [sys.executable, "-m", "engine.cli", "run", "-i", str(inp), "-o", str(out), "-q"]
    if cfg is not None:
        cmd += ["-k", str(cfg)]
    rss_file = out.parent / (out.name + ".rss")
    gnu_time = Path("/usr/bin/time")
    if gnu_time.exists():
        cmd = [str(gnu_time), "-f", "%M", "-o", str(rss_file), *cmd]
    peak = [0]
    with tempfile.TemporaryFile("w+", dir=work) as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        if not gnu_time.exists():
            def sample():
                while p.poll() is None:
                    peak[0] = max(peak[0], _vmhwm(p.pid))
                    time.sleep(0.05)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
        p.wait()
        wall = time.perf_counter() - t
        err.seek(0)
        text = err.read()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{text[-3000:]}")
    if gnu_time.exists():
        peak[0] = int(rss_file.read_text().split()[-1])      # KiB
        rss_file.unlink()
    total = re.search(r"Total time spent: ([\d.]+) s", text)
    per = re.search(r"Per image \(ms[^:]*\): (.*)", text)
    objects = re.search(r"Objects found: (.*)", text)
    stages = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)", per.group(1))} if per else {}
    res = {"wall_s": wall, "peak_rss_mb": peak[0] / 1024,
           "run_s": float(total.group(1)) if total else None, "stage_ms": stages,
           "objects": objects.group(1).strip() if objects else "", "out": out}
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return res


def models_present() -> list[str]:
    from engine.models.resolve import models_dir

    d = models_dir()
    return sorted(p.stem for p in d.glob("*.onnx")) if d.is_dir() else []


def measure(full: Path, one: Path, cfg: Path | None, runs: int, work: Path) -> dict:
    truth = json.loads((full / "faces.json").read_text())
    n = len(truth)
    big, small = [], []
    found = total = None
    # One untimed run first: bytecode compiled, the model files and the corpus in the page cache.
    run_sladd(one, cfg, work)
    for i in range(runs):
        r = run_sladd(full, cfg, work, keep=(i == 0))
        if i == 0:
            found, total, _ = faces_anonymised(full, r["out"], truth)
            shutil.rmtree(r["out"], ignore_errors=True)
        big.append(r)
        if n > 1:
            small.append(run_sladd(one, cfg, work))
    t_n = statistics.median(r["wall_s"] for r in big)
    t_1 = statistics.median(r["wall_s"] for r in small) if small else None
    per_image = (t_n - t_1) / (n - 1) if t_1 is not None else None
    stage = {k: statistics.median(r["stage_ms"].get(k, 0.0) for r in big) for k in big[0]["stage_ms"]}
    # The stages the same way as the time: (N x mean over N - the first image's) / (N - 1).
    stage_1 = {k: statistics.median(r["stage_ms"].get(k, 0.0) for r in small) for k in stage} if small else None
    marginal = {k: (n * v - stage_1[k]) / (n - 1) for k, v in stage.items()} if small else None
    run_s = [r["run_s"] for r in big if r["run_s"] is not None]
    return {"images": n, "runs": runs, "wall_s_n": t_n, "wall_s_1": t_1, "per_image_s": per_image,
            "whole_s_per_image": t_n / n, "run_s": statistics.median(run_s) if run_s else None,
            "detect_ms": (marginal or stage).get("detect"), "detect_ms_run": stage.get("detect"),
            "stage_ms": marginal or stage, "stage_ms_run": stage,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in big + small),
            "faces_found": found, "faces_total": total, "objects": big[0]["objects"]}


def fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least squares y = a + b x; None with fewer than two distinct x."""
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return my - b * mx, b


def derive(rows: list[dict], profile: str, size_faces: int, faces_size: tuple[int, int]) -> dict:
    by_size = sorted((r for r in rows if r["profile"] == profile and "size" in r["series"]), key=lambda r: r["mp"])
    by_faces = sorted((r for r in rows if r["profile"] == profile and "faces" in r["series"]),
                      key=lambda r: r["faces_per_image"])
    d = {"kind": "derived", "profile": profile, "size_series_faces": size_faces,
         "faces_series_size": f"{faces_size[0]}x{faces_size[1]}"}
    ms = lambda v: None if v is None else v * 1000  # noqa: E731
    f = fit([r["mp"] for r in by_size], [ms(r["per_image_s"]) for r in by_size])
    d["ms_per_mp"], d["ms_fixed_size_fit"] = (f[1], f[0]) if f else (None, None)
    f = fit([r["mp"] for r in by_size], [r["detect_ms"] for r in by_size])
    d["detect_ms_per_mp"] = f[1] if f else None
    f = fit([r["faces_per_image"] for r in by_faces], [ms(r["per_image_s"]) for r in by_faces])
    d["ms_per_face"], d["ms_no_face_fit"] = (f[1], f[0]) if f else (None, None)
    f = fit([r["faces_per_image"] for r in by_faces], [r["detect_ms"] for r in by_faces])
    d["detect_ms_per_face"] = f[1] if f else None
    return d


def _f(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(rows: list[dict], derived: list[dict], meta: dict) -> str:
    head = ("| profile | image | MP | faces/image | s/image | MP/s | whole command s/image | detect ms/image | "
            "peak RSS MB | faces anonymised |\n|---|---|---|---|---|---|---|---|---|---|\n")

    def line(r):
        return (f"| {r['profile']} | {r['width']}x{r['height']} | {r['mp']:.1f} | {r['faces_per_image']} | "
                f"{_f(r['per_image_s'], '.3f')} | {_f(r['mp_per_s'], '.1f')} | {r['whole_s_per_image']:.3f} | "
                f"{_f(r['detect_ms'], '.0f')} | {r['peak_rss_mb']:.0f} | {r['faces_found']}/{r['faces_total']} |\n")

    out = [f"# sladd run: cost by image size and by number of faces\n\n"
           f"{meta['machine']}; {meta['date']}; {meta['images']} images per corpus, median of {meta['runs']} "
           f"run(s); models in the cache: {', '.join(meta['models']) or 'none'}.\n\n"
           "s/image = (T_N - T_1)/(N - 1) from whole-command wall times (process start, model load and "
           "the first image's warm-up excluded); whole command s/image = T_N/N (all included, as "
           "benchmarks.peer counts); detect = the run's own detect-stage time per image (summed over "
           "threads), by the same difference; peak RSS of the `sladd run` process.\n"]
    sizes = [r for r in rows if "size" in r["series"]]
    if sizes:
        out.append(f"\n## By image size ({meta['size_faces']} faces per image)\n\n" + head
                   + "".join(line(r) for r in sizes))
    faces = [r for r in rows if "faces" in r["series"]]
    if faces:
        out.append(f"\n## By number of faces ({meta['faces_size']} images)\n\n" + head
                   + "".join(line(r) for r in faces))
    out.append("\n## Derived (least squares over each series)\n\n")
    for d in derived:
        out.append(f"- {d['profile']}: cost per MP {_f(d['ms_per_mp'], '.0f')} ms "
                   f"(detect {_f(d['detect_ms_per_mp'], '.0f')} ms); added cost per face "
                   f"{_f(d['ms_per_face'], '.1f')} ms (detect {_f(d['detect_ms_per_face'], '.1f')} ms); "
                   f"fixed part {_f(d['ms_no_face_fit'], '.0f')} ms per {d['faces_series_size']} image "
                   f"without faces\n")
    return "".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=6, help="images per corpus (>= 2 for the per-image time)")
    ap.add_argument("--runs", type=int, default=3, help="runs per corpus and profile; the median is kept")
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="WxH,... for the size series ('' for none)")
    ap.add_argument("--size-faces", type=int, default=3, help="faces per image in the size series")
    ap.add_argument("--faces", default=DEFAULT_FACES, help="faces per image for the faces series ('' for none)")
    ap.add_argument("--faces-size", default="2448x2048", help="WxH of the faces series")
    ap.add_argument("--profiles", default="faces,default", help="faces, default or both")
    ap.add_argument("--face-heights", default="30,36,42,56,80,120", help="face heights (px) to draw from")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "_corpus" / "sizes", help="corpora (cached)")
    ap.add_argument("--results", type=Path, default=ROOT / "results", help="where the report and its JSON lines go")
    args = ap.parse_args(argv)
    profiles = [p for p in args.profiles.split(",") if p]
    bad = set(profiles) - set(PROFILES)
    if bad:
        ap.error(f"unknown profile(s): {', '.join(sorted(bad))}")
    heights = [int(v) for v in args.face_heights.split(",")]
    faces_size = parse_size(args.faces_size)
    configs: dict[tuple, set] = {}
    for s in filter(None, args.sizes.split(",")):
        configs.setdefault((parse_size(s), args.size_faces), set()).add("size")
    for f in filter(None, args.faces.split(",")):
        configs.setdefault((faces_size, int(f)), set()).add("faces")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-sizes-"))
    cfgs = {"faces": work / "faces.yml", "default": None}
    cfgs["faces"].write_text(FACES_CFG)
    meta = {"machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "date": _dt.datetime.now().isoformat(timespec="seconds"), "images": args.count, "runs": args.runs,
            "models": models_present(), "size_faces": args.size_faces,
            "faces_size": f"{faces_size[0]}x{faces_size[1]}"}
    rows = []
    try:
        for (size, faces), series in configs.items():
            full, one = corpus(args.out_dir, size, faces, args.count, heights)
            for profile in profiles:
                m = measure(full, one, cfgs[profile], args.runs, work)
                mp = size[0] * size[1] / 1e6
                row = {"kind": "row", "profile": profile, "series": sorted(series), "width": size[0],
                       "height": size[1], "mp": mp, "faces_per_image": faces, **m,
                       "mp_per_s": mp / m["per_image_s"] if m["per_image_s"] else None,
                       "machine": meta["machine"], "date": meta["date"], "models": meta["models"]}
                rows.append(row)
                print(f"{profile:8s} {size[0]}x{size[1]} faces {faces:3d}: {_f(m['per_image_s'], '.3f')} s/image, "
                      f"detect {_f(m['detect_ms'], '.0f')} ms, RSS {m['peak_rss_mb']:.0f} MB, "
                      f"faces {m['faces_found']}/{m['faces_total']}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    derived = [derive(rows, p, args.size_faces, faces_size) for p in profiles]
    args.results.mkdir(parents=True, exist_ok=True)
    md = table(rows, derived, meta)
    md_path, jsonl_path = report_paths(args.results)
    md_path.write_text(md)
    with open(jsonl_path, "w") as fh:
        for r in rows + derived:
            fh.write(json.dumps(r) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
