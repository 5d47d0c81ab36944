"""Lossless outside the masks: only the JPEG blocks a mask touches are re-encoded.

libjpeg-turbo's lossless transform (`tjTransform`, the engine of `jpegtran`) re-writes the input's
DCT coefficients, turning the picture upright in the DCT domain (EXIF orientation -> 1); its custom
filter replaces on the way the coefficients of every MCU (8x8 or 16x16 pixels, by subsampling) a
mask touches with those of the masked pixels, quantised with the input's own tables (computed
here: JFIF YCbCr, box downsampling, the orthonormal DCT of T.81 A.3.3). Every other MCU keeps its
coefficients, so it decodes to the input's pixels (after the same lossless rotation); libjpeg's
default "fancy" chroma upsampling interpolates the one pixel row/column next to a re-encoded MCU
from its chroma too (a few levels; 0 with fast upsampling). SGBlur does this with `jpegtran -drop`.

Grayscale, YCbCr and RGB JPEGs are patched; CMYK/YCCK with masks, 12-bit, lossless/hierarchical
files and rotations that would move a partial edge MCU return None: the caller re-encodes as
before. Nothing unverified is returned: the filter's writes are counted, the output's size and
quantisation tables checked against the plan.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from engine.codecs.coefjpeg import write_patched
from engine.embedded import carried_segments
from engine.jpeg import parse_jpeg, splice_segments
from engine.types import ImageError
from kernels import get_array_module, group_regions, on_device, to_host

__all__ = ["Geometry", "LosslessUnavailable", "Patched", "geometry", "patch_render", "render_lossless", "transcode",
           "touched_mcus", "encode_mcus", "ORIENTATION_OPS"]

LOG = logging.getLogger("sladd")

# EXIF orientation -> tjTransform op (TJXOP_*) that turns the stored picture upright, as
# engine.jpeg.apply_orientation turns the decoded pixels.
ORIENTATION_OPS = {1: 0, 2: 1, 3: 6, 4: 2, 5: 3, 6: 5, 7: 4, 8: 7}
_TRANSPOSING = {3, 4, 5, 7}                      # TRANSPOSE, TRANSVERSE, ROT90, ROT270
_TJXOPT_PERFECT, _TJXOPT_PROGRESSIVE, _TJXOPT_COPYNONE = 1, 32, 64
_TJCS_RGB, _TJCS_YCBCR, _TJCS_GRAY = 0, 1, 2
_SOF_OK = (0xC0, 0xC1, 0xC2, 0xC9, 0xCA)        # baseline, extended, progressive (Huffman or arithmetic)
_ZIGZAG = np.array([0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
                    20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
                    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63])
_k = np.arange(8)
_DCT = (np.sqrt(np.where(_k == 0, 1.0, 2.0) / 8.0)[:, None]
        * np.cos((2 * _k[None, :] + 1) * _k[:, None] * np.pi / 16)).astype(np.float32)   # orthonormal DCT-II


class LosslessUnavailable(ImageError):
    """This image cannot be patched losslessly (the reason says why); re-encode it instead."""


@dataclass(frozen=True)
class Geometry:
    """The upright output's layout. `comps`: per component (h, v, (64,) float32 natural-order
    quantisation table as the output holds it); `mcu`: (height, width) in pixels; `blocks`: per
    component (rows, cols) of 8x8 blocks that hold data; `colour`: TJCS_*."""
    op: int
    width: int
    height: int
    comps: tuple
    mcu: tuple[int, int]
    blocks: tuple
    colour: int
    progressive: bool

    @property
    def patchable(self) -> bool:
        return self.colour in (_TJCS_RGB, _TJCS_YCBCR, _TJCS_GRAY)


@dataclass
class Patched:
    """`data`: the output JPEG; `masked`: masks were drawn; `pixels`: the anonymised display
    pixels on the host when asked for; `mcus`: (N, 2) int (row, col) of the re-encoded MCUs of
    `mcu` (height, width) pixels in the upright image, None when the whole image was re-encoded."""
    data: bytes
    masked: bool
    pixels: Optional[np.ndarray]
    mcus: Optional[np.ndarray]
    mcu: tuple[int, int]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)                                       # integer ceil(a / b)

# --- the file's layout -----------------------------------------------------------------------------
def _tables_and_frame(data: bytes, info) -> tuple[dict, list, int]:
    """({table id: (64,) natural-order values}, [(component id, h, v, table id)], SOF marker)."""
    tables, comps = {}, []
    for marker, start, end in info.header:
        payload = data[start + 4:end]
        if marker == 0xDB:
            i = 0
            while i < len(payload):
                pq, tq = payload[i] >> 4, payload[i] & 15
                size = 128 if pq else 64
                vals = np.frombuffer(payload[i + 1:i + 1 + size], ">u2" if pq else np.uint8)
                if vals.size != 64:
                    raise LosslessUnavailable("short quantisation table")
                tables[tq] = np.empty(64, np.float32)
                tables[tq][_ZIGZAG] = vals
                i += 1 + size
        elif marker == info.sof:
            comps = [(payload[6 + 3 * k], payload[7 + 3 * k] >> 4, payload[7 + 3 * k] & 15, payload[8 + 3 * k])
                     for k in range(payload[5])]
    return tables, comps, info.sof


def geometry(data: bytes, orientation: int, info=None) -> Geometry:
    """The layout of `data` turned upright; LosslessUnavailable when it cannot be transformed
    losslessly (a partial edge MCU that the rotation would move to the top or left edge)."""
    from engine.codecs.turbo import turbojpeg

    info = info if info is not None else parse_jpeg(data)
    if info.sof not in _SOF_OK or info.precision != 8:
        raise LosslessUnavailable(f"JPEG process SOF{info.sof - 0xC0} / {info.precision}-bit is not transformed")
    tables, comps, _ = _tables_and_frame(data, info)
    if not comps or any(c[3] not in tables for c in comps):
        raise LosslessUnavailable("a component's quantisation table is not defined before the frame")
    if len(comps) == 1:
        comps = [(comps[0][0], 1, 1, comps[0][3])]        # libjpeg: one component, 8x8 MCUs
    hmax, vmax = max(c[1] for c in comps), max(c[2] for c in comps)
    if any(hmax % c[1] or vmax % c[2] for c in comps):
        raise LosslessUnavailable("non-integer chroma sampling ratios")
    op, w, h = ORIENTATION_OPS.get(orientation, 0), info.width, info.height
    # HFLIP, ROT180, TRANSVERSE, ROT270 mirror the stored x axis; VFLIP, ROT180, TRANSVERSE, ROT90 y.
    if (op in (1, 6, 4, 7) and w % (8 * hmax)) or (op in (2, 6, 4, 5) and h % (8 * vmax)):
        raise LosslessUnavailable(f"{w}x{h} is not a whole number of {8 * hmax}x{8 * vmax} MCUs: orientation "
                                  f"{orientation} cannot be applied losslessly")
    out = []
    for _, hs, vs, tq in comps:
        q = tables[tq].reshape(8, 8)
        if op in _TRANSPOSING:
            hs, vs, q = vs, hs, q.T
        out.append((hs, vs, np.ascontiguousarray(q).reshape(64)))
    if op in _TRANSPOSING:
        w, h, hmax, vmax = h, w, vmax, hmax
    blocks = tuple((_ceil(_ceil(h * vs, vmax), 8), _ceil(_ceil(w * hs, hmax), 8)) for hs, vs, _ in out)
    try:
        colour = turbojpeg().decode_header(data)[3]
    except (OSError, ImageError) as exc:
        raise LosslessUnavailable(f"JPEG header: {exc}") from None
    return Geometry(op, w, h, tuple(out), (8 * vmax, 8 * hmax), blocks, colour, info.sof in (0xC2, 0xCA))


# --- which MCUs, and their new coefficients ----------------------------------------------------------
def touched_mcus(regions, geo: Geometry) -> np.ndarray:
    """(N, 2) int64 (row, col) of the MCUs any region's mask touches; regions are the masker's
    `(y0, x0, mask)` in upright full-resolution pixels (host or device)."""
    mh, mw = geo.mcu
    grid = np.zeros((_ceil(geo.height, mh), _ceil(geo.width, mw)), bool)
    for y0, y1, x0, x1, m in group_regions(list(regions), (geo.height, geo.width)):
        r0, c0, r1, c1 = y0 // mh, x0 // mw, _ceil(y1, mh), _ceil(x1, mw)
        cell = np.zeros(((r1 - r0) * mh, (c1 - c0) * mw), bool)
        cell[y0 - r0 * mh:y1 - r0 * mh, x0 - c0 * mw:x1 - c0 * mw] = to_host(m)
        grid[r0:r1, c0:c1] |= cell.reshape(r1 - r0, mh, c1 - c0, mw).any(axis=(1, 3))
    return np.argwhere(grid)


def encode_mcus(pixels, mcus: np.ndarray, geo: Geometry) -> dict:
    """New quantised coefficients of `mcus` from `pixels` ((H, W, 3) uint8 RGB upright, host or
    device; only the MCUs' pixels are copied to the host). Returns {component: {block row:
    (block cols (K,) int64, coefficients (K, 64) int16 natural order)}}; blocks past the
    component's data (partial edge MCUs) are left out, as libjpeg never stores them."""
    if len(mcus) == 0:
        return {}
    xp, (mh, mw), n = get_array_module(pixels), geo.mcu, len(mcus)
    # Edge MCUs are padded by repeating the last row/column, as libjpeg pads its input.
    ry = np.minimum(mcus[:, :1] * mh + np.arange(mh), geo.height - 1)
    rx = np.minimum(mcus[:, 1:] * mw + np.arange(mw), geo.width - 1)
    tiles = to_host(pixels[xp.asarray(ry)[:, :, None], xp.asarray(rx)[:, None, :]]).astype(np.float32)
    r, g, b = tiles[..., 0], tiles[..., 1], tiles[..., 2]
    if geo.colour == _TJCS_RGB:
        planes = [r - 128, g - 128, b - 128]
    elif geo.colour == _TJCS_GRAY:
        planes = [0.299 * r + 0.587 * g + 0.114 * b - 128]
    else:                                                   # JFIF YCbCr (T.871)
        planes = [0.299 * r + 0.587 * g + 0.114 * b - 128, -0.168736 * r - 0.331264 * g + 0.5 * b,
                  0.5 * r - 0.418688 * g - 0.081312 * b]
    vmax, hmax = mh // 8, mw // 8
    out: dict = {}
    for ci, ((hs, vs, q), plane) in enumerate(zip(geo.comps, planes)):
        fy, fx = vmax // vs, hmax // hs
        p = plane.reshape(n, mh // fy, fy, mw // fx, fx).mean(axis=(2, 4)) if fy * fx > 1 else plane
        blk = p.reshape(n, vs, 8, hs, 8).transpose(0, 1, 3, 2, 4)              # (N, vs, hs, 8, 8)
        coef = np.clip(np.rint((_DCT @ blk @ _DCT.T).reshape(n, vs, hs, 64) / q), -1023, 1023).astype(np.int16)
        brow = mcus[:, 0, None, None] * vs + np.arange(vs)[None, :, None]
        bcol = mcus[:, 1, None, None] * hs + np.arange(hs)[None, None, :]
        brow, bcol = np.broadcast_to(brow, (n, vs, hs)).ravel(), np.broadcast_to(bcol, (n, vs, hs)).ravel()
        keep = (brow < geo.blocks[ci][0]) & (bcol < geo.blocks[ci][1])
        brow, bcol, coef = brow[keep], bcol[keep], coef.reshape(-1, 64)[keep]
        order = np.argsort(brow, kind="stable")
        brow, bcol, coef = brow[order], bcol[order], coef[order]
        uniq, start, count = np.unique(brow, return_index=True, return_counts=True)
        out[ci] = {int(r): (bcol[s:s + c], coef[s:s + c]) for r, s, c in zip(uniq, start, count)}
    return out


# --- libjpeg-turbo's lossless transform (ctypes) -------------------------------------------------------
class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


# tjregion (four ints, 16 bytes) travels by value in two 64-bit registers on x86-64 (System V)
# and arm64 (AAPCS64): declared as two uint64 there, ctypes builds no Structure per call (the
# filter runs once per block row and component: 512 calls for 5 MP, ~5 ms saved). The filter
# checks the plane size it is given against the plan, so a wrong declaration fails, never patches.
_PACKED = os.name == "posix" and platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")
_REGION = (ctypes.c_uint64, ctypes.c_uint64) if _PACKED else (_Region,)
_FILTER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, *_REGION, *_REGION, ctypes.c_int, ctypes.c_int,
                           ctypes.c_void_p)


