"""The main XMP packet (APP1) without its pictures, for engine.embedded: parsed with lxml
(character references resolved, UTF-16/32 decoded), thumbnail properties and every node whose
text may hold a picture removed, re-serialised as UTF-8 only when something changed."""
from __future__ import annotations

import struct
from typing import Optional

from engine.pictures import has_picture, has_text_picture

__all__ = ["XMP_SIG", "sanitize_xmp"]

XMP_SIG = b"http://ns.adobe.com/xap/1.0/\x00"
_NS_GIMG = "http://ns.adobe.com/xap/1.0/g/img/"
_NS_XMP = "http://ns.adobe.com/xap/1.0/"
_NS_NOTE = "http://ns.adobe.com/xmp/note/"
_MAX_PAYLOAD = 65533                     # a segment's 16-bit length counts its own two bytes


def sanitize_xmp(seg: bytes, notes: list[str], ext_xmp: bool) -> Optional[bytes]:
    """The XMP packet without its pictures (see the module doc); None to drop it."""
    from lxml import etree

    packet = seg[4 + len(XMP_SIG):]
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    root = None
    for text in (packet, packet.rstrip(b"\x00")):       # some writers pad UTF-8 packets with NULs
        try:
            root = etree.fromstring(text, parser)
            break
        except (etree.XMLSyntaxError, ValueError):
            continue
    if root is None:
        notes.append("XMP segment dropped: not well-formed XML")
        return None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        notes.append("XMP segment dropped: it declares a DTD")
        return None
    removed = _strip_xmp(root, ext_xmp)
    if removed is None:
        notes.append("XMP segment dropped: its root or a node beside it may hold a picture")
        return None
    if not removed and not has_picture(packet):
        return seg                                       # nothing to change: byte for byte
    body = XMP_SIG + etree.tostring(tree, encoding="UTF-8", xml_declaration=False)
    if has_picture(body, len(XMP_SIG)) or len(body) > _MAX_PAYLOAD:
        notes.append("XMP segment dropped: it still may hold a picture after cleaning")
        return None
    notes.append(f"XMP: {removed} thumbnail/picture nodes and attributes removed, packet re-serialised as UTF-8")
    return seg[:2] + struct.pack(">H", len(body) + 2) + body


def _strip_xmp(root, ext_xmp: bool) -> Optional[int]:
    """Remove picture elements, attributes, comments, processing instructions and text from the
    tree; return how many, or None when the root or a node beside it would have to go."""
    from lxml import etree

    def unwanted(qname) -> bool:
        q = etree.QName(qname)
        if q.namespace == _NS_GIMG or (q.namespace == _NS_XMP and q.localname == "Thumbnails"):
            return True
        return ext_xmp and q.namespace == _NS_NOTE and q.localname == "HasExtendedXMP"

    for sibling in list(root.itersiblings(preceding=True)) + list(root.itersiblings()):
        if has_text_picture(sibling.text or "") or has_text_picture(sibling.tail or ""):
            return None
    nodes, count = [], 0
    gone: set = set()                                    # nodes to remove (lxml proxies stay alive in `nodes`)
    for node in root.iter():
        if node.getparent() in gone:                     # document order: parents come first
            gone.add(node)
            continue                                     # goes with the node above it
        if isinstance(node.tag, str):
            if unwanted(node.tag) or has_text_picture(node.text or ""):
                nodes.append(node)
                gone.add(node)
                continue
            for name, value in node.attrib.items():
                if unwanted(name) or has_text_picture(value):
                    del node.attrib[name]
                    count += 1
        elif has_text_picture(node.text or ""):          # comment, processing instruction
            nodes.append(node)
            gone.add(node)
            continue
        if node.tail and has_text_picture(node.tail):
            node.tail = None
            count += 1
    if any(node is root for node in nodes):
        return None
    for node in nodes:
        node.getparent().remove(node)                    # its tail (whitespace) goes with it
    return count + len(nodes)
