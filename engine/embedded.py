"""Pictures hidden in a JPEG file besides its main image, and keeping them out of the output.

A camera file carries more than the picture sladd masks: an EXIF thumbnail (IFD1), Photoshop
thumbnails (APP13 resources 0x0409/0x040C), XMP thumbnails (base64 `xmpGImg:image`), Extended
XMP (where phones keep depth maps and the unedited original), FlashPix preview streams (APP2
`FPXR`), JFIF/JFXX thumbnails (APP0), MPO extra frames (the APP2 `MPF` index and frames after
the first EOI) and vendor trailers after the EOI. Each can show what was masked. The rules:

- known containers are edited: the picture goes, every other byte stays where it was (EXIF is
  edited in place so IFD0, the Exif and GPS IFDs, vendor tags and MakerNote offsets stay valid);
- fail-closed: a segment that still holds a JPEG or PNG stream (binary or base64) after that
  is dropped (EXIF: the stream is blanked in place, so the other tags survive);
- ICC profiles and the Adobe APP14 colour transform are kept as they are;
- nothing after the first frame's EOI is kept (MPO frames, appended JPEGs, vendor trailers).

Pictures are removed, not regenerated from the anonymised pixels: that works the same on the
GPU path, where the pixels never come back to the host, and no reader of sladd's outputs needs
them. Everything here works on host bytes; segments are whole (`FFxx`, length, payload). Finding
pictures and frame ends in bytes is engine.pictures.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Optional

from engine.pictures import B64_PICTURES, find_picture, has_picture, main_image_end, scan_frame

__all__ = ["Sanitized", "sanitize_segments", "sanitize_file", "main_image_end", "scan_frame",
           "find_picture", "XMP_SIG", "XMP_EXT_SIG", "PHOTOSHOP_SIG"]

EXIF_SIG = b"Exif\x00\x00"
XMP_SIG = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_EXT_SIG = b"http://ns.adobe.com/xmp/extension/\x00"
PHOTOSHOP_SIG = b"Photoshop 3.0\x00"
ICC_SIG = b"ICC_PROFILE\x00"

_NS_GIMG = "http://ns.adobe.com/xap/1.0/g/img/"
_NS_XMP = "http://ns.adobe.com/xap/1.0/"
_NS_NOTE = "http://ns.adobe.com/xmp/note/"

_PS_RESOURCE_SIGS = (b"8BIM", b"PHUT", b"AgHg", b"DCSR", b"MeSa")
_PS_THUMBNAILS = (0x0409, 0x040C)
_MAX_PAYLOAD = 65533                     # a segment's 16-bit length counts its own two bytes


@dataclass
class Sanitized:
    """`segments`: the segments to write; `notes`: one line per thing removed (empty = unchanged)."""

    segments: list[bytes]
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.notes)


# --- segment sanitisers ------------------------------------------------------------------------

def sanitize_segments(segments: list[bytes]) -> Sanitized:
    """Remove every embedded picture from a JPEG's marker segments (whole segments, in order).

    Non-APPn segments (DQT, SOF, DHT, DRI), ICC profiles and Adobe APP14 pass unchanged; see
    the module doc for the rest. Allocates only for segments that change."""
    notes: list[str] = []
    ext_xmp = any(s[1] == 0xE1 and s[4:4 + len(XMP_EXT_SIG)] == XMP_EXT_SIG for s in segments)
    out: list[bytes] = []
    photoshop: list[bytes] = []
    ps_at = None
    for seg in segments:
        m, payload = seg[1], seg[4:]
        if m == 0xED and payload.startswith(PHOTOSHOP_SIG):
            # A resource block above 64 KiB is split over consecutive APP13 segments: edit it whole.
            ps_at = len(out) if ps_at is None else ps_at
            photoshop.append(seg)
            continue
        new = _sanitize_one(seg, m, payload, notes, ext_xmp)
        if new is not None:
            out.append(new)
    if photoshop:
        out[ps_at:ps_at] = _sanitize_photoshop(photoshop, notes)
    return Sanitized(out if notes else list(segments), notes)


def _sanitize_one(seg: bytes, m: int, payload: bytes, notes: list[str], ext_xmp: bool) -> Optional[bytes]:
    """The segment to keep (itself or an edited copy), or None to drop it."""
    if not 0xE0 <= m <= 0xEF and m != 0xFE:
        return seg                                       # tables and frame headers
    if m == 0xE1 and payload.startswith(EXIF_SIG):
        return _sanitize_exif(seg, notes)
    if m == 0xE1 and payload.startswith(XMP_SIG):
        return _sanitize_xmp(seg, notes, ext_xmp)
    if m == 0xE1 and payload.startswith(XMP_EXT_SIG):
        # Extended XMP holds what did not fit in 64 KiB: on phones the depth map and the
        # unedited original (GImage:Data). It cannot be checked chunk by chunk, so it goes.
        notes.append("Extended XMP segment dropped")
        return None
    if m == 0xE2 and payload.startswith(ICC_SIG):
        return seg
    if m == 0xE2 and payload.startswith((b"MPF\x00", b"FPXR\x00")):
        notes.append(f"APP2 {payload[:4].rstrip(bytes(1)).decode()} segment dropped (extra frames / preview streams)")
        return None
    if m == 0xEE and payload.startswith(b"Adobe"):
        return seg                                       # 12 bytes of colour-transform flags
    if m == 0xE0 and payload.startswith(b"JFIF\x00"):
        return _sanitize_jfif(seg, notes)
    if m == 0xE0 and payload.startswith(b"JFXX\x00"):
        notes.append("JFXX thumbnail segment dropped")
        return None
    if has_picture(payload):
        notes.append(f"APP{m - 0xE0} segment {bytes(payload[:12])!r} dropped: it holds a picture"
                     if m != 0xFE else "COM segment dropped: it holds a picture")
        return None
    return seg


def _sanitize_jfif(seg: bytes, notes: list[str]) -> bytes:
    """Drop JFIF's uncompressed RGB thumbnail (Xthumbnail x Ythumbnail x 3 bytes after 14)."""
    payload = seg[4:]
    if len(payload) < 14 or payload[12] * payload[13] == 0:
        return seg
    notes.append("JFIF thumbnail removed")
    body = payload[:12] + b"\x00\x00"
    return seg[:2] + struct.pack(">H", len(body) + 2) + body


