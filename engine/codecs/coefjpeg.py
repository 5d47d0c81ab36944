"""A JPEG's pixels and its DCT coefficients from one decode, and the JPEG written back from them.

The lossless writer (engine.lossless) re-encodes only the blocks a mask touches. Through
tjTransform it reads the input's entropy-coded data a second time (~11 ms of a 5 MP image, as
much as the decode's own Huffman pass). The native helper `sladd_jpeg.c` next to this module
decodes in libjpeg's buffered-image mode instead: the coefficients stay in memory after the
pixels are made, the masked blocks are written into them, and the output is written from them.
The pixels equal TurboJPEG's (same libjpeg-turbo, accurate integer IDCT, fancy upsampling) and the
output equals tjTransform's byte for byte (tests/test_coefjpeg.py).

The helper is optional: `python -m engine.codecs.coefjpeg build` compiles it (a C compiler and
libjpeg's headers: `apt-get install gcc libjpeg-dev`; scripts/setup.sh does this). Without it,
or with SLADD_JPEG_HELPER=0, or for a file it leaves alone (progressive, arithmetic-coded,
CMYK, not 8-bit, any libjpeg warning), everything runs the usual way with the same result.
"""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["Coefficients", "available", "build", "decode", "write_patched", "SOURCE", "LIBRARY"]

LOG = logging.getLogger("sladd")
SOURCE = Path(__file__).with_name("sladd_jpeg.c")
LIBRARY = Path(__file__).with_name("_sladd_jpeg.so")
_VERSION = 3                     # SL_VERSION in sladd_jpeg.c
_LOCK = threading.Lock()
_LIB: Optional[object] = None
_TRIED = False


def _load():
    """The helper library with its prototypes, or None (not built, disabled, or another build)."""
    global _LIB, _TRIED
    if _TRIED:                                   # every decode asks: no lock once answered
        return _LIB
    with _LOCK:
        if _TRIED:
            return _LIB
        _TRIED = True
        if os.environ.get("SLADD_JPEG_HELPER", "1") == "0" or not LIBRARY.is_file():
            return None
        try:
            lib = ctypes.CDLL(str(LIBRARY))
        except OSError as exc:
            LOG.warning("the JPEG helper %s does not load (%s): decoding the usual way", LIBRARY, exc)
            return None
        abi = lib.sl_abi()
        if abi // 1000000 != _VERSION or abi % 100 != ctypes.sizeof(ctypes.c_short):
            LOG.warning("the JPEG helper %s is another build (%d): rebuild it with "
                        "`python -m engine.codecs.coefjpeg build`", LIBRARY, abi)
            return None
        vp, ip = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)
        lib.sl_open.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.POINTER(vp), ip]
        lib.sl_pixels.argtypes = [vp, vp, ctypes.c_ulong]
        lib.sl_blocks.argtypes = [vp, ctypes.c_int, ctypes.POINTER(vp), ctypes.POINTER(ctypes.c_long)]
        lib.sl_write.argtypes = [vp, ctypes.c_ulong, ctypes.POINTER(vp), ctypes.POINTER(ctypes.c_ulong)]
        lib.sl_free.argtypes = lib.sl_free_buffer.argtypes = lib.sl_message.argtypes = [vp]
        lib.sl_message.restype = ctypes.c_char_p
        _LIB = lib
        return lib


def available() -> bool:
    """The helper is built and loads."""
    return _load() is not None


