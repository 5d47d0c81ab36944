"""The face cascade (a card's `cascade`: CenterFace coarse-to-fine) and the image pyramid that
360° panoramas share between models.

Planar images: a coarse pass over the full image (and over the windows that see finer), at
the card's cascade scale with a low threshold; the small candidates are looked at again at
native resolution in crops around them.

360° panoramas (`wrap`): the coarse image is cut into equal tiles going round the seam
(kernels.tile_grid), overlapping by `TILE_OVERLAP` coarse pixels, so that peak memory no
longer grows with the panorama (a 4000x2000 coarse pass alone took 2.5 GB) and a face split by
x = 0/W is whole in some tile (no seam windows). A face larger than the overlap may be cut by
a tile edge: a guard pass at 1/8 of the resolution over the whole panorama proposes the large
ones, each looked at again at the coarse scale in a crop around it. Every face is thus seen
whole at the coarse scale, and the small ones at native resolution, as in the untiled pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.models import RawDetections
from kernels import crop_view, downscale_mean, get_array_module, resize_bilinear, tile_grid

__all__ = ["View", "Pyramid", "cascade_many", "crops", "COARSE_TILE_PIXELS", "TILE_OVERLAP", "GUARD_FACTOR"]

BUCKETS = (128, 192, 256, 384, 512, 768, 1024)
COARSE_TILE_PIXELS = 600_000       # one coarse tile at most: less memory, and faster per pixel (cache) than larger ones
TILE_OVERLAP = 64                  # coarse px: faces up to ~96 native px (the refined ones) whole in a tile
GUARD_FACTOR = 4                   # the guard pass: coarse image / 4 (1/8 of native for a 0.5 cascade)
GUARD_WRAP = 128                   # guard px past the seam (1 kpx native at 1/8)


@dataclass(frozen=True)
class View:
    """A window of the full-resolution image: `(y, x, h, w)`, `full` for the full-image pass,
    `flip` for the mirrored test-time-augmentation pass."""

    y: int
    x: int
    h: int
    w: int
    full: bool = False
    flip: bool = False


class Pyramid:
    """A frame's pixels and their block-mean halvings (`level(f)`: 1/f of the resolution, f a
    power of 2), computed once and shared by the models of a 360° frame."""

    def __init__(self, pixels):
        self.levels = {1: pixels}

    def level(self, f: int):
        if f not in self.levels:
            self.levels[f] = downscale_mean(self.level(f // 2), 2)
        return self.levels[f]

    def level_for(self, scale: float):
        """(pixels, f): the coarsest level still at least `scale` of the resolution (f <= 1/scale)."""
        f = 1
        while 2 * f * scale <= 1 + 1e-9 and min(self.levels[1].shape[:2]) // (2 * f) >= 32:
            f *= 2
        return self.level(f), f


def crops(boxes: np.ndarray, context: float, min_crop: int, h: int, w: int,
          wrap: bool = False) -> list[tuple[int, int, int, int]]:
    """Square crops (x0, y0, x1, y1) of `context` x each box's longer side (at least `min_crop`),
    clipped to the image (with `wrap`, x goes round the seam instead: x0 in [0, w), x1 up to
    x0 + w). A crop lying inside another is dropped; overlapping crops are kept apart (merging
    them grew into large rectangles that cost more than they saved)."""
    rects = []
    for x1, y1, x2, y2 in boxes.tolist():
        side = max(min_crop, context * max(x2 - x1, y2 - y1))
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        y0, y1_ = max(0, int(cy - side / 2)), min(h, int(math.ceil(cy + side / 2)))
        if wrap:
            x0 = int(math.floor(cx - side / 2))
            x1_ = min(x0 + w, int(math.ceil(cx + side / 2)))
            shift = (x0 // w) * w
            x0, x1_ = x0 - shift, x1_ - shift
        else:
            x0, x1_ = max(0, int(cx - side / 2)), min(w, int(math.ceil(cx + side / 2)))
        rects.append([x0, y0, x1_, y1_])
    rects.sort(key=lambda r: (r[2] - r[0]) * (r[3] - r[1]), reverse=True)
    kept: list = []
    for r in rects:
        if not any(k[0] <= r[0] and k[1] <= r[1] and r[2] <= k[2] and r[3] <= k[3] for k in kept):
            kept.append(r)
    return [tuple(r) for r in kept if r[2] > r[0] and r[3] > r[1]]


def _bucketed(crop, xp):
    """Crops are padded (top-left aligned) to a few square sizes: the graph has fixed dimensions,
    and a new size costs a new session (and batches together)."""
    ch, cw = crop.shape[:2]
    side = next((b for b in BUCKETS if b >= max(ch, cw)), None)
    if side is not None:
        canvas = xp.zeros((side, side, 3), xp.uint8)
        canvas[:ch, :cw] = crop
        crop = canvas
    return xp.ascontiguousarray(crop)


def cascade_many(det, slot, frames, pyramids=None) -> list[list]:
    """Coarse-to-fine (card `cascade`) over each frame (360° frames: tiled, see the module
    docstring; `pyramids`: their shared Pyramid). The coarse passes of all frames are batched,
    then the crops (padded to a few sizes). No mirrored pass. `det` is the engine.detect.Detector
    (its views, model calls and mapping)."""
    cs = slot.card.cascade
    f = round(1 / cs.scale)
    exact = abs(f * cs.scale - 1) < 1e-6
    out: list[list] = [[] for _ in frames]
    coarse_jobs, fine_jobs, guard_jobs = [], [], []   # (frame, view, array, given, candidates only)
    for k, frame in enumerate(frames):
        h, w = frame.full_size
        xp = get_array_module(frame.pixels)
        if det.wrap and exact and min(h, w) * cs.scale >= 64:
            pyr = pyramids[k] if pyramids is not None else Pyramid(frame.pixels)
            coarse = pyr.level(f)
            ch, cw = coarse.shape[:2]
            for ty, tx, th, tw in tile_grid(ch, cw, TILE_OVERLAP, COARSE_TILE_PIXELS, wrap=True):
                tile = xp.ascontiguousarray(crop_view(coarse, ty, tx, th, tw))
                coarse_jobs.append((k, View(ty * f, tx * f, th * f, tw * f), tile, 1 / f, False))
            g = f * GUARD_FACTOR
            guard = pyr.level(g)
            gw = guard.shape[1]
            arr = xp.ascontiguousarray(crop_view(guard, 0, 0, guard.shape[0], gw + min(GUARD_WRAP, gw)))
            guard_jobs.append((k, View(0, 0, arr.shape[0] * g, arr.shape[1] * g), arr, 1 / g, True))
            continue
        # The cascade already looks at native resolution: a window adds nothing the full-image
        # pass misses unless seen finer, except at the 360° seam of a panorama too small to tile.
        seam = det.wrap and det.cfg.use_cutouts
        for v in det.views(h, w):
            if not (v.full or det._finer(slot, v, h, w) or (seam and (v.x == 0 or v.x + v.w > w))):
                continue
            vp = crop_view(frame.pixels, v.y, v.x, v.h, v.w) if not v.full else frame.pixels
            vh, vw = vp.shape[:2]
            if min(vh, vw) * cs.scale < 32:
                # Too small to look at coarsely (a 1x1 image would have no pixels): native pass only.
                fine_jobs.append((k, v, xp.ascontiguousarray(vp)))
                continue
            small = downscale_mean(vp, f) if exact else \
                resize_bilinear(vp, max(1, round(vh * cs.scale)), max(1, round(vw * cs.scale)))
            coarse_jobs.append((k, v, xp.ascontiguousarray(small), small.shape[1] / vw, False))
    # Guards first: each large candidate becomes a crop of the coarse image around it, looked
    # at in the same round as the tiles; one too large for the largest crop (over ~340 coarse
    # px) is seen well enough by the guard itself (80+ px there).
    graws = det._run_grouped(lambda _: slot, [(a, gv, cs.threshold) for _, _, a, gv, _ in guard_jobs])
    largest = BUCKETS[-1] / cs.context * f                  # native px
    for (k, v, arr, given, _), raw in zip(guard_jobs, graws):
        cand = raw.boxes / given + np.array([v.x, v.y, v.x, v.y], np.float32)
        size = (cand[:, 2:] - cand[:, :2]).max(1) if len(cand) else np.zeros(0, np.float32)
        _keep_strong(det, slot, out[k], frames[k].full_size, v, arr, given, raw, size > largest)
        coarse = pyramids[k].level(f) if pyramids is not None else downscale_mean(frames[k].pixels, f)
        xp = get_array_module(coarse)
        big = (size > cs.max_refine) & (size <= largest)
        for x0, y0, x1, y1 in crops(cand[big] / f, cs.context, cs.min_crop // f, coarse.shape[0], coarse.shape[1],
                                    wrap=True):
            crop = crop_view(coarse, y0, x0, y1 - y0, x1 - x0)
            coarse_jobs.append((k, View(y0 * f, x0 * f, (y1 - y0) * f, (x1 - x0) * f), _bucketed(crop, xp), 1 / f,
                                False))
    raws = det._run_grouped(lambda _: slot, [(a, g, cs.threshold) for _, _, a, g, _ in coarse_jobs])
    cands: list[list[np.ndarray]] = [[] for _ in frames]
    for (k, v, arr, given, _), raw in zip(coarse_jobs, raws):
        h, w = frames[k].full_size
        _keep_strong(det, slot, out[k], (h, w), v, arr, given, raw)
        cand = raw.boxes / given
        small = (cand[:, 2:] - cand[:, :2]).max(1) <= cs.max_refine if len(cand) else np.zeros(0, bool)
        if not (cs.refine_strong or det.wrap) and len(cand):
            # Kept above (_keep_strong) as they are. 360° tiles keep refining them: one face cut
            # by tiles or the seam becomes one box through its crop.
            small &= raw.scores < slot.card.score_threshold
        if det.wrap and not v.full:
            cands[k].append(cand[small] + np.array([v.x, v.y, v.x, v.y], np.float32))
            continue
        vp = frames[k].pixels if v.full else crop_view(frames[k].pixels, v.y, v.x, v.h, v.w)
        xp = get_array_module(vp)
        for x0, y0, x1, y1 in crops(cand[small], cs.context, cs.min_crop, *vp.shape[:2]):
            fine_jobs.append((k, View(v.y + y0, v.x + x0, y1 - y0, x1 - x0), _bucketed(vp[y0:y1, x0:x1], xp)))
    for k, cs_ in enumerate(cands):                     # 360°: crops of all tiles at once, round the seam
        if not cs_:
            continue
        h, w = frames[k].full_size
        xp = get_array_module(frames[k].pixels)
        for x0, y0, x1, y1 in crops(np.concatenate(cs_), cs.context, cs.min_crop, h, w, wrap=True):
            crop = crop_view(frames[k].pixels, y0, x0, y1 - y0, x1 - x0)
            fine_jobs.append((k, View(y0, x0, y1 - y0, x1 - x0), _bucketed(crop, xp)))
    fraws = det._run_grouped(lambda _: slot, [(a, 1.0, None) for _, _, a in fine_jobs])
    for (k, view, arr), raw in zip(fine_jobs, fraws):
        out[k].append(det._map(slot, frames[k].full_size, view, arr.shape[1], 1.0, raw))
    return out


def _keep_strong(det, slot, into: list, full_size, v, arr, given, raw, only=None) -> None:
    strong = raw.scores >= slot.card.score_threshold
    if only is not None:
        strong &= only
    into.append(det._map(slot, full_size, v, arr.shape[1], given,
                         RawDetections(raw.boxes[strong], raw.scores[strong], raw.classes[strong])))
