"""Where a JPEG stream ends and where a picture may hide in bytes: the scanning that
engine.embedded's sanitisers and the lossless rebuild rely on. Host bytes only, regular
expressions and bytes.translate (C speed); raises engine.types.ImageError for a stream without
its end-of-image marker.

"May hold a picture" is deliberately broad (fail-closed): a false alarm costs a metadata value,
a miss shows a face. Two tests:

- binary: the signature of a JPEG (FF D8 FF and any byte: libjpeg accepts fill bytes after the
  SOI), PNG, GIF, WebP, BMP, JPEG 2000, JPEG XL, HEIF/AVIF, and (outside EXIF, which is a TIFF)
  a TIFF header;
- text: after deleting NUL bytes (UTF-16/32 text), whitespace, backslashes and `%` (escapes),
  and reading numeric XML character references as the character they stand for: a run of 256
  or more base64 characters (standard or URL-safe; hex is a subset), or the base64/hex
  signature of a picture, or a `data:image/` URI.
"""
from __future__ import annotations

import re
from typing import Iterator, Optional

from engine.types import ImageError

__all__ = ["scan_frame", "main_image_end", "next_marker", "has_picture", "has_binary_picture", "has_text_picture",
           "scan_data_may_hide_picture",
           "find_binary_pictures", "find_text_pictures", "picture_end", "B64_PICTURES", "TEXT_RUN"]

# --- binary signatures ----------------------------------------------------------------------
_SIGNATURES = (
    rb"\xff\xd8\xff"                                     # JPEG: SOI, then a marker or fill byte
    rb"|\x89PNG\r\n\x1a\n"
    rb"|GIF8[79]a"
    rb"|RIFF.{4}WEBP"
    rb"|BM.{12}[\x0c\x28\x34\x38\x40\x6c\x7c]\x00\x00\x00"   # BMP: file header + DIB header size
    rb"|\x00\x00\x00\x0c(?:jP  |JXL )\r\n\x87\n"       # JPEG 2000 / JPEG XL containers
    rb"|\xff\x4f\xff\x51"                                # JPEG 2000 codestream
    rb"|ftyp(?:avi[fs]|hei[cxms]|hev[cx]|mif1|msf1)"   # HEIF / AVIF
)
_BINARY = re.compile(_SIGNATURES, re.S)
_BINARY_TIFF = re.compile(_SIGNATURES + rb"|II\*\x00|MM\x00\*", re.S)
_PNG_END = b"IEND\xaeB`\x82"

# --- text (base64 / hex) ----------------------------------------------------------------------
TEXT_RUN = 256                                           # base64 characters in a row
_NOISE = b"\x00\t\n\r\x0b\x0c \\%"                       # deleted before looking at text
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-"
_CLASS = bytes(0x61 if c in _ALPHABET else 0x2E for c in range(256))     # alphabet -> 'a', rest '.'
_RUN = b"a" * TEXT_RUN
_ENTITY = re.compile(rb"&#(?:[xX]([0-9a-fA-F]{1,6})|([0-9]{1,7}));")
# The base64 of a JPEG (standard and URL-safe), PNG, GIF, RIFF (WebP) or TIFF header, their hex,
# a data URI.
B64_PICTURES = ("/9j/", "_9j_", "iVBORw0KGgo", "R0lGOD", "UklGR", "SUkqA", "TU0AK")
_HEX_PICTURES = ("ffd8ff", "89504e470d0a1a0a", "4749463837", "4749463839", "52494646")


def _anycase(text: str, sep: bytes = b"") -> bytes:
    """A regex matching `text` in any letter case, `sep` allowed between its characters."""
    return sep.join(re.escape(c.encode()) if not c.isalpha() else f"[{c.lower()}{c.upper()}]".encode() for c in text)


_TEXT_SIG = re.compile(rb"(?:" + b"|".join(re.escape(s.encode()) for s in B64_PICTURES) + rb")[A-Za-z0-9+/_-]{16}"
                       rb"|(?:" + b"|".join(_anycase(s) for s in _HEX_PICTURES) + rb")[0-9a-fA-F]{16}")
