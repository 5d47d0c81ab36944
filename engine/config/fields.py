"""Value types shared by the configuration model and the mapping of the reference's keys, so
that a rule (a range, an enum) is written once."""
from __future__ import annotations

from typing import Annotated, Literal

from engine.config.typed import AfterValidator, Field, Section
from kernels.draw import MODES

__all__ = ["Strict", "IMAGE_TYPES", "ImageType", "MASK_MODES", "MaskMode", "Blur", "Dilation", "RGB"]


class Strict(Section):
    """A config section: unknown keys are errors, values are frozen after load (engine.config.typed)."""


# Closed sets are enums, so a typo is an error listing the valid values. "Planar" and "360" are
# the reference's values and are written into exif_imagetype and bildeid as given.
IMAGE_TYPES = ("Planar", "360")
ImageType = Literal[IMAGE_TYPES]
# The draw modes are kernels.draw.DRAW_MODES: a new mode there is a new value here.
MASK_MODES = MODES
MaskMode = Literal[MASK_MODES]


def _rgb(v: tuple[int, int, int]) -> tuple[int, int, int]:
    if any(not 0 <= c <= 255 for c in v):
        raise ValueError("each channel must be 0..255")
    return v


# Box kernel = blur/1000 x image width (never below 3 px; kernels.draw.blur_ksize).
Blur = Annotated[int, Field(ge=1, le=1000)]
# Square (2p+1) x (2p+1) dilation of every mask, in pixels.
Dilation = Annotated[int, Field(ge=0, le=1000)]
RGB = Annotated[tuple[int, int, int], AfterValidator(_rgb)]
