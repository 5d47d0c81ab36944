"""Detect stage: views (full image, cutouts, the 360° seam, mirrored passes) through every
configured model, results mapped to full-resolution pixels, merged, and combined into one
`Detections` per image. Search cards (plates) then look in crops around what the others found
(engine/search.py); the models themselves are loaded by engine/slots.py.

For 360° images (`image_type: "360"`) x is a circle: a view may run past the right edge into
the left one, and boxes are kept in "unwrapped" coordinates (x1 in [0, W), x2 up to 2W); the
mask stage draws the part beyond W on the left edge.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.cascade import Pyramid, View, cascade_many
from engine.config import Config
from engine.logs import quietly
from engine.models import RawDetections
from engine.search import bucket_crop, crop_scales, region_rects, tile_rects
from engine.slots import ModelSlot, build_models
from engine.types import Detections, Frame
from kernels import (box_to_int, cluster_boxes, crop_view, cutout_windows, get_array_module, merge_boxes,
                     merge_instances, resize_bilinear, scale_boxes, seam_window, spread_windows)

__all__ = ["Detector", "ModelSlot", "build_models", "View"]

LOG = logging.getLogger("sladd")


def _flat(crop) -> bool:
    """A window (host or device `(h, w, 3)`) with under 8 grey levels of contrast: black
    borders, blank sky; nothing a detector could find there."""
    return float(crop.max()) - float(crop.min()) < 8


class _Part(NamedTuple):
    """One model's merged detections for one image (classes already mapped to Detector.names)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: list | None
    mask_boxes: np.ndarray | None
    counted: np.ndarray
    shape: str


@dataclass
class _ViewResult:
    boxes: np.ndarray          # full-image pixels (unwrapped x for 360°)
    scores: np.ndarray
    classes: np.ndarray        # model class ids
    masks: list | None         # box-local bool masks (segmenters)
    mask_boxes: np.ndarray | None