_WORD = re.compile(rb"a{20,}")              # where a signature and 16 characters can be (in _CLASS terms)
# Entropy-coded data (a scan) cannot hold FF D8 (a marker): there, the base64/hex run and the
# formats a stock reader decodes (PNG, GIF, WebP, TIFF, BMP). One regex per signature: a literal
# prefix is searched at memchr speed, an alternation is not.
_BINARY_SCAN = [re.compile(p, re.S) for p in (rb"\x89PNG\r\n\x1a\n", rb"GIF8[79]a", rb"RIFF.{4}WEBP", rb"II\*\x00",
                                               rb"MM\x00\*", rb"BM.{12}[\x0c\x28\x34\x38\x40\x6c\x7c]\x00\x00\x00")]
# The same over the raw bytes, noise allowed between characters (to find what to blank in place).
_N = rb"[\x00\t\n\r\x0b\x0c \\%]*"
_C = rb"(?:[A-Za-z0-9+/_-]|&#(?:[xX][0-9a-fA-F]{1,6}|[0-9]{1,7});)"
# A signature is blanked with the base64/hex text that follows it.
_C2 = rb"(?:[A-Za-z0-9+/_=-]|&#(?:[xX][0-9a-fA-F]{1,6}|[0-9]{1,7});)"
_TEXT_SPAN = re.compile(
    rb"(?<![A-Za-z0-9+/_-])" + _C + rb"(?:" + _N + _C + rb"){%d,}" % (TEXT_RUN - 1)
    + rb"|(?:" + b"|".join(_N.join(re.escape(bytes([c])) for c in s.encode()) for s in B64_PICTURES)
    + b"|" + b"|".join(_anycase(s, _N) for s in _HEX_PICTURES + ("data:image/",))
    + rb")(?:" + _N + _C2 + rb")*")

# The next marker inside entropy-coded data: FF not followed by a stuffed 00, a restart marker
# (D0-D7) or another FF (fill).
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def scan_frame(data, pos: int) -> tuple[int, list[tuple[int, int]]]:
    """Walk a JPEG from the marker at `pos` (after SOI: the header, or the first SOS) to its EOI.

    Returns (offset just past the EOI, [(start, end) of APPn/COM segments met after the first
    SOS]). Only marker segments are walked; inside entropy-coded data the next marker is found
    with one regex search (C speed): a real marker is FF followed by anything but 00 (stuffing),
    D0-D7 (restarts) or FF (fill), so FFD9 there is always the EOI. Progressive files have
    DHT/SOS segments between their scans; those are walked like the header.
    Raises ImageError when the stream ends before its EOI.
    """
    n, cuts, in_scan = len(data), [], False
    while True:
        if pos + 2 > n or data[pos] != 0xFF:
            raise ImageError(f"corrupt JPEG: no marker at byte {pos} (no end-of-image marker)")
        m = data[pos + 1]
        if m == 0xFF:                                    # fill byte
            pos += 1
            continue
        if m == 0xD9:
            return pos + 2, cuts
        if m == 0x01 or 0xD0 <= m <= 0xD7:
            pos += 2
            continue
        if m == 0xD8 or pos + 4 > n:
            raise ImageError(f"corrupt JPEG: unexpected marker FF{m:02X} at byte {pos}")
        end = pos + 2 + ((data[pos + 2] << 8) | data[pos + 3])
        if end > n or end < pos + 4:
            raise ImageError(f"truncated JPEG: segment FF{m:02X} at byte {pos} runs past the end")
        if in_scan and (0xE0 <= m <= 0xEF or m == 0xFE):
            cuts.append((pos, end))
        pos = end
        if m == 0xDA:
            in_scan = True
            pos = next_marker(data, pos)


def next_marker(data, pos: int) -> int:
    """Offset of the first marker at or after `pos` in entropy-coded data (see scan_frame)."""
    hit = _MARKER.search(data, pos)
    if hit is None:
        raise ImageError("truncated JPEG: no end-of-image marker after the scan data")
    return hit.start()


