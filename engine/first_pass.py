"""The first image's large pass, run on the idle core while `sladd run` starts (engine.ov_prefetch).

A run's start (imports, configuration, building the worker: ~0.25 s of Python on one core)
leaves the other core idle once OpenVINO's compiled model is loaded. The prefetch thread spends
that time on the first input image's candidate pass: it decodes the first image of the input
folder (the first name in sorted order, as engine.walk lists a folder), shrinks it by the
integer factor the cascade uses (recorded by the last run of the command, or by `sladd models
fetch`), pads it as CenterFace's input (kernels.padded_planes) and runs the inference, which is
also OpenVINO's per-shape preparation. The decoded pixels go to the run's decoder (taken by the
decode of the same bytes: engine.codecs.turbo.keep_decoded). Input and outputs are kept here; a
detect thread whose input is byte for byte that input takes the outputs instead of running the
pass (engine.runtimes.ov_passes), so a guess that does not match (another file first, other
settings) is never used, only dropped.
Nothing is written; only a regular file the walk would list is read, and only a modest one.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional

__all__ = ["prepare", "first_image", "input_for", "keep", "take", "clear", "waiting"]

MAX_LISTED = 2000                # a larger input folder is not listed ahead (the walk lists it)
MAX_BYTES = 64 << 20
MAX_PIXELS = 50_000_000
MAX_INPUT = 6 << 20              # pixels of a guessed input: a 24 MP camera's half (a 360° frame's
                                 # is larger, and its passes are tiles)
MISSES = 4                       # large passes that may miss before what is kept is dropped
_EXTENSIONS = (".jpg", ".jpeg")
_INPUT = ("-i", "--input")

_KEPT: list = []                 # (input blob, {output name: array})
_MISSED: list[int] = [0]
_LOCK = threading.Lock()


def prepare() -> bool:
    """Import, in the calling (main) thread, what `input_for` uses (an import in a thread beside
    the start's imports waits out the GIL); False where the decoder cannot load."""
    try:
        from engine.codecs.turbo import turbojpeg
        from kernels import cv2_or_none

        turbojpeg()
        cv2_or_none()
        return True
    except Exception:  # noqa: BLE001 - no head start, nothing else
        return False


def first_image(argv: list[str]) -> Optional[Path]:
    """The input folder's first JPEG (regular file, sorted by name) named by `argv`'s -i, or
    None (no folder given, too many entries to list ahead, none there)."""
    folder, it = None, iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in _INPUT:
            folder = value if eq else next(it, None)
    if not folder:
        return None
    names = []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if len(names) >= MAX_LISTED:
                    return None
                names.append((e.name, e))
    except OSError:
        return None
    for name, e in sorted(names, key=lambda x: x[0]):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in _EXTENSIONS or stem.endswith("_preview") or name.startswith("."):
            continue
        try:
            if e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_size <= MAX_BYTES:
                return Path(e.path)
        except OSError:
            continue
    return None


def input_for(path: Optional[Path], shape: Optional[list] = None, view: Optional[dict] = None):
    """The (1, 3, h, w) float32 input of `path`'s candidate pass, or None (not a JPEG this can
    decode, no shrink that fits). With a recorded `shape`, the input must have it: `view`'s
    shrink ({"factor", "multiple"}, as runs record it), else the integer shrink whose input,
    padded to a multiple of 32, has it. With `view` alone (`sladd models fetch` recorded no
    shape yet), the first image's own size decides."""
    if path is None or (view is None and not shape):
        return None
    from engine.codecs.turbo import TurboDecoder, keep_decoded
    from engine.jpeg import apply_orientation, parse_jpeg, read_orientation

    try:
        data = path.read_bytes()
        info = parse_jpeg(data)
        if info.precision != 8 or info.components not in (1, 3, 4) or info.width * info.height > MAX_PIXELS:
            return None
        stored = TurboDecoder().decode_pixels(data, info=info)
        pixels = apply_orientation(stored, read_orientation(info.exif))
    except Exception:  # noqa: BLE001 - the run reports what is wrong with the file
        return None
    blob = _shrunk(pixels, shape, view)
    keep_decoded(data, stored)            # after the last read here: the run may draw into them
    return blob


def _shrunk(pixels, shape: Optional[list], view: Optional[dict]):
    from kernels import downscale_mean, padded_planes

    h, w = pixels.shape[:2]
    try:
        factors, m = ([int(view["factor"])], int(view["multiple"])) if view is not None else (range(1, 9), 32)
    except (KeyError, TypeError, ValueError):
        return None
    for f in factors:
        if f < 1 or m < 1 or h // f < 1 or w // f < 1:
            continue
        ih, iw = -(-(h // f) // m) * m, -(-(w // f) // m) * m
        if ih * iw > MAX_INPUT:
            continue
        # A recorded shape the frame's input does not have: the run's passes are tiles (360°)
        # or other frames; then no guess (ov_prefetch warms that shape up instead).
        if (view is not None and not shape) or [ih, iw] == list(shape[2:]):
            small = pixels if f == 1 else downscale_mean(pixels, f)
            return padded_planes([small], ih, iw)
    return None


def keep(blob, outputs: dict) -> None:
    with _LOCK:
        _KEPT.append((blob, outputs))
        _MISSED[0] = 0


def waiting() -> bool:
    """Whether a kept pass waits to be taken (cheap: no lock)."""
    return bool(_KEPT)


def take(blob) -> Optional[dict]:
    """The kept outputs of a pass whose input equals `blob` (handed out once), else None; what
    is kept is dropped after `MISSES` passes that were not it."""
    import numpy as np

    with _LOCK:
        for k, (x, outputs) in enumerate(_KEPT):
            if x.shape == blob.shape and x.dtype == blob.dtype and np.array_equal(x, blob):
                del _KEPT[k]
                return outputs
        _MISSED[0] += 1
        if _MISSED[0] >= MISSES:
            _KEPT.clear()
    return None


def clear() -> None:
    with _LOCK:
        _KEPT.clear()
