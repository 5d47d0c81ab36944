"""JPEG container work that no codec library exposes: marker segments, quality, orientation.

Only the marker structure before the first scan is walked (SOI, APPn, COM, DQT, SOFn, ...);
entropy-coded data is left to libjpeg-turbo (engine.embedded finds where the first frame ends).
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Optional

import numpy as np

from engine.types import ImageError

__all__ = ["JpegInfo", "parse_jpeg", "estimate_quality", "splice_segments", "set_orientation",
           "apply_orientation", "CARRIED_MARKERS"]

# Segments parse_jpeg collects as candidates to carry: APP1..APP13, APP15 and COM. APP0 (JFIF)
# comes from the encoder, and APP14 (Adobe) describes the *input's* colour transform, which no
# longer applies. What is actually carried is decided by engine.embedded.sanitize_segments: EXIF,
# the main XMP packet, ICC, IPTC/Photoshop and COM, each without the pictures it may hide;
# every other segment is dropped (see README, "What is kept, what is rewritten").
CARRIED_MARKERS = frozenset(list(range(0xE1, 0xEE)) + [0xEF, 0xFE])

# libjpeg's standard luminance table (ITU T.81 Annex K), natural order, for quality estimation.
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)
_ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
    20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63])


@dataclass(frozen=True)
class JpegInfo:
    segments: list[tuple[int, bytes]]        # (marker, whole segment incl. FFxx and length)
    luma_table: Optional[np.ndarray]         # (64,) natural order
    width: int
    height: int
    components: int
    sof: int                                 # 0xC0.. marker of the frame
    exif: Optional[bytes]                    # TIFF payload of the EXIF APP1 (after "Exif\0\0")
    precision: int = 8                       # bits per sample (SOF P): 8, or 12/16
    adobe_transform: Optional[int] = None    # Adobe APP14 transform (0 CMYK/RGB, 1 YCbCr, 2 YCCK); None = no APP14
    header: tuple = ()                       # every segment before the first SOS: (marker, start, end) byte offsets
    sos: int = 0                             # byte offset of the first SOS marker

    @property
    def cmyk(self) -> bool:
        """Four components: CMYK, or YCCK that the decoder turns into CMYK."""
        return self.components == 4


def parse_jpeg(data: bytes) -> JpegInfo:
    """Walk the markers up to the first SOS. Raises ImageError for anything that is not a JPEG."""
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    if data[:2] != b"\xff\xd8":
        raise ImageError(f"not a JPEG file (starts with {data[:8]!r})")
    pos, n = 2, len(data)
    segments: list[tuple[int, bytes]] = []
    luma = None
    sof = None
    exif = None
    w = h = comps = 0
    precision, adobe = 8, None
    header: list[tuple[int, int, int]] = []
    while True:
        while pos < n and data[pos] == 0xFF and pos + 1 < n and data[pos + 1] == 0xFF:
            pos += 1                                     # fill bytes
        if pos + 4 > n or data[pos] != 0xFF:
            raise ImageError(f"truncated or corrupt JPEG header at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xDA:                               # SOS: header ends
            break
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        end = pos + 2 + length
        if length < 2 or end > n:
            raise ImageError(f"truncated JPEG: segment FF{marker:02X} at byte {pos} runs past the end")
        seg = data[pos:end]
        payload = seg[4:]
        header.append((marker, pos, end))
        if marker == 0xDB:
            luma = _parse_dqt(payload, luma)
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            sof = marker
            if len(payload) < 6:
                raise ImageError("corrupt JPEG: short SOF segment")
            precision = payload[0]
            h, w, comps = struct.unpack(">HHB", payload[1:6])
        elif marker == 0xEE and payload.startswith(b"Adobe") and len(payload) >= 12:
            adobe = payload[11]
        elif marker == 0xE1 and payload.startswith(b"Exif\x00\x00") and exif is None:
            exif = payload[6:]
        if marker in CARRIED_MARKERS:
            segments.append((marker, seg))
        pos = end
    if sof is None:
        raise ImageError("corrupt JPEG: no frame header (SOF) before the scan")
    if w == 0 or h == 0:
        raise ImageError(f"JPEG declares an empty image ({w}x{h})")
    return JpegInfo(segments, luma, w, h, comps, sof, exif, precision, adobe, tuple(header), pos)


def _parse_dqt(payload: bytes, luma):
    i = 0
    while i < len(payload):
        pq, tq = payload[i] >> 4, payload[i] & 15
        size = 128 if pq else 64
        vals = payload[i + 1:i + 1 + size]
        if len(vals) < size:
            break
        table = np.frombuffer(vals, dtype=">u2" if pq else np.uint8).astype(np.float64)
        if tq == 0:
            nat = np.empty(64)
            nat[_ZIGZAG] = table
            luma = nat
        i += 1 + size
    return luma


def estimate_quality(luma: Optional[np.ndarray]) -> Optional[int]:
    """Invert libjpeg's quality scaling on the luminance table; None when unknown.

    Exact for files written with the standard tables (libjpeg, TurboJPEG, Pillow, most cameras'
    firmware derivatives); for other tables it returns the closest standard quality.
    """
    if luma is None:
        return None
    errs = np.abs(_standard_luma_tables() - luma).sum(axis=1)    # integers: exact in float64
    return int(np.flatnonzero(errs == errs.min())[-1]) + 1       # the highest of the closest


@functools.lru_cache(maxsize=1)
def _standard_luma_tables() -> np.ndarray:
    """(100, 64): libjpeg's luminance table at quality 1..100 (made once; 0.7 ms an image before)."""
    scale = [5000.0 / q if q < 50 else 200.0 - 2.0 * q for q in range(1, 101)]
    return np.clip(np.floor((_STD_LUMA[None, :] * np.array(scale)[:, None] + 50.0) / 100.0), 1, 255)


