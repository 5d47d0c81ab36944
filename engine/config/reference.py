"""The reference system's keys that sladd reads differently: keys it ignores (with a warning)
and the flat masking keys, which map onto the `mask` section.

The reference chose the drawing from four flat keys: `blur: null` meant colour fill, else
`gray_blur: false` a colour blur, else `normalized_gray_blur` picked between the two gray
blurs. sladd names the drawing `mask.mode`; the flat keys are still accepted and mapped, and a
flat key that disagrees with the `mask` section is an error (which one was meant?).
"""
from __future__ import annotations

from typing import Any, Optional

from engine.config.checks import short_repr
from engine.config.fields import RGB, Blur, Dilation, Strict
from engine.config.typed import Section, StrictBool, ValidationError

__all__ = ["DEPRECATED_KEYS", "FLAT_MASK_KEYS", "ReferenceMaskKeys", "map_flat_mask_keys", "reference_mode"]

# Reference keys that no longer mean anything in sladd, with the reason shown to the user.
DEPRECATED_KEYS = {
    "force_remask": "reruns are driven by the ledger; use `sladd run --force` to redo finished images",
    "lazy_paths": "the input tree is always walked lazily (streamed)",
    "enable_async": "outputs are always written by a thread pool (see `engine.writers`)",
    "max_num_async_workers": "use `engine.writers` for the number of output threads",
    "model_type": "the TensorFlow Mask R-CNN models are gone; choose models under `models`",
}


class ReferenceMaskKeys(Strict):
    """The reference's flat masking keys, with the rules of the `mask` keys they map to. Only
    the keys a file names are mapped; None for `blur` is the reference's colour fill."""

    blur: Optional[Blur] = None                      # -> mask.blur; null -> mask.mode fill
    gray_blur: Optional[StrictBool] = None           # -> mask.mode (see reference_mode)
    normalized_gray_blur: Optional[StrictBool] = None
    mask_color: Optional[RGB] = None                 # -> mask.color
    mask_dilation_pixels: Optional[Dilation] = None  # -> mask.dilation_pixels


FLAT_MASK_KEYS = tuple(ReferenceMaskKeys.model_fields)
_SECTION_KEY = {"blur": "blur", "mask_color": "color", "mask_dilation_pixels": "dilation_pixels"}


def reference_mode(*, fill: bool, gray_blur: bool, normalized_gray_blur: bool) -> str:
    """The draw mode the reference's keys select (its save.py); a flag not given counts as the
    reference's default, true."""
    if fill:
        return "fill"
    if not gray_blur:
        return "blur"
    return "normalized_gray_blur" if normalized_gray_blur else "gray_blur"


def _conflict(flat: str, key: str, flat_value: Any, value: Any) -> ValidationError:
    """A validation error at `mask.<key>` (the configuration's validation adds it to its errors)."""
    msg = f"disagrees with the reference key `{flat}`, which gives {short_repr(flat_value)}: set one of them, not both"
    return ValidationError("Config", [{"type": "mask_conflict", "loc": ("mask", key), "msg": msg, "input": value}])


def _same(a: Any, b: Any) -> bool:
    norm = (lambda v: tuple(v) if isinstance(v, list) else v)
    return norm(a) == norm(b)


def map_flat_mask_keys(data: Any) -> Any:
    """`data` (one config source, a mapping) with the reference's flat masking keys moved into
    its `mask` section. Raises engine.config.typed.ValidationError naming the flat key for a bad value,
    and `mask.<key>` where a flat key and the section disagree. `mask.mode: null` (written by
    earlier versions' default.yml) means unset."""
    if not isinstance(data, dict):
        return data
    section = data.get("mask")
    if isinstance(section, Section):
        section = section.model_dump(include=section.model_fields_set)
    elif isinstance(section, dict):
        section = {k: v for k, v in section.items() if not (k == "mode" and v is None)}
    flat = {k: data[k] for k in FLAT_MASK_KEYS if k in data}
    out = {k: v for k, v in data.items() if k not in flat}
    if section is None:
        section = {}
    elif not isinstance(section, dict):
        return out                  # the section's own type error is reported; fix that first
    if flat:
        ref = ReferenceMaskKeys.model_validate(flat)
        mapped = {_SECTION_KEY[k]: getattr(ref, k) for k in flat if k in _SECTION_KEY}
        if mapped.get("blur", 0) is None:
            del mapped["blur"]      # null is not a kernel: it selects the fill mode below
        if "gray_blur" in flat or "normalized_gray_blur" in flat or ("blur" in flat and ref.blur is None):
            mapped["mode"] = reference_mode(fill="blur" in flat and ref.blur is None,
                                            gray_blur=ref.gray_blur is not False,
                                            normalized_gray_blur=ref.normalized_gray_blur is not False)
        for key, value in mapped.items():
            if key in section and not _same(section[key], value):
                names = [k for k in flat if _SECTION_KEY.get(k) == key] or \
                        [k for k in ("blur", "gray_blur", "normalized_gray_blur") if k in flat]
                raise _conflict(" / ".join(names), key, value, section[key])
        section = {**section, **mapped}
    if section or "mask" in data:
        out["mask"] = section
    return out
