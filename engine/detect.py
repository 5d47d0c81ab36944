"""Detect stage: views (full image + optional cutouts) through every configured model, results
mapped to full-resolution pixels and combined into one `Detections` per image."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from engine.config import Config, ModelSpec
from engine.models import ModelCard, create_adapter, load_card, resolve_model
from engine.types import Detections, Frame
from kernels import batched_nms, box_to_int, cutout_windows, resize_bilinear, scale_boxes

__all__ = ["Detector", "ModelSlot", "build_models"]

LOG = logging.getLogger("sladd")


@dataclass
class ModelSlot:
    card: ModelCard
    adapter: object
    anonymise_ids: np.ndarray          # model class ids that are anonymised
    name_ids: np.ndarray               # model class id -> index into Detector.names


def _effective_card(card: ModelCard, spec: ModelSpec) -> ModelCard:
    upd = {}
    if spec.score_threshold is not None:
        upd["score_threshold"] = spec.score_threshold
    if spec.classes is not None:
        upd["anonymise"] = list(spec.classes)
    inp = {}
    if spec.scale is not None:
        inp["scale"] = spec.scale
    if spec.input_size is not None:
        inp["size"] = tuple(spec.input_size)
    if inp:
        upd["input"] = card.input.model_copy(update=inp)
    out = card.model_copy(update=upd)
    # Re-validate: an override may name classes the model lacks.
    return ModelCard.model_validate(out.model_dump())


def build_models(cfg: Config, runtime) -> tuple[list[ModelSlot], tuple[str, ...]]:
    names: list[str] = []
    slots = []
    for spec in cfg.models:
        card = _effective_card(load_card(spec.card), spec)
        path = resolve_model(card, spec.file)
        adapter = create_adapter(card, path, runtime)
        for n in card.class_names:
            if n in card.anonymise and n not in names:
                names.append(n)
        anon = np.array([card.class_names.index(n) for n in card.anonymise], np.int64)
        name_ids = np.array([names.index(n) if n in names else -1 for n in card.class_names], np.int32)
        slots.append(ModelSlot(card, adapter, anon, name_ids))
        LOG.info("model %s (%s) from %s: anonymises %s, score >= %.2f", card.name, card.family, path,
                 ", ".join(card.anonymise), card.score_threshold)
    return slots, tuple(names)


class Detector:
    """Runs every model over the views of a frame. Not thread-safe: one per detect worker."""

    def __init__(self, cfg: Config, slots: list[ModelSlot], names: tuple[str, ...]):
        self.cfg = cfg
        self.slots = slots
        self.names = names

    def _views(self, h: int, w: int):
        views = [(0, 0, h, w, True)]
        if self.cfg.use_cutouts:
            views += [(y, x, vh, vw, False) for y, x, vh, vw in
                      cutout_windows(h, w, self.cfg.cutout_dim_downscale, self.cfg.cutout_step_factor)]
        return views

    def _model_scale(self, slot: ModelSlot, vh: int, vw: int, full: bool, h: int, w: int) -> float:
        s = slot.adapter.view_scale(vh, vw)
        if full and h * w > self.cfg.max_num_pixels:
            s = min(s, math.sqrt(self.cfg.max_num_pixels / (h * w)))
        return s

    def needed_scale(self, h: int, w: int) -> float:
        """Largest fraction of the full resolution any model needs for any view of an h x w image."""
        need = 0.0
        for slot in self.slots:
            for _, _, vh, vw, full in self._views(h, w):
                need = max(need, self._model_scale(slot, vh, vw, full, h, w))
        return min(1.0, need)

    def __call__(self, frame: Frame) -> Detections:
        t0 = time.perf_counter()
        h, w = frame.full_size
        parts = []
        for slot in self.slots:
            per_view = [self._run_view(slot, frame, v) for v in self._views(h, w)]
            parts.append(self._combine_views(slot, per_view, h, w))
        dets = self._concat(parts)
        frame.timings["detect"] = time.perf_counter() - t0
        return dets

    def _run_view(self, slot: ModelSlot, frame: Frame, view):
        vy, vx, vh, vw, full = view
        fs = frame.scale
        crop = frame.pixels[round(vy * fs):round((vy + vh) * fs), round(vx * fs):round((vx + vw) * fs)]
        target = self._model_scale(slot, vh, vw, full, *frame.full_size)
        given = fs
        if slot.card.input.mode == "scale" and abs(target - fs) > 1e-6:
            nh, nw = max(1, round(vh * target)), max(1, round(vw * target))
            crop = resize_bilinear(crop, nh, nw)
            given = target
        raw = slot.adapter(np.ascontiguousarray(crop), given)
        keep = np.isin(raw.classes, slot.anonymise_ids)
        boxes = raw.boxes[keep] / given + np.array([vx, vy, vx, vy], np.float32)
        idx = np.nonzero(keep)[0]
        return boxes.astype(np.float32), raw.scores[keep], raw.classes[keep], idx, raw.mask_prob, (vx, vy, given)

    def _combine_views(self, slot: ModelSlot, per_view, h: int, w: int):
        boxes, scores, classes, masks, mboxes = [], [], [], [], []
        for b, s, c, idx, mask_prob, (vx, vy, given) in per_view:
            if slot.card.box_scale != 1.0 and mask_prob is None:
                b = scale_boxes(b, slot.card.box_scale)
            b[:, 0::2] = b[:, 0::2].clip(0, w)
            b[:, 1::2] = b[:, 1::2].clip(0, h)
            boxes.append(b); scores.append(s); classes.append(c)
            if mask_prob is not None:
                for j, i in enumerate(idx):
                    x0, y0, x1, y1 = box_to_int(b[j], h, w)
                    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - vy) * given
                    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - vx) * given
                    masks.append(mask_prob(int(i), ys, xs) > slot.card.mask_threshold)
                    mboxes.append((x0, y0, x1, y1))
        b = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
        s = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        c = np.concatenate(classes).astype(np.int32) if classes else np.zeros(0, np.int32)
        # Every view's detection is drawn (the union mask is what protects privacy); duplicates
        # across views are removed only for counting (see Detections.counted).
        counted = batched_nms(b, s, c, slot.card.nms_iou) if len(b) else np.zeros(0, np.int64)
        shape = slot.card.mask_shape
        return (b, s, slot.name_ids[c] if len(c) else c, masks if mask_prob_any(per_view) else None,
                np.array(mboxes, np.int64).reshape(-1, 4), counted, shape)

    def _concat(self, parts) -> Detections:
        boxes, scores, classes, shapes, counted = [], [], [], [], []
        masks: list = []
        mboxes = []
        any_masks = any(p[3] is not None for p in parts)
        offset = 0
        for b, s, c, m, mb, cnt, shape in parts:
            boxes.append(b); scores.append(s); classes.append(c)
            counted.append(cnt + offset)
            offset += len(b)
            if m is not None:
                masks.extend(m); mboxes.append(mb); shapes.extend(["mask"] * len(b))
            else:
                shapes.extend([shape] * len(b))
                if any_masks:
                    masks.extend([None] * len(b)); mboxes.append(np.zeros((len(b), 4), np.int64))
        return Detections(
            boxes=np.concatenate(boxes).astype(np.float32), scores=np.concatenate(scores).astype(np.float32),
            classes=np.concatenate(classes).astype(np.int32), names=self.names,
            masks=masks if any_masks else None,
            mask_boxes=np.concatenate(mboxes) if any_masks else None,
            shapes=tuple(shapes), counted=np.concatenate(counted).astype(np.int64))


def mask_prob_any(per_view) -> bool:
    return any(v[4] is not None for v in per_view)
