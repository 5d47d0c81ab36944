"""Licence plates: recall, false positives and cost per image on the CPU, for each place the
plate model looks (the whole image at its 640 px input, crops around the vehicles NanoDet finds,
crops plus full-frame tiles), then the whole `sladd run` in both profiles as a user sees it.

    python -m benchmarks.bench_plates [--out benchmarks/results/plates.md]

Photographs come from registry packages (benchmarks/plates_data.py), as they are and pasted at
native and 2x scale into 2448x2048 road scenes (engine.demo.road_scene); bare plate crops
(no vehicle around them) pasted at native scale show what only the tiles can find. A plate
counts as found when the plate boxes (as masked: enlarged) cover >= 60 % of it; a plate box
that overlaps no true plate is a false positive. `sladd run` is judged like the faces are
(benchmarks/peer.py): a plate is anonymised when the mean absolute change inside it exceeds 12
grey levels; fidelity is the PSNR outside the plates. Needs `sladd models fetch nanodet plates`.
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

from benchmarks.plates_data import NO_PLATE_PHOTOS, PLATE_CROPS, PLATE_PHOTOS, fetch_data
from engine.demo import jpeg_with_exif, road_scene

SIZE = (2048, 2448)


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def compose(px: np.ndarray, plates, scale: float, seed: int):
    """`px` resized by `scale` and pasted into a road scene at a seeded place in its lower part."""
    h, w = SIZE
    rng = np.random.default_rng(seed)
    img = road_scene(h, w, seed)
    ph, pw = round(px.shape[0] * scale), round(px.shape[1] * scale)
    small = np.asarray(Image.fromarray(px).resize((pw, ph), Image.LANCZOS))
    x = int(rng.integers(0, w - pw))
    y = int(rng.integers(int(h * 0.4), h - ph))
    img[y:y + ph, x:x + pw] = small
    return img, [(x + a * scale, y + b * scale, x + c * scale, y + d * scale) for a, b, c, d in plates]


def image_sets(data: Path) -> dict[str, list]:
    """{set name: [(name, pixels, true plate boxes)]}."""
    photos = {n: (_load(data / n), boxes) for n, boxes in PLATE_PHOTOS.items()}
    sets = {"photos as they are": [(n, px, b) for n, (px, b) in photos.items()]}
    sets["pasted, native scale"] = [(f"{n}@1x_s{s}", *compose(px, b, 1.0, s))
                                    for n, (px, b) in photos.items() for s in (1, 2)]
    sets["pasted, 2x scale"] = [(f"{n}@2x", *compose(px, b, 2.0, 3)) for n, (px, b) in photos.items()]
    small = [("fastalpr_test_image.png", 0.5), ("fastalpr_test_image.png", 0.6), ("oim_car_image.webp", 0.25),
             ("oim_car_image.webp", 0.3)]                  # plates 41, 49, 44 and 53 px wide
    sets["pasted, shrunk (plates 41-53 px)"] = [(f"{n}@{f}", *compose(photos[n][0], photos[n][1], f, 4))
                                               for n, f in small]
    crops = [(n, _load(data / n)) for n in PLATE_CROPS]
    sets["bare plate crops pasted (no vehicle)"] = [
        (f"{n}_s{s}", *compose(px, [(0, 0, px.shape[1], px.shape[0])], 1.0, 10 + s)) for n, px in crops for s in (1, 2)]
    sets["no plates (signs, text, scenes)"] = ([(n, _load(data / n), []) for n in NO_PLATE_PHOTOS]
                                              + [(f"road_scene_{s}", road_scene(*SIZE, s), []) for s in (20, 21)])
    return sets


def _covered(truth, boxes, frac: float = 0.6) -> bool:
    x1, y1, x2, y2 = [int(round(v)) for v in truth]
    m = np.zeros((max(1, y2 - y1), max(1, x2 - x1)), bool)
    for a, b, c, d in boxes:
        m[max(0, int(b) - y1):max(0, int(np.ceil(d)) - y1), max(0, int(a) - x1):max(0, int(np.ceil(c)) - x1)] = True
    return m.mean() >= frac


def _overlaps(box, truths) -> bool:
    return any(min(box[2], t[2]) > max(box[0], t[0]) and min(box[3], t[3]) > max(box[1], t[1]) for t in truths)


def _frame(px):
    from engine.types import Frame, Job
    job = Job(path=None, key="k", output=None, archive=None, error_dir=None, size=0, mtime_ns=0)
    return Frame(job=job, data=b"", pixels=px, scale=1.0, full_size=px.shape[:2], orientation=1, segments=[],
                 quality=90, subsampling=2)


def _variant(tmp: Path, name: str, search: dict | None) -> str:
    """The shipped plates card with its `search` section changed (None: removed)."""
    import yaml
    from engine.models.card import CARDS_DIR
    data = yaml.safe_load((CARDS_DIR / "plates.yml").read_text())
    if search is None:
        data.pop("search")
    else:
        data["search"].update(search)
    data["name"] = name
    p = tmp / f"{name}.yml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def settings(tmp: Path) -> dict[str, dict]:
    vehicles = {"card": "nanodet", "classes": []}
    search = [vehicles, {"card": "plates"}]
    return {
        "vehicles only (NanoDet; the baseline for cost)": {"models": [vehicles]},
        "full frame only (the whole image at 640 px)": {"models": [{"card": _variant(tmp, "p-full", None)}]},
        "crops around vehicles only": {"models": [vehicles, {"card": _variant(tmp, "p-crops", {"full_frame": False})}]},
        "crops + full frame (default)": {"models": search},
        "crops + full frame + full_frame_tiles": {"models": search, "plates": {"full_frame_tiles": True}},
        "default profile: plate or its vehicle masked": {"models": [{"card": "nanodet"}, {"card": "plates"}]},
    }


def evaluate(sets: dict, cfg_data: dict, repeat: int = 1, any_box: bool = False) -> dict:
    """Per image set: plates found (by a plate box; `any_box`: by any masked box, vehicles
    too), false-positive plate boxes, and detect seconds per image."""
    from engine.config import Config
    from engine.detect import Detector, build_models
    from engine.runtimes import create_runtime

    cfg = Config(**cfg_data)
    det = Detector(cfg, *build_models(cfg, create_runtime("onnxruntime", device="cpu")))
    det(_frame(sets["pasted, native scale"][0][1]))                # warm-up: sessions, allocations
    out = {}
    for set_name, items in sets.items():
        found = total = fp = 0
        secs = []
        for _, px, truths in items:
            for _ in range(repeat):
                t = time.perf_counter()
                d = det(_frame(px))
                secs.append(time.perf_counter() - t)
            boxes = d.boxes.tolist()
            plate_boxes = [b for b, c in zip(boxes, d.classes) if d.names[c] == "plate"]
            judged = boxes if any_box else plate_boxes
            total += len(truths)
            found += sum(_covered(t, judged) for t in truths)
            fp += sum(not _overlaps(b, truths) for b in plate_boxes)
        out[set_name] = {"found": int(found), "total": total, "fp": int(fp), "images": len(items),
                         "median_s": float(np.median(secs)), "p95_s": float(np.percentile(secs, 95))}
    return out


def sladd_run(sets: dict, profile: str, tmp: Path) -> dict:
    """`sladd run --profile P` over the pasted and as-is photographs, written as JPEGs."""
    src, out = tmp / f"in-{profile}", tmp / f"out-{profile}"
    src.mkdir()
    truth = {}
    for set_name in ("photos as they are", "pasted, native scale", "pasted, 2x scale", "pasted, shrunk (plates 41-53 px)"):
        for name, px, boxes in sets[set_name]:
            fname = name.replace(".", "_") + ".jpg"
            jpeg_with_exif(px, src / fname, quality=92)
            truth[fname] = boxes
    cfg = tmp / f"{profile}.yml"
    cfg.write_text("remote_json: false\n")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "engine.cli", "run", "-i", str(src), "-o", str(out), "-k", str(cfg),
                    "--profile", profile, "-q"], check=True, capture_output=True)
    secs = time.perf_counter() - t
    found = total = 0
    psnrs = []
    for name, boxes in truth.items():
        a = _load(src / name).astype(np.float32)
        b = _load(out / name).astype(np.float32)
        outside = np.ones(a.shape[:2], bool)
        for x1, y1, x2, y2 in boxes:
            ys, xs = slice(int(y1), int(np.ceil(y2))), slice(int(x1), int(np.ceil(x2)))
            total += 1
            found += int(np.abs(a[ys, xs] - b[ys, xs]).mean() > 12)
            outside[ys, xs] = False
        mse = float(((a - b)[outside] ** 2).mean())
        psnrs.append(99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse))
    return {"found": int(found), "total": total, "images": len(truth), "s_per_image": secs / len(truth),
            "psnr_min": float(np.min(psnrs)), "psnr_median": float(np.median(psnrs))}


def report(results: dict, runs: dict, sets: dict) -> str:
    import onnxruntime
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU; "
             f"onnxruntime {onnxruntime.__version__}; plate model: safelicensing 1.0.3 YOLOv8n "
             f"(`sladd models fetch plates`), card `plates` (score >= 0.25); NanoDet-m for vehicles.", ""]
    names = list(sets)
    lines.append("| where the plate model looks | " + " | ".join(names) + " | plate cost per image (s, median) |")
    lines.append("|---|" + "---|" * (len(names) + 1))
    base = results["vehicles only (NanoDet; the baseline for cost)"]
    for setting, res in results.items():
        if setting.startswith("vehicles only"):
            continue
        cells = []
        for n in names:
            r = res[n]
            cells.append(f"{r['fp']} false positives in {r['images']} images" if not r["total"]
                         else f"{r['found']}/{r['total']} found, {r['fp']} FP")
        pasted = "pasted, native scale"
        cost = res[pasted]["median_s"] - (0 if setting.startswith("full frame only") else base[pasted]["median_s"])
        lines.append(f"| {setting} | " + " | ".join(cells) + f" | {cost:.3f} |")
    lines += ["", "Cost: median seconds of the detect stage per 2448x2048 image with one pasted vehicle, "
              "less the NanoDet pass it needs anyway (full-frame row: the plate model alone).", "",
              "`sladd run` (JPEG in, JPEG out) over the photographs as they are, pasted and shrunk:", "",
              "| profile | plates anonymised | PSNR outside the plates (min / median) | s/image (whole run) |",
              "|---|---|---|---|"]
    for profile, r in runs.items():
        lines.append(f"| {profile} | {r['found']}/{r['total']} | {r['psnr_min']:.1f} / {r['psnr_median']:.1f} dB | "
                     f"{r['s_per_image']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results/plates.md")
    ap.add_argument("--repeat", type=int, default=1, help="timed passes per image")
    args = ap.parse_args(argv)
    sets = image_sets(fetch_data())
    with tempfile.TemporaryDirectory(prefix="bench-plates-") as td:
        tmp = Path(td)
        results = {name: evaluate(sets, cfg, args.repeat, any_box=name.startswith("default profile"))
                   for name, cfg in settings(tmp).items()}
        runs = {p: sladd_run(sets, p, tmp) for p in ("default", "faces-plates")}
    text = report(results, runs, sets)
    args.out.write_text(text)
    (args.out.with_suffix(".json")).write_text(json.dumps({"detect": results, "run": runs}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
