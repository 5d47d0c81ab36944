"""INT8 licence-plate model (card `plates`, family yolo-det) for the CPU: static QDQ quantisation
as CenterFace's (engine.models.quantize), calibrated on photographs of vehicles with plates that
registry packages ship (engine.models.plate_samples), checked against the fp32 model before it
is installed.

`sladd models fetch plates` builds `plates.int8.onnx` beside `plates.onnx` with a
`plates.int8.source.json` record. The graph is quantised as exported (dynamic batch, height and
width: the adapter runs crops at their own bucket sizes and the full-frame pass at up to 640 px),
calibrated on views of several sizes. The detection head's decoding (DFL softmax, anchor grid,
box arithmetic in input pixels, the concatenated output of boxes and scores) stays fp32: at 8
bits box coordinates of 0..640 px and scores of 0..1 share no useful scale. Only the backbone,
neck and the head's convolutions are quantised.

Calibration views, as the adapter sees them (yolo_blob, pad 114): the photographs fast-alpr's
car, open-image-models' car and Ultralytics' bus as vehicle crops at 1, 1/2 and 1/4 scale, padded
to the card's buckets; fast-alpr's and open-image-models' cars and the bare plate crops pasted
into road scenes (engine.demo.road_scene), seen whole at 640 px and in a 640 px native window;
two plain road scenes at 640 px. The check before install (held-out: OpenCV's motion-blurred
plate, the calibration cars pasted at other scales and places, the plate crops elsewhere, and
the plate-free photographs): the run's own detector (NanoDet for vehicles when installed, the
plate search with full-frame tiles) with the INT8 file finds every plate the fp32 file finds,
and no more false-positive plate boxes. Without the sample photographs nothing is built.
"""
from __future__ import annotations

import logging
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from engine.models.plate_samples import NO_PLATE_PHOTOS, PLATE_CROPS, PLATE_PHOTOS, sample_dir

__all__ = ["build_yolo_int8", "check_sets", "head_tail", "plate_detector", "plates_found"]

LOG = logging.getLogger("sladd")

SCENE_HW = (2048, 2448)
RECIPE = {"format": "QDQ", "weights": "int8 per channel", "activations": "uint8 per tensor",
          "calibration": "MinMax", "fp32": "detection head decoding (DFL, anchors, output concat)",
          "views": "vehicle photos as crops at 1, 1/2, 1/4; photos and plate crops pasted in road scenes; "
                   "road scenes; 160-640 px"}
CAL_PHOTOS = ("fastalpr_test_image.png", "oim_car_image.webp")
CAL_VEHICLES = CAL_PHOTOS + ("bus.jpg",)


def _load(d: Path, name: str) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(d / name).convert("RGB"))


def compose(px: np.ndarray, plates, scale: float, seed: int):
    """`px` resized by `scale`, pasted into a 2448x2048 road scene at a seeded place in its lower
    part; returns (scene, plate boxes, pasted rectangle)."""
    from PIL import Image

    from engine.demo import road_scene

    h, w = SCENE_HW
    rng = np.random.default_rng(seed)
    img = road_scene(h, w, seed)
    ph, pw = round(px.shape[0] * scale), round(px.shape[1] * scale)
    small = px if scale == 1 else np.asarray(Image.fromarray(px).resize((pw, ph), Image.LANCZOS))
    x = int(rng.integers(0, w - pw))
    y = int(rng.integers(int(h * 0.4), h - ph))
    img[y:y + ph, x:x + pw] = small
    boxes = [(x + a * scale, y + b * scale, x + c * scale, y + d * scale) for a, b, c, d in plates]
    return img, boxes, (x, y, x + pw, y + ph)


def _full_view(img: np.ndarray, card) -> np.ndarray:
    """The whole image as the dynamic-size adapter runs it: shrunk to fit input.size, padded to 32."""
    from engine.models.yolo_det import STRIDE, yolo_blob

    h, w = img.shape[:2]
    s = min(1.0, card.input.size[0] / h, card.input.size[1] / w)
    hw = tuple(math.ceil(max(1, round(n * s)) / STRIDE) * STRIDE for n in (h, w))
    return yolo_blob([img], hw, card.input.pad_value, s)[0]