def _sanitize_exif(seg: bytes, notes: list[str]) -> Optional[bytes]:
    """Unlink IFD1 (the thumbnail IFD) from IFD0 and blank the thumbnail bytes, in place: every
    offset in the TIFF stays valid and nothing else moves. Any JPEG/PNG stream still inside,
    binary (vendor MakerNote previews) or base64, is blanked too; a binary one whose end cannot
    be found drops the segment."""
    out = bytearray(seg)
    base = 4 + len(EXIF_SIG)                             # TIFF offsets count from here
    n = len(out) - base
    e = {b"II": "<", b"MM": ">"}.get(bytes(out[base:base + 2]))
    if e is not None and n >= 8:
        (ifd0,) = struct.unpack_from(e + "I", out, base + 4)
        if 8 <= ifd0 and ifd0 + 2 <= n:
            (count,) = struct.unpack_from(e + "H", out, base + ifd0)
            link = ifd0 + 2 + 12 * count
            if link + 4 <= n and struct.unpack_from(e + "I", out, base + link)[0]:
                nxt = struct.unpack_from(e + "I", out, base + link)[0]
                for a, b in _ifd_chain_ranges(out, base, n, nxt, e, ifd0):
                    out[base + a:base + b] = bytes(b - a)
                struct.pack_into(e + "I", out, base + link, 0)
                notes.append("EXIF thumbnail (IFD1) removed")
    pos = base
    while (found := find_picture(out, pos)) is not None:
        at, end = found
        if end is None:
            notes.append("EXIF segment dropped: it holds a picture whose end cannot be found")
            return None
        out[at:end] = bytes(end - at)
        notes.append(f"picture of {end - at} bytes inside EXIF (vendor MakerNote?) blanked")
        pos = end
    return bytes(out) if out != seg else seg


# IFD tags that point at picture data: (offsets tag, byte counts tag)
_PICTURE_TAGS = {0x0201: 0x0202, 0x0111: 0x0117, 0x0144: 0x0145}


def _ifd_chain_ranges(buf, base: int, n: int, off: int, e: str, ifd0: int) -> list[tuple[int, int]]:
    """TIFF byte ranges of IFD1 and the IFDs linked after it: each IFD's own entries and the
    picture data its JPEGInterchangeFormat / strip / tile tags point at (clipped to the TIFF).
    A link back to IFD0 (a corrupt loop) is not followed."""
    ranges, seen = [], {ifd0}
    while off and off not in seen and len(seen) < 9 and off + 2 <= n:
        seen.add(off)
        (count,) = struct.unpack_from(e + "H", buf, base + off)
        end = off + 2 + 12 * count + 4
        if end > n:
            break
        values = {}
        for i in range(count):
            tag, typ, cnt = struct.unpack_from(e + "HHI", buf, base + off + 2 + 12 * i)
            if typ in (3, 4) and 0 < cnt < 65536:
                values[tag] = _ifd_values(buf, base, n, off + 2 + 12 * i + 8, typ, cnt, e)
        for otag, ltag in _PICTURE_TAGS.items():
            for o, length in zip(values.get(otag, ()), values.get(ltag, ())):
                if o < n:
                    ranges.append((o, min(n, o + length)))
        ranges.append((off, end))
        (off,) = struct.unpack_from(e + "I", buf, base + end - 4)
    return ranges


def _ifd_values(buf, base: int, n: int, at: int, typ: int, cnt: int, e: str) -> tuple[int, ...]:
    size = 2 if typ == 3 else 4
    if cnt * size > 4:
        (at,) = struct.unpack_from(e + "I", buf, base + at)
        if at + cnt * size > n:
            return ()
    return struct.unpack_from(e + ("H" if typ == 3 else "I") * cnt, buf, base + at)


