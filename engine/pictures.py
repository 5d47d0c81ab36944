"""Where a JPEG stream ends and where a picture (JPEG or PNG, binary or base64) hides in
bytes: the scanning that engine.embedded's sanitisers and the trailer cut rely on. Host bytes
only; raises engine.types.ImageError for a stream without its end-of-image marker."""
from __future__ import annotations

import re
from typing import Optional

from engine.types import ImageError

__all__ = ["scan_frame", "main_image_end", "has_picture", "find_picture", "B64_PICTURES"]

# An SOI followed by a marker that can open a JPEG header (SOFn/DHT/DAC, DQT..EXP, APPn, JPGn,
# COM), or a PNG signature. Three fixed bytes plus a marker class: random binary data matches
# about once in 80 million positions.
_PICTURE = re.compile(rb"\xff\xd8\xff[\xc0-\xcf\xdb-\xfe]|\x89PNG\r\n\x1a\n")
# The same pictures in base64 (text metadata): the encoded signature and 32 more base64 bytes.
B64_PICTURES = ("/9j/", "iVBORw0KGgo", "R0lGOD")
_B64_PICTURE = re.compile(rb"(?:/9j/|iVBORw0KGgo|R0lGOD)[A-Za-z0-9+/]{32}")
_B64_RUN = re.compile(rb"(?:[A-Za-z0-9+/=\r\n\t ]|&#x[aAdD];)+")
# The next marker inside entropy-coded data: FF not followed by a stuffed 00, a restart marker
# (D0-D7) or another FF (fill).
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_PNG_END = b"IEND\xaeB`\x82"


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
            hit = _MARKER.search(data, pos)
            if hit is None:
                raise ImageError("truncated JPEG: no end-of-image marker after the scan data")
            pos = hit.start()


def main_image_end(data) -> int:
    """Offset just past the EOI of the file's first (main) frame; what follows is trailer data
    (MPO frames, an appended JPEG, vendor trailers). ImageError when there is no EOI."""
    if data[:2] != b"\xff\xd8":
        raise ImageError("not a JPEG stream (no SOI)")
    return scan_frame(data, 2)[0]


def has_picture(buf, start: int = 0, end: Optional[int] = None) -> bool:
    """True if `buf[start:end]` holds the start of a JPEG or PNG stream, binary or base64."""
    end = len(buf) if end is None else end
    return _PICTURE.search(buf, start, end) is not None or _B64_PICTURE.search(buf, start, end) is not None


def find_picture(buf, start: int = 0, end: Optional[int] = None) -> Optional[tuple[int, Optional[int]]]:
    """The first embedded JPEG or PNG stream, binary or base64, in `buf[start:end]`: (offset,
    offset past its end), the end None when it cannot be found (a truncated or damaged binary
    stream); None when there is none."""
    end = len(buf) if end is None else end
    hit, b64 = _PICTURE.search(buf, start, end), _B64_PICTURE.search(buf, start, end)
    if hit is None and b64 is None:
        return None
    if hit is None or (b64 is not None and b64.start() < hit.start()):
        return b64.start(), _B64_RUN.match(buf, b64.start(), end).end()
    at = hit.start()
    if buf[at] == 0x89:
        stop = bytes(buf).find(_PNG_END, at)
        return at, (stop + len(_PNG_END) if stop >= 0 else None)
    try:
        return at, at + 2 + scan_frame(memoryview(buf)[at + 2:end], 0)[0]
    except ImageError:
        return at, None
