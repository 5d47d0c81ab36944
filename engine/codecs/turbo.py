"""libjpeg-turbo through PyTurboJPEG: the host decoder (with DCT-scaled decoding) and encoder.

CMYK and YCCK files (four components) are decoded to CMYK by libjpeg-turbo and turned into RGB
for the models with the plain formula R = (255 - C)(255 - K)/255, not through their ICC
profile: detection needs faces to look like faces, not colorimetry, and a CMS transform of a
5-megapixel frame costs more than its decode. The writer keeps such files in CMYK (engine.worker.render).
"""
from __future__ import annotations

import functools
import time
from fractions import Fraction
from typing import Optional

import numpy as np

from engine.held import Held
from engine.jpeg import apply_orientation, estimate_quality, parse_jpeg, read_orientation
from engine.types import Frame, ImageError, Job

__all__ = ["turbojpeg", "TurboDecoder", "TurboEncoder", "decode_cmyk", "cmyk_to_rgb", "rgb_to_cmyk", "keep_decoded",
           "drop_decoded", "decoding_ahead", "frame_bytes", "coefficients_fit", "library_name"]


def turbojpeg():
    """The shared strict TurboJPEG handle (lazy: libturbojpeg is a system library)."""
    global _TJ
    if _TJ is None:
        try:
            from turbojpeg import TurboJPEG
        except ImportError as exc:
            raise ImportError("PyTurboJPEG is missing: pip install 'sladd[cpu]'") from exc

        class _StrictTurboJPEG(TurboJPEG):
            # PyTurboJPEG only *warns* on libjpeg warnings such as "Premature end of JPEG file"
            # and returns a half-grey image. An anonymiser must fail such an image instead, so
            # every warning becomes an error, except trailing garbage after the last scan,
            # which many camera files carry and which leaves the pixels complete.
            def _TurboJPEG__report_error(self, handle):
                msg = self._TurboJPEG__get_error_string(handle)
                if isinstance(msg, bytes):
                    msg = msg.decode("utf-8", "replace")
                if "extraneous bytes before marker 0xd9" in msg:
                    return
                raise ImageError(f"JPEG decoder: {msg}")

        try:
            _TJ = _StrictTurboJPEG(lib_path=library_name())     # None: PyTurboJPEG's own search
        except (OSError, RuntimeError) as exc:
            raise ImportError(
                f"libturbojpeg could not be loaded ({exc}); on Debian/Ubuntu: apt-get install libturbojpeg0"
            ) from exc
    return _TJ


@functools.lru_cache(maxsize=1)
def library_name() -> Optional[str]:
    """The name libturbojpeg loads by: its soname first (ctypes' own search, `find_library`,
    runs `ldconfig -p` in a subprocess), else what that search finds; None when neither loads.
    The decoder's PyTurboJPEG and the lossless transform (engine.lossless) open the same one."""
    import ctypes
    import ctypes.util

    for name in ("libturbojpeg.so.0", lambda: ctypes.util.find_library("turbojpeg"), "libturbojpeg.dylib"):
        name = name() if callable(name) else name
        try:
            if name and ctypes.CDLL(name):
                return name
        except OSError:
            continue
    return None


_TJ = None
_AHEAD = Held(misses=4, one=True)   # (bytes, stored-orientation pixels) decoded ahead


def keep_decoded(data: bytes, pixels: np.ndarray, coefficients=None) -> None:
    """Full-scale pixels of `data` decoded ahead (engine.first_pass, during a run's start), with
    their engine.codecs.coefjpeg.Coefficients when it had them: the next full-scale decode of the
    same bytes takes them instead of decoding (once); dropped after a few decodes of other bytes."""
    _AHEAD.put(data, (pixels, coefficients))


AHEAD_WAIT = 0.5                    # seconds a decode waits for one ahead before decoding itself