def main_image_end(data) -> int:
    """Offset just past the EOI of the file's first (main) frame; what follows is trailer data
    (MPO frames, an appended JPEG, vendor trailers). ImageError when there is no EOI."""
    if data[:2] != b"\xff\xd8":
        raise ImageError("not a JPEG stream (no SOI)")
    return scan_frame(data, 2)[0]


# --- may it hold a picture? ----------------------------------------------------------------------

def has_binary_picture(buf, start: int = 0, end: Optional[int] = None, *, tiff: bool = True) -> bool:
    """True if `buf[start:end]` holds a binary picture signature (`tiff`: TIFF headers count)."""
    end = len(buf) if end is None else end
    return (_BINARY_TIFF if tiff else _BINARY).search(buf, start, end) is not None


def _text_view(buf) -> bytes:
    raw = bytes(buf)
    if b"&#" in raw:
        raw = _ENTITY.sub(_entity_char, raw)
    return raw.translate(None, _NOISE)


def _entity_char(m) -> bytes:
    code = int(m.group(1), 16) if m.group(1) else int(m.group(2))
    return bytes([code]) if 0 < code < 128 else b"?"


def has_text_picture(buf) -> bool:
    """True if the bytes (or str) may hold a picture written as text: base64 (standard or
    URL-safe), hex, or a data URI; see the module doc."""
    if isinstance(buf, str):
        buf = buf.encode("utf-8", "surrogatepass")
    view = _text_view(buf)
    cls = view.translate(_CLASS)
    if _RUN in cls or b"data:image/" in view.lower():
        return True
    return any(_TEXT_SIG.search(view, m.start(), m.end()) for m in _WORD.finditer(cls))


def has_picture(buf, start: int = 0, end: Optional[int] = None, *, tiff: bool = True) -> bool:
    """True if `buf[start:end]` may hold a picture, binary or as text."""
    end = len(buf) if end is None else end
    if has_binary_picture(buf, start, end, tiff=tiff):
        return True
    return has_text_picture(memoryview(buf)[start:end] if (start or end != len(buf)) else buf)


def scan_data_may_hide_picture(buf) -> bool:
    """The cheap test for entropy-coded data (megabytes): a base64/hex run, or the signature of
    a picture format that can be written without the byte sequences a scan cannot hold."""
    return _RUN in bytes(buf).translate(_CLASS, _NOISE) or any(p.search(buf) for p in _BINARY_SCAN)


def find_binary_pictures(buf, start: int = 0, end: Optional[int] = None, *,
                         tiff: bool = False) -> Iterator[tuple[int, bytes]]:
    """(offset, first bytes of the signature) of every binary picture signature in buf[start:end]."""
    end = len(buf) if end is None else end
    for m in (_BINARY_TIFF if tiff else _BINARY).finditer(buf, start, end):
        yield m.start(), m.group()[:4]


def find_text_pictures(buf, start: int = 0, end: Optional[int] = None) -> Iterator[tuple[int, int]]:
    """(start, end) of every text run or text signature of a picture in buf[start:end], with
    the NUL bytes, whitespace and escapes inside it (what to blank to remove it in place)."""
    end = len(buf) if end is None else end
    for m in _TEXT_SPAN.finditer(buf, start, end):
        yield m.start(), m.end()


def picture_end(buf, at: int, end: int) -> Optional[int]:
    """Offset past the end of the binary picture starting at `at` (not beyond `end`): a JPEG's
    EOI, a PNG's IEND chunk; None when it cannot be found (other formats, damaged streams)."""
    head = bytes(buf[at:at + 4])
    if head.startswith(b"\xff\xd8\xff"):
        try:
            stop = at + 2 + scan_frame(memoryview(buf)[at + 2:end], 0)[0]
        except ImageError:
            return None
        return stop if stop <= end else None
    if head == b"\x89PNG":
        stop = bytes(buf[at:end]).find(_PNG_END)
        return at + stop + len(_PNG_END) if stop >= 0 else None
    return None
