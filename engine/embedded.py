"""Pictures hidden in a JPEG file besides its main image, and keeping them out of the output.

A camera file carries more than the picture sladd masks: EXIF thumbnails (IFD1, SubIFDs),
Photoshop thumbnails, XMP thumbnails and Extended XMP (depth maps, the unedited original),
FlashPix previews, JFIF/JFXX thumbnails, MPO frames, vendor trailers, and anything a crafted
file puts in a segment that decoders skip. The design is fail-closed: an allowlist of what
survives, each survivor cleaned, and every survivor tested again afterwards.

What survives (both paths: the re-encoded output, and the lossless rebuild of an image with
nothing to mask):

- APP1 EXIF (the first only): edited in place so every offset stays valid. Kept: IFD0, the
  Exif, GPS and Interop IFDs and the values their entries point at (vendor tags 40055/40056,
  the MakerNote included). Unlinked or removed: IFD1 (the thumbnail IFD) and every IFD after
  it, SubIFDs (0x014A), JPEGInterchangeFormat, strip and tile tags, entries of an unknown type
  and IFD pointers that are not those four. Every byte no kept entry points at (the
  thumbnail's IFD, strips and JPEG, whatever their integer type) is zeroed. Inside the kept
  values, a binary picture is zeroed (a JPEG or PNG to its end, anything else to the end of
  the value) and base64/hex text runs are overwritten with spaces (XML in 40055/40056 stays
  well-formed; only the run goes);
- APP1 XMP (the first main packet): parsed with lxml (character references resolved, UTF-16/32
  packets decoded); thumbnail properties (xmp:Thumbnails, the xmpGImg namespace), and every
  element, attribute, comment or processing instruction whose text may hold a picture are
  removed and the packet re-serialised as UTF-8; a packet that does not parse, declares a DTD,
  or still may hold a picture is dropped;
- APP2 ICC_PROFILE: kept as it is, unless the joined chunks may hold a picture or carry bytes
  beyond the profile's declared size: then every chunk is dropped;
- APP13 Photoshop 3.0: image resources without the thumbnails (0x0409, 0x040C) and without any
  resource that may hold a picture (0x0422 EXIF copies too: they are TIFFs); IPTC stays;
- COM: kept unless it may hold a picture, alone or joined with the other COM segments;
- copy path only: JFIF APP0 as its 14-byte header without a thumbnail, Adobe APP14 as its
  12-byte payload (both describe how the kept pixels decode).

Everything else is dropped: Extended XMP, MPF and FlashPix (APP2), JFXX, APP3-APP12, APP15,
other APP0/APP1/APP2/APP13/APP14 segments, a second EXIF or XMP, and everything after the first
frame's EOI (MPO frames, appended JPEGs, vendor trailers).

"May hold a picture" is engine.pictures.has_picture: binary signatures (JPEG with fill bytes,
PNG, GIF, WebP, BMP, TIFF outside EXIF, ...) and long base64/hex runs. Pictures are removed,
not regenerated: that works the same on the GPU path, where the pixels never come back to the
host. Everything here works on host bytes; segments are whole (`FFxx`, length, payload).
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from typing import Optional

from engine.embedded_exif import EXIF_SIG, clean_exif, sanitize_exif
from engine.embedded_xmp import XMP_SIG, sanitize_xmp
from engine.pictures import has_picture, main_image_end, next_marker, scan_data_may_hide_picture, scan_frame
from engine.types import ImageError

__all__ = ["Sanitized", "Rebuilt", "NotCopyable", "sanitize_segments", "sanitize_file", "rebuild_file", "carried_segments",
           "clean_exif", "main_image_end", "scan_frame", "XMP_SIG", "XMP_EXT_SIG", "PHOTOSHOP_SIG"]

LOG = logging.getLogger("sladd")

XMP_EXT_SIG = b"http://ns.adobe.com/xmp/extension/\x00"
PHOTOSHOP_SIG = b"Photoshop 3.0\x00"
ICC_SIG = b"ICC_PROFILE\x00"

_PS_RESOURCE_SIGS = (b"8BIM", b"PHUT", b"AgHg", b"DCSR", b"MeSa")
_PS_THUMBNAILS = (0x0409, 0x040C)
_MAX_PAYLOAD = 65533                     # a segment's 16-bit length counts its own two bytes

_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_TABLES = frozenset((0xC4, 0xCC, 0xDB, 0xDD))       # DHT, DAC, DQT, DRI
_DECODER = _SOF | _TABLES                            # what a header needs besides metadata
_DNL = 0xDC


class NotCopyable(ImageError):
    """The file cannot be rebuilt losslessly without doubt (a table segment that is not one, data
    in the scan that may be a picture): the caller re-encodes it instead."""


@dataclass
class Sanitized:
    """`segments`: the segments to write; `notes`: one line per thing removed (empty = unchanged);
    `exif`: the TIFF payload of the EXIF segment kept (None = none): what the output holds."""

    segments: list[bytes]
    notes: list[str] = field(default_factory=list)
    exif: Optional[bytes] = None

    @property
    def changed(self) -> bool:
        return bool(self.notes)


@dataclass
class Rebuilt:
    """`data`: the rebuilt file, None when the input is already exactly that (copy it byte for
    byte); `notes`: what was removed; `exif`: as Sanitized.exif."""

    data: Optional[bytes]
    notes: list[str]
    exif: Optional[bytes] = None


# --- segment sanitisers ------------------------------------------------------------------------

def sanitize_segments(segments: list[bytes], *, copy: bool = False) -> Sanitized:
    """The segments to write in place of a JPEG's header segments (whole segments, in order):
    the allowlist of the module doc, each cleaned. `copy`: the lossless rebuild, whose pixels
    are the input's: its tables and frame header (DQT, DHT, DAC, DRI, SOFn; checked by the
    caller), JFIF APP0 and Adobe APP14 are kept too. Allocates only for segments that change."""
    notes: list[str] = []
    ext_xmp = any(s[1] == 0xE1 and s[4:4 + len(XMP_EXT_SIG)] == XMP_EXT_SIG for s in segments)
    out: list[Optional[bytes]] = []
    photoshop: list[bytes] = []
    ps_at = exif_at = None
    icc: list[int] = []
    com: list[int] = []
    seen_xmp = False
    for seg in segments:
        m, payload = seg[1], seg[4:]
        if m == 0xED and payload.startswith(PHOTOSHOP_SIG):
            # A resource block above 64 KiB is split over consecutive APP13 segments: edit it whole.
            ps_at = len(out) if ps_at is None else ps_at
            photoshop.append(seg)
            continue
        if m == 0xE1 and payload.startswith(EXIF_SIG):
            if exif_at is not None:
                notes.append("second EXIF segment dropped")
                continue
            exif_at = len(out)
            out.append(sanitize_exif(seg, notes))
        elif m == 0xE1 and payload.startswith(XMP_SIG):
            if seen_xmp:
                notes.append("second XMP segment dropped")
                continue
            seen_xmp = True
            out.append(sanitize_xmp(seg, notes, ext_xmp))
        elif m == 0xE2 and payload.startswith(ICC_SIG):
            icc.append(len(out))
            out.append(seg)
        elif m == 0xFE:
            if has_picture(payload):
                notes.append("COM segment dropped: it may hold a picture")
                continue
            com.append(len(out))
            out.append(seg)
        elif m in _DECODER and copy:
            out.append(seg)
        elif m == 0xE0 and copy and payload.startswith(b"JFIF\x00") and len(payload) >= 14:
            out.append(_jfif(seg, notes))
        elif m == 0xEE and copy and payload.startswith(b"Adobe") and len(payload) >= 12:
            out.append(_adobe(seg, notes))
        else:
            notes.append(_dropped(m, payload))
    _check_group(out, icc, _icc_data, "ICC profile", notes)
    _check_group(out, com, lambda segs: b"".join(s[4:] for s in segs), "COM segments", notes)
    exif = out[exif_at][4 + len(EXIF_SIG):] if exif_at is not None and out[exif_at] is not None else None
    if photoshop:
        out[ps_at:ps_at] = _sanitize_photoshop(photoshop, notes)
    if not notes:
        return Sanitized(list(segments), notes, exif)
    return Sanitized([s for s in out if s is not None], notes, exif)


def _dropped(m: int, payload: bytes) -> str:
    name = "COM" if m == 0xFE else f"APP{m - 0xE0}" if 0xE0 <= m <= 0xEF else f"marker FF{m:02X}"
    what = bytes(payload[:12]).split(b"\x00")[0] if 0xE0 <= m <= 0xEF else b""
    return f"{name} segment{f' {what!r}' if what else ''} dropped (not on the allowlist)"


def _check_group(out: list, at: list[int], joined, what: str, notes: list[str]) -> None:
    """Drop every segment of a group (ICC chunks, COM segments) when what they hold together may
    be a picture: a picture split over several segments is caught as a whole."""
    kept = [out[i] for i in at if out[i] is not None]
    if not kept:
        return
    data = joined(kept)
    if data is None or has_picture(data):
        for i in at:
            out[i] = None
        notes.append(f"{what} dropped: together they may hold a picture" if data is not None
                     else f"{what} dropped: bytes beyond the profile's declared size")


def _icc_data(segs: list[bytes]) -> Optional[bytes]:
    """The ICC profile the chunks hold (in their sequence order); None when they hold more bytes
    than the profile header declares (room for anything)."""
    chunks = sorted(segs, key=lambda s: s[4 + len(ICC_SIG)] if len(s) > 4 + len(ICC_SIG) else 0)
    data = b"".join(s[4 + len(ICC_SIG) + 2:] for s in chunks)
    if len(data) >= 4 and len(data) > struct.unpack_from(">I", data)[0] + 3:
        return None
    return data


def _jfif(seg: bytes, notes: list[str]) -> bytes:
    """JFIF APP0 as its 14-byte header with a 0x0 thumbnail (its RGB thumbnail dropped)."""
    payload = seg[4:]
    if len(payload) == 14 and payload[12] == payload[13] == 0:
        return seg
    notes.append("JFIF thumbnail or extra bytes removed")
    body = payload[:12] + b"\x00\x00"
    return seg[:2] + struct.pack(">H", len(body) + 2) + body


def _adobe(seg: bytes, notes: list[str]) -> bytes:
    """Adobe APP14 as its 12-byte payload (version, flags, colour transform)."""
    if len(seg) == 4 + 12:
        return seg
    notes.append(f"Adobe APP14: {len(seg) - 16} extra bytes removed")
    return seg[:2] + struct.pack(">H", 14) + seg[4:16]


# --- Photoshop ----------------------------------------------------------------------------------

def _sanitize_photoshop(segs: list[bytes], notes: list[str]) -> list[bytes]:
    """Photoshop image resources without the thumbnails (0x0409, 0x040C) and without any
    resource that may hold a picture (an EXIF copy, an XMP copy with base64 thumbnails); IPTC
    (0x0404) and every other resource are kept, byte for byte, in order."""
    block = b"".join(s[4 + len(PHOTOSHOP_SIG):] for s in segs)
    kept, dropped, pos, n = [], [], 0, len(block)
    while pos + 12 <= n and block[pos:pos + 4] in _PS_RESOURCE_SIGS:
        rid = (block[pos + 4] << 8) | block[pos + 5]
        name_len = block[pos + 6]
        p = pos + 7 + name_len + ((1 + name_len) & 1)    # Pascal name padded to an even size
        if p + 4 > n:
            break
        (size,) = struct.unpack_from(">I", block, p)
        if p + 4 + size > n:
            break
        end = min(n, p + 4 + size + (size & 1))
        if rid in _PS_THUMBNAILS or has_picture(block, pos + 4, end):
            dropped.append(rid)
        else:
            kept.append(block[pos:end])
        pos = end
    new, garbage = b"".join(kept), bool(block[pos:].strip(b"\x00"))
    if has_picture(new) or has_picture(b"".join(_ps_data(r) for r in kept)):
        notes.append("Photoshop APP13 dropped: its resources together may hold a picture")
        return []
    if not dropped and not garbage:
        return segs                                      # unchanged (NUL padding included)
    if garbage:
        notes.append(f"Photoshop APP13: {n - pos} bytes that are not image resources dropped")
    if dropped:
        notes.append("Photoshop APP13 resources dropped: " + ", ".join(f"0x{r:04X}" for r in dropped))
    step = _MAX_PAYLOAD - len(PHOTOSHOP_SIG)
    return [b"\xff\xed" + struct.pack(">H", 2 + len(PHOTOSHOP_SIG) + len(new[i:i + step]))
            + PHOTOSHOP_SIG + new[i:i + step] for i in range(0, len(new), step)]


def _ps_data(resource: bytes) -> bytes:
    p = 7 + resource[6] + ((1 + resource[6]) & 1)
    return resource[p + 4:]


# --- whole files (the lossless rebuild) -----------------------------------------------------------

def sanitize_file(data: bytes, info=None) -> tuple[Optional[bytes], list[str]]:
    """(rebuilt file, notes), or (None, []) when the input is already exactly what the rebuild
    would produce (copy it byte for byte). See rebuild_file."""
    res = rebuild_file(data, info)
    return res.data, res.notes


def rebuild_file(data: bytes, info=None) -> Rebuilt:
    """A lossless rebuild of a JPEG with only what a decoder needs plus the cleaned metadata:

    SOI; the header's tables and frame header (DQT, DHT, DAC, DRI, SOFn; each checked to be
    exactly a table, as libjpeg reads them) and the metadata of sanitize_segments(copy=True);
    each SOS with its entropy-coded data as it is (restart markers included: the pixels decode
    identically); between scans only tables, SOS and a DNL in its 4-byte form; EOI. Anything
    else (APPn/COM between scans, unknown or JPG extension markers, other DNLs, fill bytes,
    everything after the first EOI) is dropped.

    Raises NotCopyable when a table segment is not one, or a scan's data may hold a picture
    (libjpeg skips bytes between the end of a scan and the next marker; sladd's decoder
    tolerates them before the EOI): the caller re-encodes. ImageError for a truncated stream.
    The result's data is None when the input is already exactly the rebuild (copy it byte for
    byte). `info`: engine.jpeg.parse_jpeg(data)."""
    from engine.jpeg import parse_jpeg

    info = info if info is not None else parse_jpeg(data)
    header = []
    for m, s, e in info.header:
        if m in _DECODER:
            _check_table(m, data, s, e)
        header.append(data[s:e])
    res = sanitize_segments(header, copy=True)
    notes = list(res.notes)
    body, end = _scans(data, info.sos, notes)
    if end < len(data):
        notes.append(f"{len(data) - end} bytes after the end-of-image marker dropped "
                     "(MPO frames, appended image or vendor trailer)")
    rebuilt = b"\xff\xd8" + b"".join(res.segments) + b"".join(body)
    if rebuilt == data:
        return Rebuilt(None, [], res.exif)
    return Rebuilt(rebuilt, notes or ["fill bytes or stray markers dropped"], res.exif)


def _scans(data, pos: int, notes: list[str]) -> tuple[list[bytes], int]:
    """The parts to keep from the first SOS to the EOI, and the offset past the EOI."""
    n, out, scans, dropped = len(data), [], [], []
    while True:
        if pos + 2 > n or data[pos] != 0xFF:
            raise ImageError(f"corrupt JPEG: no marker at byte {pos} (no end-of-image marker)")
        m = data[pos + 1]
        if m == 0xFF:                                    # fill byte
            pos += 1
            continue
        if m == 0xD9:
            out.append(b"\xff\xd9")
            pos += 2
            break
        if m == 0x01 or 0xD0 <= m <= 0xD7:               # stray TEM/RSTn outside a scan
            dropped.append(f"FF{m:02X}")
            pos += 2
            continue
        if m == 0xD8 or pos + 4 > n:
            raise ImageError(f"corrupt JPEG: unexpected marker FF{m:02X} at byte {pos}")
        end = pos + 2 + ((data[pos + 2] << 8) | data[pos + 3])
        if end > n or end < pos + 4:
            raise ImageError(f"truncated JPEG: segment FF{m:02X} at byte {pos} runs past the end")
        if m == 0xDA or m in _TABLES:
            _check_table(m, data, pos, end)
            out.append(data[pos:end])
            pos = end
            if m == 0xDA:
                stop = next_marker(data, pos)
                out.append(data[pos:stop])
                scans.append((pos, stop))
                pos = stop
            continue
        if m == _DNL and end - pos == 6:
            out.append(data[pos:end])
        else:
            dropped.append("COM" if m == 0xFE else f"APP{m - 0xE0}" if 0xE0 <= m <= 0xEF else f"FF{m:02X}")
        pos = end
    if dropped:
        notes.append(f"{len(dropped)} segment(s)/marker(s) after the first scan dropped: {', '.join(dropped[:8])}")
    for a, b in scans:
        if scan_data_may_hide_picture(memoryview(data)[a:b]):
            raise NotCopyable("a scan's data may hold a picture (bytes a decoder skips before the next marker)")
    return out, pos


def _check_table(m: int, data, s: int, e: int) -> None:
    """NotCopyable unless the segment holds exactly what libjpeg reads from it (no spare bytes)."""
    p, end = s + 4, e
    ok = True
    if m == 0xDB:                                        # DQT: (Pq|Tq, 64 or 128 bytes) ...
        while p < end and ok:
            ok = (data[p] & 0x0F) < 4 and data[p] >> 4 < 2
            p += 1 + (128 if data[p] >> 4 else 64)
        ok = ok and p >= end                             # libjpeg accepts a short last table
    elif m == 0xC4:                                      # DHT: (Tc|Th, 16 counts, symbols) ...
        while end - p > 16 and ok:
            count = sum(data[p + 1:p + 17])
            ok = (data[p] & 0xEF) < 4 and count <= 256
            p += 17 + count
        ok = ok and p == end
    elif m == 0xCC:                                      # DAC: pairs
        ok = (end - p) % 2 == 0 and all(data[i] < 32 for i in range(p, end, 2))
    elif m == 0xDD:                                      # DRI
        ok = end - p == 2
    elif m == 0xDA:                                      # SOS: Ns, Ns x 2, 3
        ns = data[p] if p < end else 0
        ok = 1 <= ns <= 4 and end - p == 1 + 2 * ns + 3
    elif m in _SOF:                                      # SOF: P, Y, X, Nf, Nf x 3
        ok = end - p >= 6 and end - p == 6 + 3 * data[p + 5]
    if not ok:
        raise NotCopyable(f"segment FF{m:02X} at byte {s} is not a well-formed table/header ({e - s} bytes)")


def carried_segments(frame) -> list[bytes]:
    """The input's metadata segments for an output whose pixels are upright: cleaned (see
    sanitize_segments), EXIF orientation set to 1 (every other byte kept). Sets `frame.exif` to
    the cleaned EXIF, so the metadata record built afterwards shows only what the output holds."""
    from engine.jpeg import set_orientation

    res = sanitize_segments(frame.segments)
    for note in res.notes:
        LOG.debug("%s: %s", frame.job.key, note)
    frame.exif = res.exif
    if frame.orientation == 1:
        return res.segments
    return [set_orientation(s, 1) if s[4:10] == b"Exif\x00\x00" else s for s in res.segments]