def decoding_ahead(running: bool) -> None:
    """Say that a decode ahead (engine.first_pass, during the start) runs (True) or has ended
    (False): a full-scale decode meanwhile waits for it (at most AHEAD_WAIT s) and takes its
    pixels if they are of the same bytes, instead of decoding the same file beside it."""
    _AHEAD.making(running)


def _take_ahead(data: bytes):
    return _AHEAD.take(lambda kept: len(kept) == len(data) and kept == data, wait=AHEAD_WAIT)


# Bytes of coefficients per pixel by TurboJPEG subsampling (TJSAMP_*: 444, 422, 420, GRAY, 440,
# 411): 2 bytes per coefficient, one per luma pixel, fewer for subsampled chroma.
_COEF_BYTES = {0: 6.0, 1: 4.0, 2: 3.0, 3: 2.0, 4: 4.0, 5: 3.0}


def frame_bytes(info, subsampling: int) -> int:
    """What a full-scale frame of this file holds with its coefficients kept: RGB pixels and
    the DCT coefficients (6 bytes per pixel for a sampling TurboJPEG does not name)."""
    return int(info.width * info.height * (3 + _COEF_BYTES.get(subsampling, 6.0)))


def coefficients_fit(info, orientation: int, subsampling: int) -> bool:
    """Whether one pass of the JPEG helper (engine.codecs.coefjpeg) may decode this file and its
    coefficients be kept for the lossless writer: upright, baseline or extended sequential,
    grayscale or three components, and pixels and coefficients within COEFFICIENTS_MAX_BYTES."""
    return (orientation == 1 and info.sof in (0xC0, 0xC1) and info.components in (1, 3)
            and frame_bytes(info, subsampling) <= TurboDecoder.COEFFICIENTS_MAX_BYTES)


def drop_decoded() -> None:
    """Drop pixels decoded ahead (a run whose decoder will not take them)."""
    _AHEAD.clear()


