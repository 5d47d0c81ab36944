"""Model families, cards and file resolution. The runtimes that run the models are in
engine.runtimes.

A model family is one adapter class (engine/models/<family>.py: preprocessing, the graph's
outputs decoded into RawDetections, INT8 calibration preprocessing) registered below under the
name model cards give as `family`."""
from engine.models.base import Adapter, RawDetections
from engine.models.card import ModelCard, SearchSpec, load_card, shipped_cards
from engine.models.centerface import CenterFaceAdapter
from engine.models.nanodet import NanoDetAdapter
from engine.models.resolve import ModelNotFound, models_dir, resolve_model
from engine.models.yolo_det import YoloDetAdapter
from engine.models.yolo_seg import YoloSegAdapter
from engine.registry import Registry

__all__ = ["Adapter", "RawDetections", "ModelCard", "SearchSpec", "load_card", "shipped_cards", "ModelNotFound",
           "models_dir", "resolve_model", "MODEL_FAMILIES", "create_adapter"]

MODEL_FAMILIES = Registry("family")
MODEL_FAMILIES.add("centerface", CenterFaceAdapter)
MODEL_FAMILIES.add("nanodet", NanoDetAdapter)
MODEL_FAMILIES.add("yolo-det", YoloDetAdapter)
MODEL_FAMILIES.add("yolo-seg", YoloSegAdapter)


def create_adapter(card: ModelCard, model_path, runtime) -> Adapter:
    """The adapter of `card.family`; ValueError naming the card and the valid families."""
    try:
        factory = MODEL_FAMILIES.get(card.family)
    except ValueError as exc:
        raise ValueError(f"model card {card.name}: {exc}") from None
    return factory(card=card, model_path=model_path, runtime=runtime)
