"""Model cards: a model file plus what the engine needs to run it (family, input, classes,
thresholds). Cards ship in `engine/models/cards/*.yml`; users may pass a path to their own."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml

from engine.config.typed import Field, Section, ValidationError, model_validator

__all__ = ["ModelCard", "SearchSpec", "load_card", "CARDS_DIR", "shipped_cards"]

CARDS_DIR = Path(__file__).resolve().parent / "cards"


class _Strict(Section):
    """Unknown keys are errors; frozen (engine.config.typed)."""


class Source(_Strict):
    package: str
    version: Optional[str] = None
    path: str


class InputSpec(_Strict):
    mode: Literal["scale", "letterbox"]
    scale: float = Field(1.0, gt=0, le=4)
    size: Optional[tuple[int, int]] = None        # (height, width) for letterbox
    multiple: int = Field(32, ge=1)
    pad_value: float = 114.0

    @model_validator(mode="after")
    def _size(self):
        if self.mode == "letterbox" and self.size is None:
            raise ValueError("input.size [height, width] is required for mode letterbox")
        return self


class CascadeSpec(_Strict):
    """Coarse-to-fine detection: a pass at `scale` with a low `threshold` proposes candidates;
    each up to `max_refine` px (native resolution) is looked at again at native resolution in a
    crop of `context` x its size (at least `min_crop` px); larger faces are plain at the coarse
    scale and decided there. Kept: native-resolution detections, plus coarse ones above the
    card's threshold. `refine_strong: false` crops only the candidates below the card's
    threshold in planar frames: those above it are kept from the coarse pass either way, and
    their crop would only redraw their box at native resolution (360° tiles still crop them:
    there the crop joins the pieces of a face cut by tiles or the seam)."""

    scale: float = Field(0.5, gt=0, lt=1)
    threshold: float = Field(0.05, gt=0, lt=1)
    context: float = Field(3.0, ge=1, le=20)
    min_crop: int = Field(96, ge=32, le=4096)
    max_refine: int = Field(96, ge=8, le=4096)
    # The candidate threshold with the card's INT8 build: quantisation moves the heatmap by up
    # to ~0.05, and the lower threshold keeps the small faces INT8 would lose at `threshold`.
    int8_threshold: Optional[float] = Field(None, gt=0, lt=1)
    refine_strong: bool = True


class SearchSpec(_Strict):
    """Search regions: the model runs on crops around other models' detections of `classes`
    (plates near vehicles) at native resolution, each crop grown by `margin` x its size on
    every side and padded to the smallest of `buckets` (px) per side that holds it (a larger
    crop is shrunk to fit the largest), several crops per model call; plus (`full_frame`) one
    pass over the whole image at `input.size`, for large plates whose vehicle was missed. With
    the config's `plates.full_frame_tiles` it also runs on native-resolution tiles of `tile` px
    overlapping by `tile_overlap` px, for small plates whose vehicle was missed."""

    classes: list[str] = Field(min_length=1)
    # The region models run at this lower score threshold for the regions only (a vehicle found
    # with little confidence is still worth a look); what they anonymise keeps their threshold.
    region_threshold: Optional[float] = Field(None, gt=0, lt=1)
    full_frame: bool = True              # also one pass over the whole image at input.size (large plates)
    margin: float = Field(0.1, ge=0, le=2)
    # Each crop is also looked at smaller (a blurred plate is found when it is small), down to
    # `min_side` px; tiles only at native resolution.
    scales: tuple[float, ...] = (1.0,)
    min_side: int = Field(96, ge=16, le=4096)
    buckets: tuple[int, ...] = (160, 256, 384, 512, 640)
    tile: int = Field(640, ge=64, le=4096)
    tile_overlap: int = Field(128, ge=0, le=2048)

    @model_validator(mode="after")
    def _sizes(self):
        if not self.buckets or any(b % 32 or b < 32 for b in self.buckets) or list(self.buckets) != sorted(self.buckets):
            raise ValueError(f"search.buckets must be ascending multiples of 32, got {list(self.buckets)}")
        if self.tile_overlap >= self.tile:
            raise ValueError(f"search.tile_overlap ({self.tile_overlap}) must be smaller than search.tile ({self.tile})")
        return self


class ModelCard(_Strict):
    name: str
    family: str
    file: str
    sha256: Optional[str] = None
    # INT8 build of `file` for the CPU (engine.models.quantize), made by `sladd models fetch`;
    # used where engine.precision (auto on a CPU with VNNI/AMX, or int8) asks for it.
    int8_file: Optional[str] = None
    license: Optional[str] = None
    source: Optional[Source] = None
    url: Optional[str] = None
    input: InputSpec
    class_names: list[str]
    anonymise: list[str]
    score_threshold: float = Field(0.25, ge=0, le=1)
    nms_iou: float = Field(0.5, gt=0, le=1)
    box_scale: float = Field(1.0, gt=0, le=4)
    mask_shape: Literal["box", "ellipse"] = "box"
    # Box detectors over several views (tiles, mirrored pass): null = draw every box and count
    # overlapping ones once; nms / wbf / envelope = draw and count the merged boxes (BlurScene).
    merge: Optional[Literal["nms", "wbf", "envelope"]] = None
    merge_iou: float = Field(0.5, gt=0, le=1)
    merge_pre_score: float = Field(0.0, ge=0, le=1)
    merge_post_score: float = Field(0.0, ge=0, le=1)
    box_area: Literal["float", "int"] = "float"
    tta_flip: bool = False                         # also run each view mirrored
    cascade: Optional[CascadeSpec] = None          # coarse-to-fine (see CascadeSpec)
    search: Optional[SearchSpec] = None            # only near other models' detections (see SearchSpec)
    mask_threshold: float = Field(0.5, gt=0, lt=1)
    num_mask_coeffs: int = Field(32, ge=1)
    path: Optional[Path] = None                   # where the card was read from

    @model_validator(mode="after")
    def _classes(self):
        unknown = [c for c in self.anonymise if c not in self.class_names]
        if unknown:
            raise ValueError(f"anonymise names classes the model does not have: {unknown}")
        return self


def shipped_cards() -> list[str]:
    return sorted(p.stem for p in CARDS_DIR.glob("*.yml"))


def load_card(name_or_path: str) -> ModelCard:
    """A shipped card by name (`centerface`) or a card YAML by path."""
    p = Path(name_or_path)
    if not (p.suffix in (".yml", ".yaml") and p.exists()):
        p = CARDS_DIR / f"{name_or_path}.yml"
        if not p.is_file():
            raise ValueError(f"unknown model card {name_or_path!r}: not a card file, and not one of the "
                             f"shipped cards ({', '.join(shipped_cards())})")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CARDS:                       # a run start reads each card several times
        try:
            # libyaml's parser where PyYAML has it (5 ms a card with the pure-Python one).
            data = yaml.load(p.read_text(encoding="utf-8"), Loader=_LOADER)
            _CARDS[key] = ModelCard.model_validate({**data, "path": p})
        except (yaml.YAMLError, ValidationError, TypeError) as exc:
            raise ValueError(f"invalid model card {p}: {exc}") from None
    return _CARDS[key].model_copy(deep=True)


_CARDS: dict = {}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
