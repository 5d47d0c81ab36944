"""INT8 builds for the CPU: static quantisation with ONNX Runtime (`quantize_views`), checked
against the fp32 model before it is installed (`install`); `build_int8` picks the family's
recipe: CenterFace here, calibrated on road scenes with faces; the licence-plate YOLO detector in
engine.models.quantize_yolo, calibrated on registry photographs of vehicles with plates.

`sladd models fetch centerface` (and `centerface-fast`, same file) builds `centerface.int8.onnx`
beside the fp32 file, with a `centerface.int8.source.json` record; nothing is committed, nothing
is downloaded. What it is: the QDQ format (QuantizeLinear/DequantizeLinear pairs), weights INT8
per output channel, activations UINT8 per tensor, ranges from min/max over the calibration set,
opset raised to 13 first (per-channel QDQ needs it). ONNX Runtime runs the quantised
convolutions with VNNI dot products where the CPU has them (AVX512-VNNI, AVX-VNNI, AMX); on this
project's AMD EPYC (Zen 4) that halves CenterFace's time (1248x1024: 74 -> 37 ms, 2 threads).

The calibration set (no photographs of real people are shipped): road-survey-like scenes
(engine.demo.road_scene) with matplotlib's Grace Hopper portrait pasted at 24-160 px face
heights, mirrored and darkened/brightened, seen as the cascade sees them: the whole scene at half
scale and native-resolution windows around faces. The check before install: on scenes drawn with
other seeds, every face the fp32 model finds (score >= the card's threshold) the INT8 model must
find too, and at the cascade's candidate threshold as well; otherwise nothing is installed and
the fp32 model stays in use. The benchmark's small-faces and 36-face sets are the wider check
(README, CPU speed).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from engine.models.int8_build import install, quantize_views

__all__ = ["build_centerface_int8", "build_int8", "install", "quantize_views"]

LOG = logging.getLogger("sladd")

CAL_HW = (1024, 1248)           # calibration and checking size (the cascade's coarse pass at 2448x2048)
_FACE_IN_PORTRAIT = (175 / 512, 131 / 600, 357 / 512, 336 / 600)   # face box inside grace_hopper.jpg
RECIPE = {"format": "QDQ", "weights": "int8 per channel", "activations": "uint8 per tensor",
          "calibration": "MinMax", "opset": 13, "scenes": 6, "seed": 11}


def _scene(seed: int, portrait, hw=(2048, 2448)):
    """A road scene with portraits pasted at 24-160 px face heights; returns (pixels, face boxes)."""
    from engine.demo import paste_portrait, road_scene

    rng = np.random.default_rng(seed)
    h, w = hw
    img = road_scene(h, w, seed)
    faces = []
    fy0, fy1 = _FACE_IN_PORTRAIT[1], _FACE_IN_PORTRAIT[3]
    for k, fh in enumerate((24, 30, 40, 56, 80, 120, 160)):
        ph = int(round(fh / (fy1 - fy0)))
        pw = int(round(portrait.width * ph / portrait.height))
        x = int(rng.integers(0, w - pw))
        y = int(rng.integers(int(h * 0.3), h - ph))
        src = portrait.transpose(0) if k % 2 else portrait         # 0: FLIP_LEFT_RIGHT
        x0, y0, x1, y1 = paste_portrait(img, src, x, y, ph)
        gain = float(rng.uniform(0.6, 1.25))
        img[y0:y1, x0:x1] = np.clip(img[y0:y1, x0:x1] * gain, 0, 255).astype(np.uint8)
        fx0, fy0_, fx1, fy1_ = _FACE_IN_PORTRAIT
        faces.append((x0 + fx0 * (x1 - x0), y0 + fy0_ * (y1 - y0), x0 + fx1 * (x1 - x0), y0 + fy1_ * (y1 - y0)))
    return img, faces


def _views(img, faces):
    """What the cascade feeds the model: the scene at half scale, and native windows on faces."""
    from engine.models.centerface import CenterFaceAdapter
    from kernels import downscale_mean

    h, w = CAL_HW
    out = [CenterFaceAdapter.blob([downscale_mean(img, 2)[:h, :w]], h, w)]
    for x0, y0, x1, y1 in faces[::3]:
        cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
        top, left = max(0, min(img.shape[0] - h, cy - h // 2)), max(0, min(img.shape[1] - w, cx - w // 2))
        out.append(CenterFaceAdapter.blob([img[top:top + h, left:left + w]], h, w))
    return out


def _cascade(card, model: Path, int8: bool = False):
    """The run's own detector for `card` with `model` as its file (`int8`: as the run uses the
    INT8 build, with the card's INT8 candidate threshold)."""
    from engine.config import load_config
    from engine.detect import Detector
    from engine.runtimes import create_runtime
    from engine.slots import build_models

    cfg, _ = load_config(None, overrides={"models": [{"card": card.name, "file": str(model)}]})
    runtime = create_runtime("onnxruntime", device="cpu", precision="fp32")
    slots, names = build_models(cfg, runtime)
    if int8:
        from engine.slots import int8_card
        slots[0].card = int8_card(slots[0].card)
    return Detector(cfg, slots, names)