class TurboDecoder:
    """Decode JPEG bytes to a host Frame.

    `min_scale` is the smallest fraction of the full resolution that every model still needs
    (1.0 for CenterFace at native size). The decoder picks the smallest libjpeg-turbo scale
    factor M/8 >= min_scale; the mask stage decodes at full size only if something is drawn.
    `device`, `device_id`, `threads` and `batch` are the arguments every decoder takes
    (engine.codecs.DECODERS); TurboJPEG decodes on the host, one image per call, and needs none.
    """

    name = "turbojpeg"
    scalable = True               # decodes at a DCT scale factor (engine.codecs.ScaledDecoder)

    keep_coefficients = False     # set by engine.worker.build when the writer patches losslessly
    # Coefficients add to a frame's bytes in the frames-in-flight budget (engine.driver.budget,
    # 256 MB): kept only where two frames with them still fit (pixels and coefficients under half
    # the budget); larger pictures (8000x4000 panoramas, 32 MP frames) went one at a time and
    # ran 40% slower with them.
    COEFFICIENTS_MAX_BYTES = 128 << 20

    def __init__(self, *, min_scale: float = 1.0, max_pixels: int = 200_000_000, device: str = "cpu",
                 device_id: Optional[int] = None, threads: Optional[int] = None, batch: Optional[int] = None):
        self.tj = turbojpeg()
        self.max_pixels = max_pixels
        self.scale = self.scale_for(min_scale)

    def scale_for(self, need: float) -> Fraction:
        """The smallest libjpeg-turbo scale factor M/8 in [need, 1]; 1 when none is."""
        want = Fraction(need).limit_denominator(64)
        ok = sorted(f for f in (Fraction(n, d) for n, d in self.tj.scaling_factors) if want <= f <= 1)
        return ok[0] if ok else Fraction(1)

    def decode(self, job: Job, data: bytes, info=None) -> Frame:
        """`info`: the file's parsed header when the caller already has it (parsed once)."""
        t0 = time.perf_counter()
        head = self.header(data, info)
        kept = self._with_coefficients(data, head)
        if kept is not None:
            frame = self.frame(job, data, head, kept[0], 1.0, time.perf_counter() - t0)
            frame.coefficients = kept[1]
            return frame
        pixels = apply_orientation(self.decode_pixels(data, self.scale, head["info"]), head["orientation"])
        return self.frame(job, data, head, pixels, float(self.scale), time.perf_counter() - t0)

    def _with_coefficients(self, data: bytes, head: dict):
        """(pixels, coefficients) from one pass of the native helper (engine.codecs.coefjpeg) for a
        full-scale upright baseline file whose output the lossless writer will patch; else None."""
        if not (self.keep_coefficients and self.scale == 1
                and coefficients_fit(head["info"], head["orientation"], head["subsampling"])):
            return None
        if _AHEAD:
            ahead = _take_ahead(data)
            if ahead is not None:
                return ahead                      # its coefficients may be None: the writer reads the file again
        from engine.codecs.coefjpeg import decode

        return decode(data)

    def header(self, data: bytes, info=None) -> dict:
        """What the frame needs from the file's header; ImageError for what is refused (too many
        pixels, 12-bit samples, two-component files) before any pixel is decoded."""
        info = info if info is not None else parse_jpeg(data)
        if info.width * info.height > self.max_pixels:
            raise ImageError(f"image is {info.width}x{info.height} = {info.width * info.height} pixels, above "
                             f"the limit engine.max_image_pixels={self.max_pixels}; raise it to process this image")
        if info.precision != 8:
            raise ImageError(f"{info.precision}-bit JPEG (precision {info.precision}) is not supported; "
                             "only 8-bit JPEGs are")
        if info.components not in (1, 3, 4):
            raise ImageError(f"unsupported JPEG colour space: {info.components} components "
                             "(grayscale, YCbCr/RGB and CMYK/YCCK are supported)")
        try:
            _, _, subsampling, _ = self.tj.decode_header(data)
        except OSError as exc:
            raise ImageError(f"JPEG decoder: {exc}") from None
        return {"info": info, "orientation": read_orientation(info.exif), "subsampling": subsampling}

    @staticmethod
    def frame(job: Job, data: bytes, head: dict, pixels, scale: float, seconds: float) -> Frame:
        info, orientation = head["info"], head["orientation"]
        full = (info.height, info.width) if orientation < 5 else (info.width, info.height)
        return Frame(job=job, data=data, pixels=pixels, scale=scale, full_size=full,
                     orientation=orientation, segments=[s for _, s in info.segments],
                     quality=estimate_quality(info.luma_table), subsampling=head["subsampling"],
                     timings={"decode": seconds}, exif=info.exif)

    def decode_pixels(self, data: bytes, scale: Fraction = Fraction(1), info=None) -> np.ndarray:
        """(H*scale, W*scale, 3) uint8 RGB in *stored* orientation. `info`: the parsed header,
        parsed here when not given (it says whether the file is CMYK)."""
        if _AHEAD:                                   # a scaled decode counts as a miss
            ahead = _take_ahead(data) if scale == 1 else _AHEAD.take(lambda kept: False)
            if ahead is not None:
                return ahead[0]
        return self.decode_fresh(data, scale, info)

    def decode_fresh(self, data: bytes, scale: Fraction = Fraction(1), info=None) -> np.ndarray:
        """decode_pixels without looking at pixels decoded ahead: what the decode ahead itself
        calls (it would wait for its own result)."""
        from turbojpeg import TJPF_RGB

        info = info if info is not None else parse_jpeg(data)
        if info.cmyk:
            return cmyk_to_rgb(decode_cmyk(data, scale, self.tj), info.adobe_transform is not None)
        return _decode(self.tj, data, scale, TJPF_RGB)

    def full_pixels(self, frame: Frame) -> np.ndarray:
        """Full-resolution display-orientation pixels of a frame (decodes again if it was scaled)."""
        if frame.scale == 1.0:
            return frame.pixels
        return apply_orientation(self.decode_pixels(frame.data), frame.orientation)


