"""The older metadata variant for pre-2022 images (docs/reference.md §1.9, the reference's
exif_util_old / anonymise_old), selected with `metadata.format: old` or `--old-metadata`.

ImageProperties is the primary source. The variant's bugs are fixed, not copied: a missing or
NaN speed is null (the reference crashed), the built roadident uses strekning (not delstrekning
twice) and omits missing parts, the meter fallback reads the file name (the reference indexed
one character of the path and crashed), and the second file-name token is not taken as HP.
"""
from __future__ import annotations

import re
from typing import Optional

from engine.meta.common import (MetaContext, file_time, finish_record, finite_text, parse_into, position_ok,
                                roadident_tail, template, to_number)
from engine.meta.exif import ExifData, XmlNode, redact_image_properties
from engine.meta.paths import FELT, STREKNING, filename_tokens, kryss, path_element, split_path, strip_zeros
from engine.meta.reflink import reflink_into

__all__ = ["build_record_old"]

_HP = re.compile(r"hp(\d+)", re.IGNORECASE)
_METER_ANY = re.compile(r"(?<!k)m(\d+)")
_KM = re.compile(r"km(\d+)[_,.](\d+)")


def _nan(v: Optional[str]) -> Optional[str]:
    return None if v in (None, "") else finite_text(v)


def _image_properties(d: dict, xml: XmlNode) -> None:
    geo = xml.has("GeoTag")
    d["exif_kvalitet"] = "2" if geo else "1"
    if geo:
        lon, lat, alt = (xml.get(f"GeoTag/{k}") for k in ("dLongitude", "dLatitude", "dAltitude"))
        if all(v not in (None, "") for v in (lon, lat, alt)) and \
                position_ok(lon, lat, alt, d.setdefault("_warnings", []), "GeoTag"):
            d["exif_gpsposisjon"] = f"srid=4326;POINT Z( {lon} {lat} {alt} )"
        d["exif_altitude"] = _nan(alt)
    d["exif_heading"] = _nan(xml.get("Heading"))
    speed = to_number(_nan(xml.get("Speed")))
    d["exif_speed_ms"] = str(round(float(speed), 2)) if speed is not None else None
    name = xml.get("ImageName")
    mapper = name.replace("\\", "/").split("/") if name else []
    filename = mapper[-1] if mapper else ""
    if name:
        d["exif_filnavn"] = filename
        d["exif_mappenavn"] = "/".join(mapper[:-1]) or None
        d["exif_strekningreferanse"] = "/".join(mapper[-4:-2]) or None
    date = xml.attr("Date")
    if date:
        d["exif_tid"] = date
        d["exif_dato"] = date.split("T")[0]
    road = xml.get("VegComValues/VCRoad")
    if road:
        if len(road) >= 3:
            d["exif_vegkat"], d["exif_vegstat"], d["exif_vegnr"] = road[0], road[1], strip_zeros(road[2:])
        else:
            d["exif_vegnr"] = strip_zeros(road)
    _strekning_and_kryss(d, xml.get("VegComValues/VCHP"), filename)
    lane = xml.get("VegComValues/VCLaneName")
    if lane:
        d["exif_feltkode"] = lane
    else:
        for tok in filename_tokens(filename):
            m = FELT.search(tok)
            if m:
                d["exif_feltkode"] = strip_zeros(m.group(1))
    d["exif_strekningsnavn"] = xml.get("VegComValues/VCArea") or None
    d["exif_fylke"] = xml.get("VegComValues/VCCountyNo") or d.get("exif_fylke")
    meter = to_number(xml.get("VegComValues/VCMeter"))
    if meter is not None:
        d["exif_meter"] = str(round(float(meter), 2))
    if not d.get("exif_roadident"):
        meterstring = _meterstring(filename)
        parts = [f"{d.get('exif_vegkat') or ''}{d.get('exif_vegstat') or ''}{d.get('exif_vegnr') or ''}",
                 d.get("exif_hp"), meterstring, d.get("exif_feltkode")]
        d["exif_roadident"] = " ".join(p for p in parts if p) or None