def _sanitize_photoshop(segs: list[bytes], notes: list[str]) -> list[bytes]:
    """Photoshop image resources without the thumbnails (0x0409, 0x040C) and without any
    resource that holds a picture (an EXIF copy with its thumbnail, an XMP copy with base64
    thumbnails); IPTC (0x0404) and every other resource are kept, byte for byte, in order."""
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
        if rid in _PS_THUMBNAILS or has_picture(block, p + 4, p + 4 + size):
            dropped.append(rid)
        else:
            kept.append(block[pos:end])
        pos = end
    if block[pos:].strip(b"\x00"):
        notes.append(f"Photoshop APP13: {n - pos} bytes that are not image resources dropped")
    elif not dropped:
        return segs
    if dropped:
        notes.append("Photoshop APP13 resources dropped: " + ", ".join(f"0x{r:04X}" for r in dropped))
    new = b"".join(kept)
    step = _MAX_PAYLOAD - len(PHOTOSHOP_SIG)
    return [b"\xff\xed" + struct.pack(">H", 2 + len(PHOTOSHOP_SIG) + len(new[i:i + step]))
            + PHOTOSHOP_SIG + new[i:i + step] for i in range(0, len(new), step)]


def _sanitize_xmp(seg: bytes, notes: list[str], ext_xmp: bool) -> Optional[bytes]:
    """The XMP packet without its thumbnails: elements and attributes in the xmpGImg namespace,
    xmp:Thumbnails, and any property whose value is a base64 JPEG/PNG/GIF (e.g. Google's
    GImage:Data). With the Extended XMP dropped, xmpNote:HasExtendedXMP goes too. A packet
    that may hold a thumbnail but is not well-formed is dropped."""
    packet = seg[4 + len(XMP_SIG):]
    suspects = [_NS_GIMG.encode()] + [s.encode() for s in B64_PICTURES] + ([b"HasExtendedXMP"] if ext_xmp else [])
    if not any(s in packet for s in suspects):
        return seg
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    try:
        root = etree.fromstring(packet, parser)
    except etree.XMLSyntaxError:
        notes.append("XMP segment dropped: it may hold a thumbnail and is not well-formed XML")
        return None
    elements, attributes = _strip_xmp(root, ext_xmp)
    if not elements and not attributes:
        return seg
    if any(el is root for el in elements):
        notes.append("XMP segment dropped: its root is a picture")
        return None
    for el in elements:
        if el.getparent() is not None:
            el.getparent().remove(el)
    body = XMP_SIG + etree.tostring(root.getroottree(), encoding="UTF-8", xml_declaration=False)
    if has_picture(body):
        notes.append("XMP segment dropped: a picture is left where no property holds it (a comment?)")
        return None
    notes.append(f"XMP: {len(elements) + attributes} thumbnail/picture properties removed")
    return seg[:2] + struct.pack(">H", len(body) + 2) + body


def _strip_xmp(root, ext_xmp: bool) -> tuple[list, int]:
    """Delete picture attributes from the tree; return (picture elements to remove, number of
    attributes deleted)."""
    from lxml import etree

    def unwanted(qname: str, value: Optional[str]) -> bool:
        q = etree.QName(qname)
        if q.namespace == _NS_GIMG or (q.namespace == _NS_XMP and q.localname == "Thumbnails"):
            return True
        if ext_xmp and q.namespace == _NS_NOTE and q.localname == "HasExtendedXMP":
            return True
        return len(value or "") >= 32 and value.lstrip().startswith(B64_PICTURES)

    elements, attributes = [], 0
    for el in root.iter(etree.Element):
        if any(a in elements for a in el.iterancestors()):
            continue                                     # goes with the element above it
        if unwanted(el.tag, el.text):
            elements.append(el)
            continue
        for name, value in el.attrib.items():
            if unwanted(name, value):
                del el.attrib[name]
                attributes += 1
    return elements, attributes


# --- whole files -------------------------------------------------------------------------------

def sanitize_file(data: bytes, info=None) -> tuple[Optional[bytes], list[str]]:
    """A losslessly rebuilt copy of a JPEG without its embedded pictures, or (None, []) when
    the file holds none (it may then be copied byte for byte).

    The rebuild keeps the entropy-coded data of the main frame as it is (the pixels decode
    identically), edits the header segments with `sanitize_segments`, drops APPn/COM segments
    between scans and everything after the first EOI. `info`: the parsed header
    (engine.jpeg.parse_jpeg), when the caller has it."""
    from engine.jpeg import parse_jpeg

    info = info if info is not None else parse_jpeg(data)
    end, cuts = scan_frame(data, info.sos)
    res = sanitize_segments([data[s:e] for _, s, e in info.header])
    notes = list(res.notes)
    if cuts:
        notes.append(f"{len(cuts)} APPn/COM segment(s) between scans dropped")
    if end < len(data):
        notes.append(f"{len(data) - end} bytes after the end-of-image marker dropped "
                     "(MPO frames, appended image or vendor trailer)")
    if not notes:
        return None, notes
    body, at = [], info.sos
    for s, e in cuts:
        body.append(data[at:s])
        at = e
    body.append(data[at:end])
    return b"\xff\xd8" + b"".join(res.segments) + b"".join(body), notes
