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
pass with the same compiled model (engine.runtimes.ov_passes: the outputs carry the model file
and settings that made them), so a guess that does not match (another file first, another model
or settings) is never used, only dropped. Nothing is written. Only a regular file is read (opened
without following a link and without blocking, then checked), of at most MAX_BYTES, and not one
whose output already exists (a rerun skips it); the walk's own rules (configured extensions,
hidden files) may still pick another first image, which only loses the guess.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from engine.held import Held

__all__ = ["prepare", "first_image", "input_for", "keep", "take", "clear", "waiting"]

MAX_LISTED = 2000                # a larger input folder is not listed ahead (the walk lists it)
MAX_BYTES = 64 << 20
MAX_PIXELS = 50_000_000
MAX_INPUT = 6 << 20              # pixels of a guessed input: a 24 MP camera's half (a 360° frame's
                                 # is larger, and its passes are tiles)
MISSES = 4                       # large passes that may miss before what is kept is dropped
_EXTENSIONS = (".jpg", ".jpeg")
_INPUT = ("-i", "--input")
_OUTPUT = ("-o", "--output")

_KEPT = Held(misses=MISSES)      # key (input blob, (model file, settings)): {output name: array}


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


def _argument(argv: list[str], names: tuple) -> Optional[str]:
    value, it = None, iter(argv)
    for arg in it:
        name, eq, v = arg.partition("=")
        if name in names:
            value = v if eq else next(it, None)
    return value


def first_image(argv: list[str]) -> Optional[Path]:
    """The input folder's first JPEG (regular file, sorted by name) named by `argv`'s -i whose
    output (-o) is not there yet, or None (no folder given, too many entries to list ahead,
    none there)."""
    folder, out = _argument(argv, _INPUT), _argument(argv, _OUTPUT)
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
            if out and os.path.lexists(os.path.join(out, name)):
                continue                                   # done in an earlier run, most likely
            if e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_size <= MAX_BYTES:
                return Path(e.path)
        except OSError:
            continue
    return None


def _read_regular(path: Path) -> Optional[bytes]:
    """The bytes of `path` if it is (still) a regular file of at most MAX_BYTES, else None:
    opened without following a link or blocking on a FIFO swapped in since the listing."""
    from engine.decode import read_bytes
    from engine.types import ImageError

    try:
        return read_bytes(path, follow_links=False, max_bytes=MAX_BYTES)
    except ImageError:
        return None


def input_for(path: Optional[Path], shape: Optional[list] = None, view: Optional[dict] = None):
    """The (1, 3, h, w) float32 input of `path`'s candidate pass, or None (not a JPEG this can
    decode, no shrink that fits). With a recorded `shape`, the input must have it: `view`'s
    shrink ({"factor", "multiple"}, as runs record it), else the integer shrink whose input,
    padded to a multiple of 32, has it. With `view` alone (`sladd models fetch` recorded no
    shape yet), the first image's own size decides."""
    if path is None or (view is None and not shape):
        return None
    from engine.codecs import coefjpeg
    from engine.codecs.turbo import TurboDecoder, coefficients_fit, keep_decoded, turbojpeg
    from engine.jpeg import apply_orientation, parse_jpeg, read_orientation

    data = _read_regular(path)
    if data is None:
        return None
    try:
        info = parse_jpeg(data)
        if info.precision != 8 or info.components not in (1, 3, 4) or info.width * info.height > MAX_PIXELS:
            return None
        upright = read_orientation(info.exif) < 5
        plan = _plan(info.height if upright else info.width, info.width if upright else info.height, shape, view)
        if plan is None:
            return None        # no input of this frame is guessed (a panorama's passes are tiles): not decoded
        sampling = turbojpeg().decode_header(data)[2]    # what TurboJPEG refuses, the run fails: no guess
        got = coefjpeg.decode(data) if coefficients_fit(info, read_orientation(info.exif), sampling) else None
        stored, coefs = got if got is not None else (TurboDecoder().decode_fresh(data, info=info), None)
        pixels = apply_orientation(stored, read_orientation(info.exif))
    except Exception:  # noqa: BLE001 - the run reports what is wrong with the file
        return None
    from kernels import downscale_mean, padded_planes

    f, ih, iw = plan
    blob = padded_planes([pixels if f == 1 else downscale_mean(pixels, f)], ih, iw)
    keep_decoded(data, stored, coefs)     # after the last read here: the run may draw into them
    return blob


def _plan(h: int, w: int, shape: Optional[list], view: Optional[dict]) -> Optional[tuple]:
    """(shrink factor, input height, input width) of an upright h x w frame's candidate pass, or
    None where none is guessed."""
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
            return f, ih, iw
    return None


def keep(blob, outputs: dict, made_by: tuple) -> None:
    """The outputs of the pass over `blob`; `made_by`: (model file, settings) of the compiled
    model that ran it."""
    _KEPT.put((blob, made_by), outputs)


def waiting() -> bool:
    """Whether a kept pass waits to be taken (cheap: no lock)."""
    return bool(_KEPT)


def take(blob, made_by: tuple) -> Optional[dict]:
    """The kept outputs of a pass whose input equals `blob`, made by the same model file and
    settings (handed out once), else None; what is kept is dropped after `MISSES` passes that
    were not it."""
    import numpy as np

    def same(key) -> bool:
        x, by = key
        return by == made_by and x.shape == blob.shape and x.dtype == blob.dtype and np.array_equal(x, blob)
    return _KEPT.take(same)


def clear() -> None:
    """Drop what is kept (a run that does not run these passes, or runs another model)."""
    _KEPT.clear()