class _Transform(ctypes.Structure):
    _fields_ = [("r", _Region), ("op", ctypes.c_int), ("options", ctypes.c_int), ("data", ctypes.c_void_p),
                ("customFilter", _FILTER)]


_LIB = None                                                 # libturbojpeg, loaded on first use


def _lib():
    """libturbojpeg (the library PyTurboJPEG loads), with the transform API's prototypes."""
    global _LIB
    if _LIB is None:
        from engine.codecs.turbo import library_name

        name = library_name()
        lib = ctypes.CDLL(name) if name else None
        if lib is None:
            raise ImportError("libturbojpeg could not be loaded; on Debian/Ubuntu: apt-get install libturbojpeg0")
        lib.tjInitTransform.restype = ctypes.c_void_p
        lib.tjTransform.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_int,
                                    ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)), ctypes.POINTER(ctypes.c_ulong),
                                    ctypes.POINTER(_Transform), ctypes.c_int]
        lib.tjGetErrorStr2.restype = ctypes.c_char_p
        lib.tjGetErrorStr2.argtypes = lib.tjGetErrorCode.argtypes = lib.tjFree.argtypes = [ctypes.c_void_p]
        lib.tjDestroy.argtypes = [ctypes.c_void_p]
        _LIB = lib
    return _LIB