def splice_segments(encoded: bytes, segments: list[bytes]) -> bytes:
    """Insert the carried input segments after the encoder's SOI/APP0.

    `encoded` is a fresh JPEG from the encoder; `segments` are whole segments (marker+length).
    """
    if not segments:
        return encoded
    pos = 2
    if encoded[2:4] == b"\xff\xe0":                      # keep the encoder's JFIF APP0 first
        (length,) = struct.unpack(">H", encoded[4:6])
        pos = 4 + length
    return encoded[:pos] + b"".join(segments) + encoded[pos:]


def read_orientation(exif: Optional[bytes]) -> int:
    """EXIF Orientation (1..8) from the TIFF payload; 1 when absent or unreadable."""
    loc = _orientation_offset(exif)
    if loc is None:
        return 1
    off, endian = loc
    (value,) = struct.unpack(endian + "H", exif[off:off + 2])
    return value if 1 <= value <= 8 else 1


def _orientation_offset(exif: Optional[bytes]):
    """Byte offset of the Orientation SHORT value in IFD0 of a TIFF payload, or None."""
    if not exif or len(exif) < 8:
        return None
    endian = {b"II": "<", b"MM": ">"}.get(bytes(exif[:2]))
    if endian is None:
        return None
    (ifd,) = struct.unpack(endian + "I", exif[4:8])
    if ifd + 2 > len(exif):
        return None
    (count,) = struct.unpack(endian + "H", exif[ifd:ifd + 2])
    for i in range(count):
        e = ifd + 2 + 12 * i
        if e + 12 > len(exif):
            return None
        tag, typ, cnt = struct.unpack(endian + "HHI", exif[e:e + 8])
        if tag == 0x0112 and typ == 3 and cnt >= 1:
            return e + 8, endian
    return None


def set_orientation(segment: bytes, value: int = 1) -> bytes:
    """Return the EXIF APP1 segment with IFD0 Orientation set to `value` (other bytes unchanged).

    Used after the pixels were turned upright, so that viewers do not turn them again.
    """
    if not segment[4:10] == b"Exif\x00\x00":
        return segment
    tiff = segment[10:]
    loc = _orientation_offset(tiff)
    if loc is None:
        return segment
    off, endian = loc
    out = bytearray(segment)
    out[10 + off:10 + off + 2] = struct.pack(endian + "H", value)
    return bytes(out)


def apply_orientation(pixels, orientation: int):
    """Turn stored pixels `(H, W, C)` into display orientation (EXIF 1..8). Returns a view."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.transpose(1, 0, 2)
    if orientation == 6:
        return pixels.transpose(1, 0, 2)[:, ::-1]
    if orientation == 7:
        return pixels.transpose(1, 0, 2)[::-1, ::-1]
    if orientation == 8:
        return pixels.transpose(1, 0, 2)[::-1]
    return pixels
