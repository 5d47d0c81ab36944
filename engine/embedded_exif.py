"""EXIF (APP1 `Exif`) cleaned in place for engine.embedded: every offset stays valid, so IFD0,
the Exif, GPS and Interop IFDs, the vendor tags 40055/40056 and the MakerNote survive byte for
byte, and nothing else does (see engine.embedded's module doc for the rules)."""
from __future__ import annotations

import bisect
import struct
from typing import Optional

from engine.pictures import (find_binary_pictures, find_text_pictures, has_binary_picture, has_text_picture,
                             picture_end)

__all__ = ["EXIF_SIG", "sanitize_exif", "clean_exif"]

EXIF_SIG = b"Exif\x00\x00"

# Bytes per value of each TIFF field type (BigTIFF's 8-byte types too).
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
# The IFDs kept, and the pointer tags that lead to them.
_SUB_IFDS = {"IFD0": {0x8769: "Exif", 0x8825: "GPS"}, "Exif": {0xA005: "Interop"}}
_POINTERS = {0x8769, 0x8825, 0xA005}
# Entries that point at pictures: SubIFDs, JPEGInterchangeFormat(Length), strips, tiles.
_PICTURE_TAGS = frozenset((0x014A, 0x0201, 0x0202, 0x0111, 0x0117, 0x0144, 0x0145))
_USER_COMMENT = 0x9286                    # 8-byte character code, then the text
_SPACES = bytes([0] + [0x20] * 255)       # blanking text: every byte but NUL becomes a space


def clean_exif(tiff: Optional[bytes]) -> Optional[bytes]:
    """The TIFF payload of an EXIF segment as the output carries it (None when it is dropped):
    what the metadata JSON may be built from."""
    if not tiff:
        return None
    seg = b"\xff\xe1" + struct.pack(">H", 2 + len(EXIF_SIG) + len(tiff)) + EXIF_SIG + bytes(tiff)
    out = sanitize_exif(seg, [])
    return None if out is None else out[4 + len(EXIF_SIG):]


def sanitize_exif(seg: bytes, notes: list[str]) -> Optional[bytes]:
    """EXIF cleaned in place (see the module doc); None (drop it) when it is not a TIFF that
    can be walked, or still may hold a picture after cleaning."""
    base = 4 + len(EXIF_SIG)
    tiff = bytearray(seg[base:])
    before = len(notes)
    values = _clean_tiff(tiff, notes)
    if values is not None:
        _zero_pictures(tiff, values, notes)
        blanked = _blank_text(tiff, values, notes)
    if (values is None or has_binary_picture(tiff, 8, tiff=False)
            or (blanked and has_text_picture(memoryview(tiff)[8:]))):
        del notes[before:]
        notes.append("EXIF segment dropped: it cannot be walked, or still may hold a picture after cleaning")
        return None
    return seg if len(notes) == before else seg[:base] + bytes(tiff)