def _patch_filter(patches: dict, geo: Geometry):
    """The custom filter writing `patches` into the output coefficients, and its tally. An
    exception inside is recorded and stops the transform (a ctypes callback that raised would
    otherwise return 0: success)."""
    tally = {"written": 0, "error": None}

    def apply(ptr, ay, aw, ah, pw, ph, ci):
        rows = patches.get(ci)
        if not rows:
            return 0
        if (ph // 8, pw // 8) != geo.blocks[ci]:
            raise LosslessUnavailable(f"component {ci} is {pw // 8}x{ph // 8} blocks, planned "
                                      f"{geo.blocks[ci][1]}x{geo.blocks[ci][0]}")
        r0, n = ay // 8, ah // 8
        view = None
        for r in range(r0, r0 + n):
            item = rows.get(r)
            if item is not None:
                if view is None:
                    view = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_short)), (n, aw // 8, 64))
                view[r - r0, item[0]] = item[1]
                tally["written"] += len(item[0])
        return 0

    def guarded(ptr, *args):
        try:
            if _PACKED:
                (a0, a1, p0, p1, ci) = args[:5]
                return apply(ptr, a0 >> 32, a1 & 0xFFFFFFFF, a1 >> 32, p1 & 0xFFFFFFFF, p1 >> 32, ci)
            a, p, ci = args[:3]
            return apply(ptr, a.y, a.w, a.h, p.w, p.h, ci)
        except BaseException as exc:  # noqa: BLE001 - reported after the transform, never swallowed
            tally["error"] = exc
            return -1
    return _FILTER(guarded), tally


def transcode(data: bytes, geo: Geometry, patches: Optional[dict] = None, coefs=None) -> bytes:
    """`data` turned upright by `geo.op` (perfect: no edge MCU left behind), every planned block
    of `patches` (see encode_mcus) written, no marker copied (the caller splices the cleaned
    segments). `coefs`: the decoder's engine.codecs.coefjpeg.Coefficients of `data` (closed
    here), written from without reading the file again where they fit. Raises
    LosslessUnavailable when libjpeg-turbo refuses or the output is not what was planned."""
    planned = sum(len(c) for rows in (patches or {}).values() for c, _ in rows.values())
    done = None
    if coefs is not None and geo.op == 0 and not geo.progressive:     # upright and sequential, as decoded
        done = write_patched(coefs, geo.blocks, patches)               # closes them
    elif coefs is not None:
        coefs.close()
    if done is not None and done[1] == planned:
        _check_output(done[0], geo)
        return done[0]
    lib = _lib()
    t = _Transform(op=geo.op, options=_TJXOPT_PERFECT | _TJXOPT_COPYNONE | (_TJXOPT_PROGRESSIVE * geo.progressive))
    tally, keep = {"written": 0, "error": None}, None
    if planned:
        keep, tally = _patch_filter(patches, geo)
        t.customFilter = keep                        # `keep` holds the callback alive until the call ends
    buf, size = ctypes.POINTER(ctypes.c_ubyte)(), ctypes.c_ulong(0)
    # A fresh handle per call: libjpeg-turbo 2.1 keeps a progressive scan script in a reused
    # handle, and the next baseline transform writes a broken file (tests/test_lossless.py).
    handle = lib.tjInitTransform()
    if not handle:
        raise MemoryError("tjInitTransform failed")
    try:
        rc = lib.tjTransform(handle, data, len(data), 1, ctypes.byref(buf), ctypes.byref(size), ctypes.byref(t), 0)
        out = ctypes.string_at(buf, size.value) if buf else b""
        msg = (lib.tjGetErrorStr2(handle) or b"").decode("utf-8", "replace") if rc else ""
        warning = rc != 0 and lib.tjGetErrorCode(handle) == 0
    finally:
        lib.tjFree(buf)
        lib.tjDestroy(handle)
    if tally["error"] is not None:
        raise LosslessUnavailable(f"patching failed: {tally['error']}") from tally["error"]
    if rc != 0:
        # The decoder tolerates trailing garbage after the last scan (engine.codecs.turbo): so here.
        if not (warning and "extraneous bytes before marker 0xd9" in msg and out):
            raise LosslessUnavailable(f"lossless transform: {msg}")
    if tally["written"] != planned:
        raise LosslessUnavailable(f"{tally['written']} of {planned} planned blocks were written")
    _check_output(out, geo)
    return out


def _check_output(out: bytes, geo: Geometry) -> None:
    info = parse_jpeg(out)
    if (info.width, info.height) != (geo.width, geo.height):
        raise LosslessUnavailable(f"transform wrote {info.width}x{info.height}, planned {geo.width}x{geo.height}")
    tables, comps, _ = _tables_and_frame(out, info)
    for (_, _, _, tq), (_, _, q) in zip(comps, geo.comps):
        if tq not in tables or not np.array_equal(tables[tq], q):
            raise LosslessUnavailable("the output's quantisation tables are not the planned ones")


# --- the render step (the input's metadata segments carried cleaned, orientation 1: upright) -----------
def patch_render(renderer, frame, dets, need_pixels: bool = False, *, draw: Optional[bool] = None):
    """Renderer.render's job, lossless outside the masks: a Patched, or None when this image
    cannot be done so (nothing was drawn then; the caller renders it as before). `renderer` is
    an engine.worker.render.Renderer (its masker, decoder and encoder). After the masks are
    drawn, a transform failure re-encodes the masked pixels (never the unmasked ones)."""
    if frame.data[:2] != b"\xff\xd8":
        return None
    draw = (len(dets) > 0 and renderer.cfg.draw_mask) if draw is None else draw
    try:
        geo = geometry(frame.data, frame.orientation)
        if draw and not geo.patchable:
            raise LosslessUnavailable(f"colour space {geo.colour} (CMYK/YCCK) is not patched")
    except LosslessUnavailable as exc:
        LOG.debug("%s: not lossless, re-encoded: %s", frame.job.key, exc)
        return None
    pixels, mcus, patches = None, np.zeros((0, 2), np.int64), None
    if draw:
        t0 = time.perf_counter()
        pixels = renderer.masker(renderer.decoder.full_pixels(frame), dets, inplace=True)
        frame.timings["mask"] = time.perf_counter() - t0
        mcus = touched_mcus(renderer.masker.regions(dets, geo.height, geo.width), geo)
        patches = encode_mcus(pixels, mcus, geo)
    t0 = time.perf_counter()
    try:
        data = splice_segments(transcode(frame.data, geo, patches, frame.coefficients), carried_segments(frame))
    except LosslessUnavailable as exc:
        if not draw:
            LOG.debug("%s: not lossless, re-encoded: %s", frame.job.key, exc)
            return None
        LOG.warning("%s: lossless patching failed (%s); the masked image is re-encoded", frame.job.key, exc)
        host = np.ascontiguousarray(to_host(pixels))         # TurboJPEG, on the host
        data = splice_segments(renderer.preview_encoder.encode(host, renderer.quality(frame), frame.subsampling),
                               carried_segments(frame))
        mcus = None
    frame.timings["encode"] = time.perf_counter() - t0
    if need_pixels and pixels is None:
        pixels = renderer.decoder.full_pixels(frame)
    return Patched(data, draw, to_host(pixels) if need_pixels else None, mcus, geo.mcu)


def render_lossless(renderer, frame, dets, need_pixels: bool = False):
    """The hook for Renderer.render (`output.lossless`): (JPEG, masked?, pixels or None) for an
    image with masks to draw, or None to render it as before. Frames on the GPU with an encoder
    that takes them (nvImageCodec) stay there and are encoded whole: patching is host work."""
    if not (len(dets) and renderer.cfg.draw_mask) or (
            getattr(renderer.encoder, "accepts_device_arrays", False) and on_device(frame.pixels)):
        return None
    res = patch_render(renderer, frame, dets, need_pixels, draw=True)
    return None if res is None else (res.data, res.masked, res.pixels)
