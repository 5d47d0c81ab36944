"""EXIF and vendor-XML reading (Pillow for EXIF, lxml for XML).

Road-survey cameras (Viatech) store two private IFD0 tags holding UTF-8 XML, usually after a
byte-order mark: 40055 `ImageProperties` and 40056 `ReflinkInfo` (docs/reference.md §1.1).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Optional


__all__ = ["ExifData", "read_exif", "parse_xml", "decode_xml", "redact_image_properties", "XmlNode"]

LOG = logging.getLogger("sladd")

TAG_IMAGE_PROPERTIES, TAG_REFLINK_INFO = 40055, 40056
TAG_MODEL, TAG_ORIENTATION, TAG_XPTITLE = 0x0110, 0x0112, 0x9C9B
IFD_EXIF, IFD_GPS = 0x8769, 0x8825
TAG_DATETIME_ORIGINAL = 0x9003
_REDACTED = ("Driver", "CarID", "Comment")


@dataclass
class ExifData:
    """What the metadata JSON needs from one image's EXIF block (None when absent)."""

    present: bool = False
    model: Optional[str] = None
    datetime_original: Optional[str] = None
    xptitle: Optional[str] = None
    orientation: int = 1
    image_properties: Optional[str] = None      # decoded XML text without the BOM
    reflink_info: Optional[str] = None
    gps: dict = field(default_factory=dict)     # GPS IFD: tag number -> value
    warnings: list = field(default_factory=list)


def _text(v) -> Optional[str]:
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return str(v).rstrip("\x00").strip() or None


def decode_xml(raw) -> Optional[str]:
    """Vendor tag bytes -> XML text. Fix 2: strip a leading BOM if present, never a character
    blindly (the reference always dropped the first character)."""
    if raw is None:
        return None
    if isinstance(raw, (tuple, list)):
        raw = bytes(raw)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    text = text.rstrip("\x00")
    return text[1:] if text.startswith("\ufeff") else text


def redact_image_properties(xml: str) -> str:
    """Replace the personal fields Driver, CarID and Comment by FJERNET (as the reference)."""
    for tag in _REDACTED:
        xml = re.sub(rf"<{tag}>.*?</{tag}", f"<{tag}>FJERNET</{tag}", xml, flags=re.S)
    return xml


def _xptitle(v) -> tuple[Optional[str], Optional[str]]:
    """XPTitle -> (text, warning). XP* tags are UTF-16 byte arrays (LE unless a BOM says
    otherwise); the reference kept trailing NULs, which are kept here too. Bytes that are not
    UTF-16 (an odd length, a lone surrogate) are decoded with errors="replace": the readable
    part is kept, each bad code unit becomes U+FFFD and a warning says so. The image is never
    failed for its title."""
    if v is None:
        return None, None
    if isinstance(v, str):
        return v, None
    try:
        raw = bytes(v)
    except (TypeError, ValueError):
        return None, f"XPTitle is not a byte array ({type(v).__name__}): dropped"
    codec = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-16-le"
    try:
        return raw.decode(codec), None
    except UnicodeDecodeError as exc:
        return raw.decode(codec, "replace"), (f"XPTitle is not valid UTF-16 ({exc.reason} at byte {exc.start} of "
                                              f"{len(raw)}); undecodable parts replaced by U+FFFD")


def read_exif(tiff: Optional[bytes]) -> ExifData:
    """Parse the TIFF payload of the EXIF APP1 segment (None = no EXIF block)."""
    if not tiff:
        return ExifData()
    from PIL import Image

    out = ExifData(present=True)
    exif = Image.Exif()
    try:
        exif.load(b"Exif\x00\x00" + bytes(tiff))
    except Exception as exc:  # noqa: BLE001 - broken EXIF is a warning on this image
        out.warnings.append(f"EXIF block could not be read: {exc}")
        return out
    out.model = _text(exif.get(TAG_MODEL))
    out.orientation = exif.get(TAG_ORIENTATION, 1) if isinstance(exif.get(TAG_ORIENTATION, 1), int) else 1
    out.xptitle, warning = _xptitle(exif.get(TAG_XPTITLE))
    if warning:
        out.warnings.append(warning)
    out.image_properties = decode_xml(exif.get(TAG_IMAGE_PROPERTIES))
    out.reflink_info = decode_xml(exif.get(TAG_REFLINK_INFO))
    try:
        out.datetime_original = _text(exif.get_ifd(IFD_EXIF).get(TAG_DATETIME_ORIGINAL))
    except Exception as exc:  # noqa: BLE001
        out.warnings.append(f"EXIF sub-IFD could not be read: {exc}")
    try:
        out.gps = dict(exif.get_ifd(IFD_GPS))
    except Exception as exc:  # noqa: BLE001
        out.warnings.append(f"GPS IFD could not be read: {exc}")
    return out


def _etree():
    """lxml's etree, imported when an image has vendor XML (a run's start does not pay for it)."""
    from lxml import etree

    return etree


class XmlNode:
    """Read-only access to parsed vendor XML by child path: node["GnssInfo/Latitude"] -> text."""

    def __init__(self, el):
        self.el = el

    @property
    def tag(self) -> str:
        return _etree().QName(self.el).localname

    def get(self, path: str, default: Any = None) -> Any:
        el = self.el
        for part in path.split("/"):
            found = None
            for child in el:
                if isinstance(child.tag, str) and _etree().QName(child).localname == part:
                    found = child
                    break
            if found is None:
                return default
            el = found
        return el.text if el.text is not None else ""

    def has(self, path: str) -> bool:
        return self.get(path) is not None

    def attr(self, name: str) -> Optional[str]:
        return self.el.get(name)


def parse_xml(text: Optional[str]) -> Optional[XmlNode]:
    """XML text -> XmlNode, or None with a warning logged for malformed XML (never raises)."""
    if not text:
        return None
    etree = _etree()
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
        root = etree.fromstring(text.encode("utf-8"), parser=parser)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"malformed XML: {exc}") from None
    return XmlNode(root)