def _clean_tiff(tiff: bytearray, notes: list[str]) -> Optional[list[tuple[int, int, int]]]:
    """Walk the kept IFDs, remove the entries that are not kept, unlink IFD1, zero every byte
    no kept entry points at; return the kept out-of-line values as (start, end, tag), or None
    when IFD0 cannot be walked."""
    n = len(tiff)
    e = {b"II": "<", b"MM": ">"}.get(bytes(tiff[:2]))
    if e is None or n < 8:
        return None
    (ifd0,) = struct.unpack_from(e + "I", tiff, 4)
    kept: list[tuple[int, int]] = [(0, 8)]                # IFD tables and header
    values: list[tuple[int, int, int]] = []               # (start, end, tag) of out-of-line values
    rewrites: list[tuple[int, int, list[bytes]]] = []
    removed: list[int] = []
    seen: set[int] = set()
    ifd1 = [False]

    def walk(off: int, kind: str) -> bool:
        if off in seen or off < 8 or off + 2 > n:
            return False
        seen.add(off)
        (count,) = struct.unpack_from(e + "H", tiff, off)
        stop = off + 2 + 12 * count + 4
        if stop > n:
            return False
        kept.append((off, stop))
        entries = []
        for i in range(count):
            p = off + 2 + 12 * i
            tag, typ, cnt = struct.unpack_from(e + "HHI", tiff, p)
            size = _TYPE_SIZE.get(typ)
            sub = _SUB_IFDS.get(kind, {}).get(tag)
            if (size is None or tag in _PICTURE_TAGS or (tag in _POINTERS and sub is None)
                    or (typ in (13, 18) and sub is None)):
                removed.append(tag)
                continue
            total = size * cnt
            if sub is not None:
                target = struct.unpack_from(e + "I", tiff, p + 8)[0] if total == 4 else None
                if target is None or not walk(target, sub):
                    removed.append(tag)
                    continue
            elif total > 4:
                (at,) = struct.unpack_from(e + "I", tiff, p + 8)
                if at < n:
                    values.append((at, min(n, at + total), tag))
            entries.append(bytes(tiff[p:p + 12]))
        if kind == "IFD0" and struct.unpack_from(e + "I", tiff, stop - 4)[0]:
            ifd1[0] = True
        if len(entries) != count or struct.unpack_from(e + "I", tiff, stop - 4)[0]:
            rewrites.append((off, stop, entries))
        return True

    if not walk(ifd0, "IFD0"):
        return None
    for off, stop, entries in rewrites:                   # unlink: entries removed, next IFD = 0
        body = struct.pack(e + "H", len(entries)) + b"".join(entries) + bytes(4)
        tiff[off:stop] = body + bytes(stop - off - len(body))
    if ifd1[0]:
        notes.append("EXIF thumbnail (IFD1 and what it points at) removed")
    if removed:
        notes.append("EXIF entries removed: " + ", ".join(f"0x{t:04X}" for t in sorted(set(removed))))
    # Zero every byte that no kept entry points at: thumbnails, strips, SubIFDs, stray data.
    spans = sorted(kept + [(a, b) for a, b, _ in values])
    at, zeroed = 8, 0
    for a, b in spans + [(n, n)]:
        if a > at and tiff[at:a].count(0) != a - at:
            zeroed += a - at
            tiff[at:a] = bytes(a - at)
        at = max(at, b)
    if zeroed and not ifd1[0] and not removed:
        notes.append(f"EXIF: {zeroed} bytes no entry points at zeroed")
    return values


def _spans(values: list[tuple[int, int, int]], text: bool = False) -> list[list[int]]:
    """The kept values as disjoint [start, end, tag] spans, sorted (overlapping values merged;
    for text, UserComment's 8-byte character code left out)."""
    merged: list[list[int]] = []
    for a, b, tag in sorted((a + (8 if text and t == _USER_COMMENT else 0), b, t) for a, b, t in values):
        if a >= b:
            continue
        if merged and a < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b, tag])
    return merged


def _zero_pictures(tiff: bytearray, values: list[tuple[int, int, int]], notes: list[str]) -> None:
    """Zero each binary picture inside a kept value: a JPEG or PNG to its end (a MakerNote
    keeps what follows it), anything else to the end of the value."""
    spans = _spans(values)
    starts = [a for a, _, _ in spans]
    done = 0
    for at, _ in list(find_binary_pictures(tiff, 8)):
        i = bisect.bisect_right(starts, at) - 1
        if at < done or i < 0 or at >= spans[i][1]:
            continue                                     # zeroed already, or in an IFD table
        stop = picture_end(tiff, at, spans[i][1]) or spans[i][1]
        tiff[at:stop] = bytes(stop - at)
        notes.append(f"picture of {stop - at} bytes inside EXIF tag 0x{spans[i][2]:04X} zeroed")
        done = stop


def _blank_text(tiff: bytearray, values: list[tuple[int, int, int]], notes: list[str]) -> bool:
    """Overwrite base64/hex runs inside the kept values with spaces (NUL bytes stay: UTF-16
    text stays UTF-16), value by value. False when the EXIF holds no such text at all."""
    view = memoryview(tiff)
    if not has_text_picture(view[8:]):                 # the whole holds every value's text
        view.release()
        return False
    for va, vb, tag in _spans(values, text=True):      # value by value: zeroed bytes join nothing
        if has_text_picture(view[va:vb]):
            for a, b in list(find_text_pictures(tiff, va, vb)):
                tiff[a:b] = bytes(tiff[a:b]).translate(_SPACES)
                notes.append(f"base64/hex text of {b - a} bytes in EXIF tag 0x{tag:04X} blanked")
    view.release()
    return True
