"""Model families, cards, file resolution and runtimes."""
from engine.models.base import Adapter, RawDetections
from engine.models.card import ModelCard, load_card, shipped_cards
from engine.models.centerface import CenterFaceAdapter
from engine.models.nanodet import NanoDetAdapter
from engine.models.resolve import ModelNotFound, models_dir, resolve_model
from engine.models.runtime import RUNTIMES, create_runtime
from engine.models.yolo_seg import YoloSegAdapter

MODEL_FAMILIES = {"centerface": CenterFaceAdapter, "nanodet": NanoDetAdapter, "yolo-seg": YoloSegAdapter}


def create_adapter(card: ModelCard, model_path, runtime) -> Adapter:
    try:
        cls = MODEL_FAMILIES[card.family]
    except KeyError:
        raise ValueError(f"model card {card.name}: unknown family {card.family!r}; "
                         f"valid: {', '.join(sorted(MODEL_FAMILIES))}") from None
    return cls(card, model_path, runtime)


__all__ = ["Adapter", "RawDetections", "ModelCard", "load_card", "shipped_cards", "ModelNotFound",
           "models_dir", "resolve_model", "RUNTIMES", "create_runtime", "MODEL_FAMILIES", "create_adapter"]
