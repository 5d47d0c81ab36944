"""The models of a run: each configured model card (with the run's overrides) resolved to its
file and loaded once per worker as a `ModelSlot`, and which of their classes are search
regions for the `search` cards (plates near vehicles)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from engine.config import Config, ModelSpec
from engine.models import ModelCard, ModelNotFound, create_adapter, load_card, resolve_model

__all__ = ["ModelSlot", "build_models", "int8_card"]

LOG = logging.getLogger("sladd")


@dataclass
class ModelSlot:
    card: ModelCard
    adapter: object
    anonymise_ids: np.ndarray          # model class ids that are anonymised
    name_ids: np.ndarray               # model class id -> index into Detector.names
    region_ids: np.ndarray | None = None   # model class ids that are search regions of a `search` card
    region_threshold: float | None = None  # a lower score threshold for those regions


def _effective_card(card: ModelCard, spec: ModelSpec) -> ModelCard:
    upd = {}
    if spec.score_threshold is not None:
        upd["score_threshold"] = spec.score_threshold
    if spec.classes is not None:
        upd["anonymise"] = list(spec.classes)
    if spec.tta_flip is not None:
        upd["tta_flip"] = spec.tta_flip
    if spec.merge is not None:
        upd["merge"] = spec.merge
    inp = {}
    if spec.scale is not None:
        inp["scale"] = spec.scale
    if spec.input_size is not None:
        inp["size"] = tuple(spec.input_size)
    if inp:
        upd["input"] = card.input.model_copy(update=inp)
    # Re-validate: an override may name classes the model lacks.
    return ModelCard.model_validate(card.model_copy(update=upd).model_dump())


def build_models(cfg: Config, runtime) -> tuple[list[ModelSlot], tuple[str, ...]]:
    names: list[str] = []
    slots = []
    for spec in cfg.models:
        card = _effective_card(load_card(spec.card), spec)
        try:
            path = resolve_model(card, spec.file)
        except ModelNotFound as exc:
            if not spec.optional:
                raise
            LOG.warning("NOT anonymised in this run: %s — model %s is not installed (%s)",
                        ", ".join(card.anonymise), card.name, exc)
            continue
        if spec.file is None:
            int8 = _int8_file(card, path, runtime)
            if int8 != path:
                card, path = int8_card(card), int8
        adapter = create_adapter(card, path, runtime)
        for n in card.class_names:
            if n in card.anonymise and n not in names:
                names.append(n)
        anon = np.array([card.class_names.index(n) for n in card.anonymise], np.int64)
        name_ids = np.array([names.index(n) if n in names else -1 for n in card.class_names], np.int32)
        slots.append(ModelSlot(card, adapter, anon, name_ids))
        LOG.info("model %s (%s) from %s: anonymises %s, score >= %.2f", card.name, card.family, path,
                 ", ".join(card.anonymise) or "nothing (its detections only guide other models)",
                 card.score_threshold)
    if not slots:
        raise ModelNotFound("no model could be loaded: nothing would be anonymised")
    _link_search_regions(cfg, slots)
    LOG.info("anonymising: %s", ", ".join(names))
    return slots, tuple(names)


def int8_card(card: ModelCard) -> ModelCard:
    """The card as it runs with its INT8 build: the cascade's INT8 candidate threshold."""
    if card.cascade is None or card.cascade.int8_threshold is None:
        return card
    return card.model_copy(update={"cascade": card.cascade.model_copy(update={"threshold": card.cascade.int8_threshold})})


def _int8_file(card: ModelCard, path, runtime):
    """The card's INT8 build instead of `path` where the runtime asks for INT8 (ONNX Runtime on
    the CPU with engine.precision int8, or auto on a CPU with VNNI/AMX)."""
    if not card.int8_file or getattr(runtime, "name", "") != "onnxruntime" or getattr(runtime, "device", "cpu") != "cpu":
        return path
    from engine.models.int8 import cpu_int8_dot, int8_record_ok
    from engine.models.resolve import models_dir

    want = getattr(runtime, "precision", "fp32")
    if want == "auto" and not cpu_int8_dot():
        LOG.info("model %s: fp32 (engine.precision auto: this CPU has no VNNI/AMX 8-bit dot products)", card.name)
        return path
    if want not in ("int8", "auto"):
        return path

    int8 = models_dir() / card.int8_file
    if int8_record_ok(path, int8):
        LOG.info("model %s: INT8 build %s (engine.precision %s)", card.name, int8,
                 "int8" if want == "int8" else "auto: this CPU has 8-bit dot products")
        return int8
    why = f"no INT8 build of {path.name} in {models_dir()}: `sladd models fetch {card.name}` builds it"
    if want == "int8":
        raise ModelNotFound(f"engine.precision int8: {why}")
    LOG.info("model %s: fp32 (%s)", card.name, why)
    return path


def _link_search_regions(cfg: Config, slots: list[ModelSlot]) -> None:
    """Mark in every other slot the classes that `search` cards look near; say when a search
    card has nothing to look near."""
    wanted = {c for s in slots if s.card.search for c in s.card.search.classes}
    thresholds = [s.card.search.region_threshold for s in slots if s.card.search and s.card.search.region_threshold]
    for s in slots:
        if not s.card.search:
            s.region_ids = np.array([i for i, n in enumerate(s.card.class_names) if n in wanted], np.int64)
            if (s.region_ids.size and thresholds and s.card.cascade is None and s.adapter.takes_threshold
                    and min(thresholds) < s.card.score_threshold):
                s.region_threshold = min(thresholds)
    for s in slots:
        if s.card.search:
            _say_where(cfg, s, [o.card.name for o in slots if o.region_ids is not None and o.region_ids.size])


def _say_where(cfg: Config, slot: ModelSlot, sources: list[str]) -> None:
    sp, what = slot.card.search, ", ".join(slot.card.anonymise)
    where = [f"near the {', '.join(sp.classes)} that {', '.join(sources)} finds"] if sources else []
    where += ["over the whole image at the model's input size"] if sp.full_frame else []
    where += ["in native-resolution tiles over the whole image"] if cfg.plates.full_frame_tiles else []
    if sources or cfg.plates.full_frame_tiles:
        LOG.info("model %s looks for %s %s", slot.card.name, what, " and ".join(where))
        return
    # Without a region model only what the full-frame pass sees (large ones) is found.
    LOG.warning("NOT anonymised in this run: %s%s — model %s looks near %s, and no loaded model detects "
                "them (install NanoDet: `sladd models fetch nanodet`, or set plates.full_frame_tiles: true)",
                "small " if sp.full_frame else "", what, slot.card.name, ", ".join(sp.classes))