class Coefficients:
    """The quantised DCT coefficients of one decoded JPEG, in libjpeg's memory until `close()`
    (or until this object is collected). `components`: per component (h, v, blocks wide,
    blocks high), as the file's frame header and libjpeg say; `nbytes`: what they hold."""

    def __init__(self, lib, handle: int, info, data: bytes):
        self._lib, self._handle, self._data = lib, handle, data    # libjpeg may still point into data
        self._free = weakref.finalize(self, lib.sl_free, handle)
        self.components = [tuple(info[4 + 4 * c:8 + 4 * c]) for c in range(info[2])]
        self.nbytes = sum(w * h for _, _, w, h in self.components) * 128

    @property
    def open(self) -> bool:
        return self._free.alive

    def blocks(self, c: int) -> np.ndarray:
        """(blocks high, blocks wide, 64) int16 view of component `c`'s coefficients, natural
        (row-major) order within a block, writable; it keeps this object alive, and is valid
        until `close()` (not to be called while another thread uses a view or `write`)."""
        if not self.open:
            raise ValueError("the coefficients were closed")
        base, step = ctypes.c_void_p(), ctypes.c_long()
        if self._lib.sl_blocks(self._handle, c, ctypes.byref(base), ctypes.byref(step)) != 0:
            raise RuntimeError(self._message())
        _, _, wide, high = self.components[c]
        memory = (ctypes.c_short * (high * step.value * 64)).from_address(base.value)
        memory.owner = self                              # the view's base keeps libjpeg's memory alive
        return np.frombuffer(memory, np.int16).reshape(high, step.value, 64)[:, :wide]

    def write(self, size_hint: Optional[int] = None) -> bytes:
        """A baseline JPEG of these coefficients: the input's quantisation tables and sampling,
        libjpeg's standard Huffman tables, no marker but JFIF's (what tjTransform writes with
        TJXOPT_COPYNONE). `size_hint`: the buffer written into first (default: a quarter more
        than the input, whose Huffman tables may have been optimised); libjpeg grows it if needed."""
        if not self.open:
            raise ValueError("the coefficients were closed")
        buf, size = ctypes.c_void_p(), ctypes.c_ulong()
        hint = size_hint if size_hint is not None else len(self._data) * 5 // 4 + 65536
        rc = self._lib.sl_write(self._handle, hint, ctypes.byref(buf), ctypes.byref(size))
        try:
            if rc != 0:
                raise RuntimeError(self._message())
            return ctypes.string_at(buf, size.value)
        finally:
            self._lib.sl_free_buffer(buf)

    def close(self) -> None:
        """Free libjpeg's memory now (idempotent)."""
        self._free()

    def _message(self) -> str:
        return (self._lib.sl_message(self._handle) or b"").decode("utf-8", "replace")


def decode(data: bytes) -> Optional[tuple[np.ndarray, Coefficients]]:
    """((H, W, 3) uint8 RGB in stored orientation, its Coefficients) of a baseline 8-bit grayscale
    or three-component JPEG, or None: the helper is missing, leaves this file to the usual path,
    or libjpeg reported anything (the caller's strict decoder then says what)."""
    lib = _load()
    if lib is None:
        return None
    handle, info = ctypes.c_void_p(), (ctypes.c_int * 16)()
    rc = lib.sl_open(data, len(data), ctypes.byref(handle), info)
    if not handle.value:
        return None
    coefs = Coefficients(lib, handle.value, info, data)
    if rc == 0:
        pixels = np.empty((info[1], info[0], 3), np.uint8)
        rc = lib.sl_pixels(handle, pixels.ctypes.data, info[0] * 3)
    if rc != 0:
        if rc == -1:
            LOG.debug("JPEG helper: %s; decoding the usual way", coefs._message())
        coefs.close()
        return None
    return pixels, coefs


def write_patched(coefs: Coefficients, blocks, patches: Optional[dict]) -> Optional[tuple[bytes, int]]:
    """(the JPEG written from `coefs` with `patches` in place, blocks written). `patches`:
    {component: {block row: (block cols (K,), (K, 64) int16)}} (engine.lossless.encode_mcus);
    `blocks`: the planned (rows, cols) per component. None when the arrays are not laid out as
    planned or libjpeg fails (the caller transforms the file instead). Closes `coefs`."""
    try:
        if [(high, wide) for _, _, wide, high in coefs.components] != [tuple(b) for b in blocks]:
            LOG.debug("JPEG helper: coefficient arrays %s, planned %s", coefs.components, blocks)
            return None
        written = 0
        for c, rows in (patches or {}).items():
            view = coefs.blocks(c)
            for r, (cols, values) in rows.items():
                view[r, cols] = values
                written += len(cols)
        return coefs.write(), written
    except (RuntimeError, ValueError, IndexError) as exc:
        LOG.debug("JPEG helper: %s; transforming the file instead", exc)
        return None
    finally:
        coefs.close()


def build(cc: Optional[str] = None, out: Path = LIBRARY) -> Path:
    """Compile the helper (`cc -O2 -shared -fPIC sladd_jpeg.c -ljpeg`) to `out`, atomically."""
    cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler: install one (Debian/Ubuntu: apt-get install gcc libjpeg-dev)")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    cmd = [cc, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE), "-ljpeg"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"{' '.join(cmd)} failed (needs libjpeg's headers: apt-get install libjpeg-dev):\n"
                           f"{res.stderr.strip()}")
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m engine.codecs.coefjpeg build")
    try:
        print(f"built {build()}")
    except RuntimeError as exc:
        sys.exit(f"the JPEG helper was not built: {exc}")