def _hits(dets, faces) -> list[bool]:
    """Per true face: some detected box holds its centre."""
    out = []
    for x0, y0, x1, y1 in faces:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        out.append(bool(any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in np.asarray(dets.boxes).tolist())))
    return out


def _check(fp32: Path, int8: Path, card) -> dict:
    """The card's whole detector (cascade included) with the fp32 and the INT8 file on scenes
    drawn with other seeds than the calibration's: INT8 must find every face fp32 finds."""
    from PIL import Image

    from engine.demo import sample_portrait
    from engine.types import Frame

    from engine.models.card import load_card, shipped_cards

    portrait = Image.open(sample_portrait()).convert("RGB")
    scenes = [_scene(seed, portrait) for seed in range(100, 104)]
    users = [c for c in (load_card(n) for n in shipped_cards()) if c.int8_file == card.int8_file] or [card]
    counts = {}
    for user in users:                       # every shipped card that would use this build
        d32, d8 = _cascade(user, fp32), _cascade(user, int8, int8=True)
        c = counts[user.name] = {"faces": 0, "fp32": 0, "int8": 0, "boxes_fp32": 0, "boxes_int8": 0}
        for seed, (img, faces) in enumerate(scenes, 100):
            frame = Frame(job=None, data=b"", pixels=img, scale=1.0, full_size=img.shape[:2], orientation=1,
                          segments=[], quality=None, subsampling=2)
            a, b = d32(frame), d8(frame)
            ha, hb = _hits(a, faces), _hits(b, faces)
            c["faces"] += len(faces)
            c["fp32"] += sum(ha)
            c["int8"] += sum(hb)
            c["boxes_fp32"] += len(a.boxes)
            c["boxes_int8"] += len(b.boxes)
            if any(x and not y for x, y in zip(ha, hb)):
                raise RuntimeError(f"INT8 CenterFace misses a face the fp32 model finds (card {user.name}, scene "
                                   f"seed {seed}): not installed, the fp32 model stays in use")
    return counts


def build_centerface_int8(card, fp32: Path, dest: Path) -> Path:
    """Quantise `fp32` (the card's installed CenterFace) into `dest`, check it, install it
    atomically with its record `<stem>.source.json`. Takes about a minute on 2 cores."""
    import onnx
    from onnx import version_converter
    from PIL import Image

    from engine.demo import sample_portrait
    from engine.models.centerface import fix_centerface_graph

    work = Path(tempfile.mkdtemp(prefix="sladd-int8-"))
    try:
        h, w = CAL_HW
        fixed = version_converter.convert_version(fix_centerface_graph(onnx.load(str(fp32)), h, w, 1), RECIPE["opset"])
        src = work / "fp32.onnx"
        onnx.save(fixed, str(src))
        portrait = Image.open(sample_portrait()).convert("RGB")
        name = fixed.graph.input[0].name
        blobs = []
        for seed in range(RECIPE["seed"], RECIPE["seed"] + RECIPE["scenes"]):
            blobs += _views(*_scene(seed, portrait))

        out = work / dest.name        # its run-time copies (models/derived) are then the installed file's
        LOG.info("quantising %s to INT8 (%d calibration views)", fp32.name, len(blobs))
        quantize_views(src, out, name, blobs, RECIPE)
        counts = _check(fp32, out, card)
        LOG.info("INT8 check: %s", counts)
        return install(out, fp32, dest, RECIPE, counts)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_int8(card, fp32: Path, dest: Path, *, download: bool = True) -> Path:
    """The card's INT8 build (`card.int8_file`) by its family: CenterFace, or a YOLO detector
    (engine.models.quantize_yolo; `download`: may fetch its sample photographs). Raises
    RuntimeError (nothing installed) where it cannot be made or fails its check,
    NotImplementedError for other families."""
    if card.family == "centerface":
        return build_centerface_int8(card, fp32, dest)
    if card.family == "yolo-det":
        from engine.models.quantize_yolo import build_yolo_int8
        return build_yolo_int8(card, fp32, dest, download=download)
    raise NotImplementedError(f"no INT8 build for model family {card.family}")