def _crop_views(img: np.ndarray, rect, card) -> list[np.ndarray]:
    """A search region as the plate search runs it: grown by the margin, at each of the card's
    crop scales, padded to its buckets."""
    from engine.models.yolo_det import yolo_blob
    from engine.search import bucket_crop, crop_scales, region_rects

    sp = card.search
    out = []
    for r in region_rects(np.asarray([rect], np.float32), sp.margin, *img.shape[:2]):
        for s in crop_scales(r, 1.0, sp.scales, sp.buckets[-1], sp.min_side):
            canvas, _ = bucket_crop(img, r, 1.0, sp.buckets, card.input.pad_value, s)
            out.append(yolo_blob([canvas], canvas.shape[:2], card.input.pad_value, 1.0)[0])
    return out


def _window(img: np.ndarray, rect, side: int = 640) -> np.ndarray:
    cx, cy = (rect[0] + rect[2]) // 2, (rect[1] + rect[3]) // 2
    top = max(0, min(img.shape[0] - side, cy - side // 2))
    left = max(0, min(img.shape[1] - side, cx - side // 2))
    return img[top:top + side, left:left + side]


def calibration_views(d: Path, card) -> list[np.ndarray]:
    from engine.demo import road_scene

    views = []
    for name in CAL_VEHICLES:                                  # a vehicle crop as the search sees it
        px = _load(d, name)
        views += _crop_views(px, (0, 0, px.shape[1], px.shape[0]), card)
    for k, name in enumerate(CAL_PHOTOS + tuple(PLATE_CROPS)):  # pasted: the full-frame pass, a tile
        px = _load(d, name)
        img, _, rect = compose(px, PLATE_PHOTOS.get(name, []), 1.0, 11 + k)
        views += [_full_view(img, card), _full_view(_window(img, rect), card)]
    views += [_full_view(road_scene(*SCENE_HW, seed), card) for seed in (13, 14)]
    return views


def check_sets(d: Path) -> list[tuple[str, np.ndarray, list]]:
    """Held-out images: (name, pixels, true plate boxes); none is a calibration view."""
    photos = {n: (_load(d, n), b) for n, b in PLATE_PHOTOS.items()}
    motion = "licenseplate_motion.jpg"
    out = [(motion, *photos[motion])]
    for name, scale, seed in ((motion, 1.0, 31), (motion, 2.0, 32), ("fastalpr_test_image.png", 0.5, 41),
                              ("oim_car_image.webp", 0.25, 41), ("fastalpr_test_image.png", 2.0, 42),
                              ("oim_car_image.webp", 2.0, 42)):
        out.append((f"{name}@{scale}_s{seed}", *compose(*photos[name], scale, seed)[:2]))
    for name in PLATE_CROPS:
        px = _load(d, name)
        out.append((f"{name}_s51", *compose(px, [(0, 0, px.shape[1], px.shape[0])], 1.0, 51)[:2]))
    out += [(n, _load(d, n), []) for n in NO_PLATE_PHOTOS if n not in CAL_VEHICLES]
    return out


def plate_detector(card, model: Path, int8: bool = False, tiles: bool = True):
    """The run's own plate search with `model` as the card's file: near the vehicles NanoDet
    finds (when installed), the full-frame pass and (`tiles`) native-resolution tiles."""
    from engine.config import load_config
    from engine.detect import Detector
    from engine.models import ModelNotFound, load_card, resolve_model
    from engine.runtimes import create_runtime
    from engine.slots import build_models, int8_card

    models = [{"card": card.name if card.path is None else str(card.path), "file": str(model)}]
    try:
        resolve_model(load_card("nanodet"))
        models.insert(0, {"card": "nanodet", "classes": []})
    except ModelNotFound:
        LOG.info("INT8 check of %s without NanoDet (not installed): full frame and tiles only", card.name)
    cfg, _ = load_config(None, overrides={"models": models, "plates": {"full_frame_tiles": tiles}})
    slots, names = build_models(cfg, create_runtime("onnxruntime", device="cpu", precision="fp32"))
    if int8:
        slots[-1].card = int8_card(slots[-1].card)
    return Detector(cfg, slots, names)


def _covered(truth, boxes, frac: float = 0.6) -> bool:
    x1, y1, x2, y2 = [int(round(v)) for v in truth]
    m = np.zeros((max(1, y2 - y1), max(1, x2 - x1)), bool)
    for a, b, c, e in boxes:
        m[max(0, int(b) - y1):max(0, int(np.ceil(e)) - y1), max(0, int(a) - x1):max(0, int(np.ceil(c)) - x1)] = True
    return bool(m.mean() >= frac)


def plates_found(dets, truths) -> tuple[list[bool], int]:
    """(per true plate: the plate boxes cover >= 60 % of it; plate boxes overlapping no true plate)."""
    boxes = [b for b, c in zip(np.asarray(dets.boxes).tolist(), dets.classes) if dets.names[c] == "plate"]
    fp = sum(not any(min(b[2], t[2]) > max(b[0], t[0]) and min(b[3], t[3]) > max(b[1], t[1]) for t in truths)
             for b in boxes)
    return [_covered(t, boxes) for t in truths], int(fp)


def _check(card, fp32: Path, int8: Path, d: Path) -> dict:
    from engine.types import Frame

    d32, d8 = plate_detector(card, fp32), plate_detector(card, int8, int8=True)
    c = {"images": 0, "plates": 0, "fp32": 0, "int8": 0, "fp_fp32": 0, "fp_int8": 0}
    lost = []
    for name, px, truths in check_sets(d):
        frame = Frame(job=None, data=b"", pixels=px, scale=1.0, full_size=px.shape[:2], orientation=1,
                      segments=[], quality=None, subsampling=2)
        (ha, fa), (hb, fb) = plates_found(d32(frame), truths), plates_found(d8(frame), truths)
        c["images"] += 1
        c["plates"] += len(truths)
        c["fp32"], c["int8"] = c["fp32"] + sum(ha), c["int8"] + sum(hb)
        c["fp_fp32"], c["fp_int8"] = c["fp_fp32"] + fa, c["fp_int8"] + fb
        lost += [name] * sum(a and not b for a, b in zip(ha, hb))
    if lost or c["fp_int8"] > c["fp_fp32"]:
        why = f"misses plates the fp32 model finds ({', '.join(lost)})" if lost else "adds false positives"
        raise RuntimeError(f"INT8 {card.name} model {why} ({c}): not installed, the fp32 model stays in use")
    return c


def head_tail(model) -> list[str]:
    """The nodes of an Ultralytics detection head that decode boxes (not its convolutions): the
    nodes of the output's module (`/model.N/`) outside its `cv*` branches."""
    out = model.graph.output[0].name
    producer = next(n for n in model.graph.node if out in n.output)
    parts = producer.name.split("/")
    if len(parts) < 3 or not parts[1].startswith("model."):
        raise RuntimeError(f"not an Ultralytics export (output made by {producer.name!r}): no INT8 build")
    head = f"/{parts[1]}/"
    return [n.name for n in model.graph.node
            if n.name.startswith(head)
            and not (n.name[len(head):].startswith("cv") and n.op_type in ("Conv", "Sigmoid", "Mul"))]


def build_yolo_int8(card, fp32: Path, dest: Path, samples: Path | None = None, *, download: bool = True) -> Path:
    """Quantise `fp32` (the card's installed model) into `dest`, check it, install it with its
    record. `samples`: a folder of the sample photographs (default: engine.models.plate_samples
    fetches them, if `download`). Raises RuntimeError (SamplesUnavailable included) when nothing is installed."""
    import onnx

    from engine.models.int8_build import install, quantize_views

    if card.search is None:
        raise RuntimeError(f"card {card.name}: INT8 builds of yolo-det models are calibrated for plate search cards")
    d = sample_dir(samples, download=download)
    model = onnx.load(str(fp32))
    work = Path(tempfile.mkdtemp(prefix="sladd-int8-"))
    try:
        views = calibration_views(d, card)
        out = work / dest.name        # its run-time copies (models/derived) are then the installed file's
        LOG.info("quantising %s to INT8 (%d calibration views)", fp32.name, len(views))
        quantize_views(fp32, out, model.graph.input[0].name, views, RECIPE, head_tail(model))
        counts = _check(card, fp32, out, d)
        LOG.info("INT8 check: %s", counts)
        return install(out, fp32, dest, RECIPE, {card.name: counts})
    finally:
        shutil.rmtree(work, ignore_errors=True)
