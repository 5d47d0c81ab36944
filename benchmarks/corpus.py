"""Road-style benchmark corpus: textured survey-camera scenes with real faces pasted at known
boxes (matplotlib's Grace Hopper portrait, scaled so faces are 30-120 px tall).

    python -m benchmarks.corpus --out benchmarks/_corpus/2448 --count 12 --size 2448x2048
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from engine.demo import jpeg_with_exif, paste_portrait, road_scene, sample_portrait

# The face inside grace_hopper.jpg (512x600), measured with CenterFace: x 175-357, y 131-336.
_FACE_IN_PORTRAIT = (175 / 512, 131 / 600, 357 / 512, 336 / 600)


def make_image(h: int, w: int, face_heights: list[int], seed: int, portrait: Image.Image):
    rng = np.random.default_rng(seed)
    img = road_scene(h, w, seed)
    faces = []
    taken: list[tuple[int, int, int, int]] = []
    for fh in face_heights:
        ph = int(round(fh / (_FACE_IN_PORTRAIT[3] - _FACE_IN_PORTRAIT[1])))
        pw = int(round(portrait.width * ph / portrait.height))
        for _ in range(100):
            x = int(rng.integers(0, w - pw))
            y = int(rng.integers(int(h * 0.35), h - ph))
            if all(x + pw < a or a2 < x or y + ph < b or b2 < y for a, b, a2, b2 in taken):
                break
        else:
            # No free place: not pasted. (Pasting it anyway covered an earlier face, which then
            # stayed in the ground truth though nothing of it was visible: dlib's descriptor of
            # such a "face" is as close to a blank picture's as to the original's.)
            continue
        x0, y0, x1, y1 = paste_portrait(img, portrait, x, y, ph)
        taken.append((x0, y0, x1, y1))
        fx0, fy0, fx1, fy1 = _FACE_IN_PORTRAIT
        faces.append([x0 + fx0 * (x1 - x0), y0 + fy0 * (y1 - y0), x0 + fx1 * (x1 - x0), y0 + fy1 * (y1 - y0)])
    return img, faces


def build(out: Path, count: int, size: tuple[int, int], faces_per_image: int = 3, quality: int = 92,
          seed: int = 0, face_heights=(30, 36, 42, 56, 80, 120)) -> Path:
    """Writes `count` JPEGs plus `faces.json` ({relative path: [[x1, y1, x2, y2], ...]})."""
    out.mkdir(parents=True, exist_ok=True)
    portrait = Image.open(sample_portrait()).convert("RGB")
    h, w = size
    truth = {}
    rng = np.random.default_rng(seed)
    for i in range(count):
        heights = sorted(int(v) for v in rng.choice(list(face_heights), faces_per_image))
        img, faces = make_image(h, w, heights, seed + i, portrait)
        name = f"EV00006_S1D1_m{i:05d}_f1.jpg"
        jpeg_with_exif(img, out / name, quality=quality)
        truth[name] = faces
    (out / "faces.json").write_text(json.dumps(truth, indent=1))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--size", default="2448x2048", help="WxH")
    ap.add_argument("--faces", type=int, default=3)
    ap.add_argument("--quality", type=int, default=92)
    ap.add_argument("--face-heights", default="30,36,42,56,80,120", help="face heights (px) to draw from")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    heights = [int(v) for v in args.face_heights.split(",")]
    print(build(args.out, args.count, (h, w), args.faces, args.quality, face_heights=heights))


if __name__ == "__main__":
    main()