def _strekning_and_kryss(d: dict, vchp: Optional[str], filename: str) -> None:
    k = kryss(filename)
    if k:
        d.update(k)
        return
    m = STREKNING.search(vchp or "")
    if m:
        d["exif_strekning"], d["exif_delstrekning"] = m.group(1), m.group(2)
    elif vchp:
        d["exif_hp"] = strip_zeros(vchp)


def _meterstring(filename: str) -> Optional[str]:
    m = _KM.search(filename)
    if m:
        return f"{m.group(1)}{m.group(2)}".strip("0") or "0"
    m = _METER_ANY.search(filename)
    return (m.group(1).strip("0") or "0") if m else None


def _from_filename(d: dict, image_path: str, file_path) -> None:
    """No vendor XML: the path elements, then each `_` token of the file name (old rules)."""
    file_time(d, file_path)
    elems = split_path(image_path)
    for e in elems:
        path_element(d, e)
    name = elems[-1]
    d["exif_filnavn"] = name
    for tok in filename_tokens(name):
        path_element(d, tok)
        m = _HP.fullmatch(tok)
        if m:
            d["exif_hp"] = strip_zeros(m.group(1))
        m = _METER_ANY.fullmatch(tok)
        if m:
            d["exif_meter"] = strip_zeros(m.group(1))
        m = STREKNING.search(tok)
        if m:
            d["exif_strekning"], d["exif_delstrekning"] = m.group(1), m.group(2)


def _roadident_old(d: dict) -> Optional[str]:
    road = "".join(p for p in (d.get("exif_vegkat"), d.get("exif_vegstat"), d.get("exif_vegnr")) if p)
    if d.get("exif_hp"):
        section = f"HP{d['exif_hp']}"
    elif d.get("exif_strekning") or d.get("exif_delstrekning"):
        section = f"S{d.get('exif_strekning') or ''}D{d.get('exif_delstrekning') or ''}"
    else:
        section = ""
    parts = [road, section] + roadident_tail(d)
    return " ".join(p for p in parts if p) or None


def _reflink_old(d: dict, xml: XmlNode, image_type: str) -> None:
    """v2's ReflinkInfo handling, but ImageInfo fills only fields still empty (meter excepted)."""
    before = dict(d)
    reflink_into(d, xml, image_type)
    for k, v in before.items():
        if k not in ("exif_meter", "exif_reflinkid", "exif_reflinkposisjon", "exif_roadident", "exif_kvalitet") \
                and v not in (None, "", "Ukjent"):
            d[k] = v


def build_record_old(exif: ExifData, width: int, height: int, image_path: str, ctx: MetaContext, *,
                     file_path=None, detections=None, preview_name=None) -> tuple[dict, list[str]]:
    d = template()
    d["exif_imagetype"] = ctx.image_type
    d["exif_imagewidth"], d["exif_imageheight"] = str(width), str(height)
    warnings = list(exif.warnings)
    if exif.present:
        d["exif_camera"] = exif.model
        if ctx.data_eier:
            d["exif_dataeier"] = ctx.data_eier
        if exif.image_properties:
            redacted = redact_image_properties(exif.image_properties)
            d["exif_imageproperties"] = redacted
            parse_into(d, redacted, "ImageProperties", warnings, lambda x: _image_properties(d, x))
        if not d.get("exif_tid") and exif.datetime_original and " " in exif.datetime_original:
            date, time = exif.datetime_original.split(" ", 1)
            d["exif_dato"] = date.replace(":", "-")
            d["exif_tid"] = d["exif_dato"] + "T" + time
        if exif.reflink_info:
            d["exif_reflinkinfo"] = exif.reflink_info
            d["exif_kvalitet"] = d["exif_kvalitet"] or "2"
            parse_into(d, exif.reflink_info, "ReflinkInfo", warnings, lambda x: _reflink_old(d, x, ctx.image_type))
        if not exif.image_properties and not exif.reflink_info:
            d["exif_kvalitet"] = "1"
            _from_filename(d, image_path, file_path)
        d["exif_xptitle"] = exif.xptitle if exif.xptitle is not None else ""
    else:
        warnings.append("no EXIF: metadata from the path and file times only")
        d["exif_kvalitet"] = "0"
        _from_filename(d, image_path, file_path)
    return finish_record(d, image_path, ctx, warnings, detections, preview_name, _roadident_old)