def _decode(tj, data: bytes, scale: Fraction, pixel_format: int) -> np.ndarray:
    from turbojpeg import TJFLAG_ACCURATEDCT, TJFLAG_STOPONWARNING

    factor = None if scale == 1 else (scale.numerator, scale.denominator)
    try:
        return tj.decode(data, pixel_format=pixel_format, scaling_factor=factor,
                         flags=TJFLAG_ACCURATEDCT | TJFLAG_STOPONWARNING)
    except OSError as exc:
        raise ImageError(f"JPEG decoder: {exc}") from None


def decode_cmyk(data: bytes, scale: Fraction = Fraction(1), tj=None) -> np.ndarray:
    """(H*scale, W*scale, 4) uint8 CMYK of a CMYK or YCCK JPEG in *stored* orientation, the
    values as stored (libjpeg-turbo undoes YCCK but never inverts: Adobe files hold 255 - ink)."""
    from turbojpeg import TJPF_CMYK

    return _decode(tj or turbojpeg(), data, scale, TJPF_CMYK)


def cmyk_to_rgb(cmyk: np.ndarray, inverted: bool) -> np.ndarray:
    """(..., 4) uint8 CMYK -> (..., 3) uint8 RGB, R = (255 - C)(255 - K)/255 rounded.

    `inverted`: the values are stored as 255 - ink, as Adobe writes them (files with an APP14
    Adobe marker, the convention Pillow and libjpeg's djpeg follow too). Host, allocates."""
    c = cmyk.astype(np.uint16)
    if not inverted:
        c = 255 - c
    return ((c[..., :3] * c[..., 3:] + 127) // 255).astype(np.uint8)


def rgb_to_cmyk(rgb: np.ndarray, inverted: bool) -> np.ndarray:
    """(..., 3) uint8 RGB -> (..., 4) uint8 CMYK, the inverse of `cmyk_to_rgb` with all the grey
    in K (K = 255 - max(R, G, B)); cmyk_to_rgb(rgb_to_cmyk(x)) == x up to 1 grey level. Host,
    allocates."""
    f = rgb.astype(np.float32)
    k = f.max(axis=-1, keepdims=True)                    # 255 - K: the inverted value
    cmy = np.where(k > 0, f * 255.0 / np.maximum(k, 1.0), 255.0)
    out = np.floor(np.concatenate([cmy, k], axis=-1) + 0.5).clip(0, 255).astype(np.uint8)
    return out if inverted else 255 - out


class TurboEncoder:
    """`encode(pixels, quality, subsampling) -> bytes` for host (H, W, 3) uint8 RGB frames.
    `device` is the argument every encoder takes (engine.codecs.ENCODERS): TurboJPEG encodes on
    the host, so the writer copies device frames to the host first (`accepts_device_arrays`)."""

    name = "turbojpeg"
    accepts_device_arrays = False

    def __init__(self, *, device: str = "cpu"):
        self.tj = turbojpeg()

    def encode(self, pixels: np.ndarray, quality: int, subsampling: int) -> bytes:
        from turbojpeg import TJFLAG_ACCURATEDCT, TJPF_RGB

        return self.tj.encode(pixels, quality=quality, pixel_format=TJPF_RGB,
                              jpeg_subsample=subsampling, flags=TJFLAG_ACCURATEDCT)

    def encode_cmyk(self, cmyk: np.ndarray, quality: int, subsampling: int) -> bytes:
        """(H, W, 4) uint8 CMYK, stored as Adobe does (255 - ink) -> a YCCK JPEG with an Adobe
        APP14 marker (libjpeg-turbo's only way to write four components)."""
        from turbojpeg import TJFLAG_ACCURATEDCT, TJPF_CMYK, TJSAMP_444

        if subsampling not in (0, 1, 2, 4, 5):           # unknown or gray: no chroma subsampling
            subsampling = TJSAMP_444
        return self.tj.encode(np.ascontiguousarray(cmyk), quality=quality, pixel_format=TJPF_CMYK,
                              jpeg_subsample=subsampling, flags=TJFLAG_ACCURATEDCT)