class Detector:
    """Runs every model over the views of a frame. Not thread-safe: one per detect worker."""

    def __init__(self, cfg: Config, slots: list[ModelSlot], names: tuple[str, ...]):
        self.cfg = cfg
        self.slots = slots
        self.names = names
        self.wrap = cfg.image_type == "360"
        self.batch_size = cfg.engine.batch_size or 1

    def views(self, h: int, w: int, slot: ModelSlot | None = None) -> list[View]:
        views = [View(0, 0, h, w, full=True)]
        if self.cfg.use_cutouts:
            wins = [View(*v) for v in cutout_windows(h, w, self.cfg.cutout_dim_downscale,
                                                     self.cfg.cutout_step_factor, wrap=self.wrap)]
            views += self._model_windows(slot, wins, h, w) if self.wrap and slot is not None else wins
        elif self.wrap:
            views.append(View(*seam_window(h, w)))
        if slot is not None and slot.card.tta_flip:
            views += [View(v.y, v.x, v.h, v.w, v.full, flip=True) for v in views]
        return views

    def _model_windows(self, slot: ModelSlot, wins: list[View], h: int, w: int) -> list[View]:
        """360°: instead of the reference's cutouts, the fewest windows seen at the finest scale
        any cutout is seen at, shaped to fill the model's input (NanoDet's 416x416: square
        windows of the full height, 3 round an 8000x4000 panorama instead of 28 strips), spread
        round the seam with a third of a window shared. None where no cutout is seen finer than
        the full image, or for models whose scale does not follow the view's size."""
        finer = [v for v in wins if self._finer(slot, v, h, w)]
        if not finer:
            return []
        s = max(self._model_scale(slot, v, h, w) for v in finer)
        sees = slot.adapter.view_scale
        if sees(2 * h, 2 * w) >= s:                 # the scale does not follow the view's size
            return finer

        def grow(lo: int, hi: int, ok) -> int:     # the largest side in [lo, hi] still seen at s
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
            return lo
        ref = max(finer, key=lambda v: self._model_scale(slot, v, h, w))
        wh = grow(ref.h, h, lambda x: sees(x, ref.w) >= s * (1 - 1e-9))
        ww = grow(ref.w, w, lambda x: sees(wh, x) >= s * (1 - 1e-9))
        return [View(*v) for v in spread_windows(h, w, wh, ww, wrap=True)]

    def _model_scale(self, slot: ModelSlot, view: View, h: int, w: int) -> float:
        s = slot.adapter.view_scale(view.h, view.w)
        if view.full and h * w > self.cfg.max_num_pixels:
            s = min(s, math.sqrt(self.cfg.max_num_pixels / (h * w)))
        return s

    def _finer(self, slot: ModelSlot, view: View, h: int, w: int) -> bool:
        """Whether the model looks at `view` at a finer scale than at the full image: a window
        seen no finer holds nothing the full-image pass misses (small images, whose full pass
        already runs at native resolution)."""
        return self._model_scale(slot, view, h, w) > 1.01 * self._model_scale(slot, View(0, 0, h, w, full=True), h, w)

    def warm_up(self) -> None:
        """Create (and run once) the cascade's smallest crop sessions, which nearly every image
        needs whatever its size: a session costs 15-25 ms to create and its first run is slow.
        Called in a background thread while the first image is read and decoded."""
        from engine.cascade import BUCKETS

        for slot in self.slots:
            if hasattr(slot.adapter, "warm_large"):
                # OpenVINO's compiled model for the large passes, loaded beside ONNX Runtime's
                # warm-up (the first coarse pass waits for it).
                # Not a daemon: a runtime interrupted by the interpreter's exit mid-compilation aborts.
                threading.Thread(target=quietly(slot.adapter.warm_large), name="sladd-warm-openvino").start()
        for slot in self.slots:
            if slot.card.cascade is not None and hasattr(slot.adapter, "batch"):
                for side in BUCKETS[:2]:
                    slot.adapter.batch([np.zeros((side, side, 3), np.uint8)], 1.0)

    def needed_scale(self, h: int, w: int) -> float:
        """Largest fraction of the full resolution any model needs for any view of an h x w image."""
        need = 0.0
        for slot in self.slots:
            if slot.card.search is not None:
                return 1.0                                  # search crops run at native resolution
            for v in self.views(h, w):
                need = max(need, self._model_scale(slot, v, h, w))
        return min(1.0, need)

    def __call__(self, frame: Frame) -> Detections:
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: list[Frame]) -> list[Detections]:
        """Detections for several frames. Views of the same model and input shape, from any of
        the frames, go through the model together in batches of up to `batch_size` (cascades
        too: the coarse passes of several frames together, then the crops of each size)."""
        t0 = time.perf_counter()
        tasks = []                                          # (frame idx, slot idx, view, crop, given)
        per: dict[tuple[int, int], list[_ViewResult]] = {}
        cascades: dict[int, list[int]] = {}
        regions: list[list[np.ndarray]] = [[] for _ in frames]   # search regions, full-res px
        # The models share each frame's block-mean halvings: the cascade's coarse pass runs on one,
        # and a model that letterboxes its input (NanoDet, the plates' full-frame pass) resizes
        # from the coarsest one still finer than it looks (no full-size float copies; block
        # means first also keep a 6x bilinear shrink from skipping pixels).
        pyrs = [Pyramid(f.pixels) for f in frames]
        for fi, frame in enumerate(frames):
            h, w = frame.full_size
            for si, slot in enumerate(self.slots):
                if slot.card.search is not None:
                    continue
                if slot.card.cascade is not None:
                    cascades.setdefault(si, []).append(fi)
                    continue
                for v in self.views(h, w, slot):
                    if not v.full and not self._finer(slot, v, h, w):
                        continue
                    crop, given = self._prepare(slot, frame, v, pyrs[fi])
                    if not v.full and _flat(crop):
                        continue
                    tasks.append((fi, si, v, crop, given))
        for si, fis in cascades.items():
            for fi, results in zip(fis, self._cascade_many(self.slots[si], [frames[fi] for fi in fis],
                                                           [pyrs[fi] for fi in fis])):
                per[(fi, si)] = results
        # Region models run at the lower of their thresholds; what they anonymise keeps the card's.
        raws = self._run_grouped(lambda k: self.slots[tasks[k][1]],
                                 [(t[3], t[4], self.slots[t[1]].region_threshold) for t in tasks], key=lambda k: tasks[k][1])
        for (fi, si, v, crop, given), raw in zip(tasks, raws):
            slot = self.slots[si]
            floor = slot.card.score_threshold if slot.region_threshold is not None else None
            per.setdefault((fi, si), []).append(self._map(slot, frames[fi].full_size, v, crop.shape[1], given, raw,
                                                          min_score=floor))
            if slot.region_ids is not None and slot.region_ids.size:
                plain = RawDetections(raw.boxes, raw.scores, raw.classes)
                regions[fi].append(self._map(slot, frames[fi].full_size, v, crop.shape[1], given, plain,
                                             ids=slot.region_ids).boxes)
        for si, slot in enumerate(self.slots):
            if slot.card.search is not None:
                for fi, results in enumerate(self._search_many(slot, frames, regions, pyrs)):
                    per[(fi, si)] = results
        out = [self._concat([self._merge_views(slot, per.get((fi, si), []))
                             for si, slot in enumerate(self.slots)]) for fi in range(len(frames))]
        share = (time.perf_counter() - t0) / max(1, len(frames))
        for frame in frames:
            frame.timings["detect"] = share
        return out

    def _run_grouped(self, slot_of, jobs, key=lambda k: 0) -> list:
        """Adapter outputs for `jobs` = [(array, given, threshold)], in order. Arrays of the same
        model, shape, dtype, scale and threshold run together, `batch_size` at a time."""
        raws = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for k, (arr, given, thr) in enumerate(jobs):
            groups.setdefault((key(k), arr.shape, arr.dtype.str, given, thr), []).append(k)
        for (_, _, _, given, thr), idx in groups.items():
            adapter = slot_of(idx[0]).adapter
            for c in range(0, len(idx), self.batch_size):
                chunk = idx[c:c + self.batch_size]
                arrays = [jobs[k][0] for k in chunk]
                outs = adapter.batch(arrays, given) if thr is None else adapter.batch(arrays, given, threshold=thr)
                for k, raw in zip(chunk, outs):
                    raws[k] = raw
        return raws

    def _cascade_many(self, slot: ModelSlot, frames: list[Frame], pyramids=None) -> list[list[_ViewResult]]:
        """Coarse-to-fine (card `cascade`) over each frame: engine/cascade.py."""
        return cascade_many(self, slot, frames, pyramids)

    def _search_many(self, slot: ModelSlot, frames: list[Frame], regions, pyrs=None) -> list[list[_ViewResult]]:
        """A `search` card (plates) over crops around each frame's search regions (vehicles
        found by the other models) and, with plates.full_frame_tiles, tiles over the whole
        frame; native resolution, padded to the card's bucket sizes, batched across frames."""
        sp, card = slot.card.search, slot.card
        jobs = []                                           # (frame idx, view, canvas, given)
        for fi, frame in enumerate(frames):
            h, w = frame.full_size
            boxes = np.concatenate(regions[fi]) if regions[fi] else np.zeros((0, 4), np.float32)
            looks = [(r, s) for r in region_rects(boxes, sp.margin, h, w, wrap=self.wrap)
                     for s in crop_scales(r, frame.scale, sp.scales, sp.buckets[-1], sp.min_side)]
            if self.cfg.plates.full_frame_tiles:
                looks += [(r, None) for r in tile_rects(h, w, sp.tile, sp.tile_overlap, wrap=self.wrap)]
            if sp.full_frame:                               # large plates, whatever found their vehicle
                full = View(0, 0, h, w, full=True)
                px, f = (frame.pixels, 1) if pyrs is None or pyrs[fi] is None else \
                    pyrs[fi].level_for(self._model_scale(slot, full, h, w) / frame.scale)
                jobs.append((fi, full, px, frame.scale / f))
            for (x0, y0, x1, y1), s in looks:
                canvas, given = bucket_crop(frame.pixels, (x0, y0, x1, y1), frame.scale, sp.buckets,
                                            card.input.pad_value, s)
                jobs.append((fi, View(y0, x0, y1 - y0, x1 - x0), canvas, given))
        raws = self._run_grouped(lambda _: slot, [(c, g, None) for _, _, c, g in jobs])
        out: list[list[_ViewResult]] = [[] for _ in frames]
        for (fi, view, canvas, given), raw in zip(jobs, raws):
            out[fi].append(self._map(slot, frames[fi].full_size, view, canvas.shape[1], given, raw))
        return out

    def _prepare(self, slot: ModelSlot, frame: Frame, v: View, pyr: Pyramid | None = None):
        """The view's pixels as the model gets them, and their scale (model px per full-res px).
        A model that resizes its input itself (letterbox) gets, for 360° frames, the view from
        the coarsest pyramid level still finer than it looks (a quarter of the pixels to resize
        at half the resolution, and the same model input)."""
        h, w = frame.full_size
        target = self._model_scale(slot, v, h, w)
        px, fs = frame.pixels, frame.scale
        if pyr is not None and slot.card.input.mode != "scale":
            px, f = pyr.level_for(target / fs)
            fs = fs / f
        fw = px.shape[1]
        crop = crop_view(px, round(v.y * fs), round(v.x * fs), round(v.h * fs),
                         min(round(v.w * fs), fw if not self.wrap else 2 * fw))
        if v.flip:
            crop = crop[:, ::-1]
        given = fs
        if slot.card.input.mode == "scale" and abs(target - fs) > 1e-6:
            crop = resize_bilinear(crop, max(1, round(v.h * target)), max(1, round(v.w * target)))
            given = target
        return get_array_module(crop).ascontiguousarray(crop), given

    def _map(self, slot: ModelSlot, full_size, v: View, crop_w: int, given: float, raw, ids=None,
             min_score=None) -> _ViewResult:
        """Adapter output (view pixels) -> full-image pixels, for the anonymised classes (or
        class `ids`) scoring at least `min_score`; masks sampled box-locally."""
        h, w = full_size
        sel = np.isin(raw.classes, slot.anonymise_ids if ids is None else ids)
        keep = np.nonzero(sel if min_score is None else sel & (raw.scores >= min_score))[0]
        b = raw.boxes[keep].astype(np.float32) / given
        cw = crop_w / given                                 # view width in full-res pixels
        if v.flip:
            b = np.stack([cw - b[:, 2], b[:, 1], cw - b[:, 0], b[:, 3]], 1)
        b += np.array([v.x, v.y, v.x, v.y], np.float32)
        if raw.mask_prob is None and slot.card.box_scale != 1.0:
            b = scale_boxes(b, slot.card.box_scale)
        b = self._normalise(b, h, w)
        masks = mboxes = None
        if raw.mask_prob is not None:
            masks, mboxes = [], []
            for j, i in enumerate(keep):
                x0, y0, x1, y1 = box_to_int(b[j], h, 2 * w if self.wrap else w)
                ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - v.y) * given
                xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - v.x)
                xs = np.where(xs < 0, xs + w, xs) * given if self.wrap else xs * given
                if v.flip:
                    xs = crop_w - xs
                masks.append(raw.mask_prob(int(i), ys, xs) > slot.card.mask_threshold)
                mboxes.append((x0, y0, x1, y1))
            mboxes = np.array(mboxes, np.int64).reshape(-1, 4)
        return _ViewResult(b, raw.scores[keep].astype(np.float32), raw.classes[keep].astype(np.int32), masks, mboxes)

    def _normalise(self, b: np.ndarray, h: int, w: int) -> np.ndarray:
        b[:, 1::2] = b[:, 1::2].clip(0, h)
        if not self.wrap:
            b[:, 0::2] = b[:, 0::2].clip(0, w)
            return b
        # 360°: keep x1 in [0, W) and the width at most W; x2 may pass W (drawn wrapped).
        shift = np.floor(b[:, 0] / w) * w
        b[:, 0::2] -= shift[:, None]
        b[:, 2] = np.minimum(b[:, 2], b[:, 0] + w)
        return b

    def _merge_views(self, slot: ModelSlot, per_view: list[_ViewResult]):
        """Segmenters: instance merge across views (the union of the masks is unchanged).
        Box detectors: every box is drawn; the merged clusters are what is counted."""
        if not per_view:
            e = np.zeros(0, np.int64)
            return _Part(np.zeros((0, 4), np.float32), e.astype(np.float32), e.astype(np.int32), None, None, e, "box")
        views = np.concatenate([np.full(len(r.boxes), k) for k, r in enumerate(per_view)])
        b = np.concatenate([r.boxes for r in per_view]).reshape(-1, 4)
        s = np.concatenate([r.scores for r in per_view])
        c = np.concatenate([r.classes for r in per_view]).astype(np.int32)
        if per_view and per_view[0].masks is not None:
            masks = [m for r in per_view for m in r.masks]
            mb = np.concatenate([r.mask_boxes for r in per_view]).reshape(-1, 4)
            mi = merge_instances(b, s, c, masks, mb, views)
            return _Part(mi.boxes, mi.scores, slot.name_ids[mi.classes] if len(mi.classes) else mi.classes,
                         mi.masks, mi.mask_boxes, np.arange(len(mi.boxes)), "mask")
        if slot.card.merge is not None:
            card = slot.card
            mb, ms, mc, _ = merge_boxes(b, s, c, method=card.merge, iou_threshold=card.merge_iou,
                                        pre_score=card.merge_pre_score, post_score=card.merge_post_score,
                                        area=card.box_area, num_passes=2 if card.tta_flip else None)
            return _Part(mb, ms, slot.name_ids[mc] if len(mc) else mc, None, None, np.arange(len(mb)),
                         card.mask_shape)
        # Counting across views: a box cut by a tile edge lies mostly inside the whole box from
        # another view (intersection over the smaller box), transitively; every box is drawn.
        groups = cluster_boxes(b, c, views, threshold=0.5, overlap="ios")
        counted = np.array([g[int(np.argmax(s[g]))] for g in groups], np.int64)
        return _Part(b, s, slot.name_ids[c] if len(c) else c, None, None, counted, slot.card.mask_shape)

    def _concat(self, parts: list[_Part]) -> Detections:
        any_masks = any(p.masks is not None for p in parts)
        masks, mboxes, shapes, counted, offset = [], [], [], [], 0
        for p in parts:
            counted.append(p.counted + offset)
            offset += len(p.boxes)
            shapes.extend([p.shape] * len(p.boxes))
            if any_masks:
                masks.extend(p.masks if p.masks is not None else [None] * len(p.boxes))
                mboxes.append(p.mask_boxes if p.mask_boxes is not None else np.zeros((len(p.boxes), 4), np.int64))

        def cat(xs, shape, dt):
            return np.concatenate(xs).astype(dt) if xs else np.zeros(shape, dt)

        return Detections(
            boxes=cat([p.boxes for p in parts], (0, 4), np.float32).reshape(-1, 4),
            scores=cat([p.scores for p in parts], (0,), np.float32),
            classes=cat([p.classes for p in parts], (0,), np.int32), names=self.names,
            masks=masks if any_masks else None,
            mask_boxes=cat(mboxes, (0, 4), np.int64).reshape(-1, 4) if any_masks else None,
            shapes=tuple(shapes), counted=cat(counted, (0,), np.int64))
