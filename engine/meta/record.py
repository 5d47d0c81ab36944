"""The per-image metadata JSON, in the reference system's format (docs/reference.md §1-2):
52 keys in the template order, string-typed values, the reference number formats, with the
fixes listed at the top of that document. This module is the v2 variant and the entry point,
`build_record`, which hands pre-2022 images to engine.meta.old; what both variants share is in
engine.meta.common (re-exported here)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from engine.meta.common import (KEYS, MetaContext, bildeid, dumps, file_time, finish_record, mappenavn, parse_into,
                                relative_to_top, roadident_tail, template, to_number, versjon)
from engine.meta.exif import ExifData, XmlNode, redact_image_properties
from engine.meta.gps import gps_fallback
from engine.meta.old import build_record_old
from engine.meta.paths import STREKNING, filename_tokens, kryss, path_element, split_path
from engine.meta.reflink import reflink_into

__all__ = ["KEYS", "template", "build_record", "bildeid", "mappenavn", "versjon", "to_number", "dumps",
           "MetaContext", "relative_to_top"]



def _roadident(d: dict) -> Optional[str]:
    """§1.7, omitting missing parts instead of printing None (fix 11)."""
    road = "".join(p for p in (d.get("exif_vegkat"), d.get("exif_vegstat"), d.get("exif_vegnr")) if p)
    sd = "".join(f"{k}{v}" for k, v in (("S", d.get("exif_strekning")), ("D", d.get("exif_delstrekning"))) if v)
    parts = [p for p in (road, sd) if p]
    if not parts:
        return None
    return " ".join(parts + roadident_tail(d))


# --- the routes of §1.2 ------------------------------------------------------------------------
def _from_path(d: dict, image_path: str, file_path: Optional[Path]) -> None:
    file_time(d, file_path)
    for elem in split_path(image_path):
        path_element(d, elem)
    d["exif_filnavn"] = split_path(image_path)[-1]


def _image_properties(d: dict, xml: XmlNode) -> None:
    parts = [xml.get(k, "") for k in ("BaseLinePosition", "BaseLineTickInterval", "BaseLineTickOffset",
                                      "TiltPoint", "Tilt")]
    d["exif_basislinje"] = ";".join(p or "" for p in parts)
    name = xml.get("ImageName")
    if name:
        elems = split_path(name)
        d["exif_filnavn"] = elems[-1]
        k = kryss(elems[-1])
        for key in ("exif_ankerpunkt", "exif_kryssdel", "exif_sideanleggsdel"):
            d[key] = k.get(key)
        d["exif_mappenavn"] = "/".join(elems[:-1]) or None
        for e in elems:
            path_element(d, e)
    if xml.has("VegComValues"):
        if xml.get("VegComValues/VCCountyNo"):
            d["exif_fylke"] = xml.get("VegComValues/VCCountyNo")
        meter = to_number(xml.get("VegComValues/VCMeter"))
        if meter is not None:
            d["exif_meter"] = str(round(float(meter), 2))
        # Fix 10: the road section name, which v2 never filled.
        if xml.get("VegComValues/VCArea"):
            d["exif_strekningsnavn"] = xml.get("VegComValues/VCArea")


def build_record(exif: ExifData, width: int, height: int, image_path: str, ctx: MetaContext, *,
                 file_path: Optional[Path] = None, detections: Optional[dict] = None,
                 preview_name: Optional[str] = None) -> tuple[dict, list[str]]:
    """The JSON dict for one image, and warnings about it (the older variant when
    `ctx.old_format`; see engine.meta.old).

    image_path  the path as the tree names it (Windows or POSIX; used for road fields, mappenavn)
    file_path   the real file (for its timestamps when there is no DateTimeOriginal)
    detections  {class name: count} in class-id order, or None when no model ran
    """
    if ctx.old_format:
        return build_record_old(exif, width, height, image_path, ctx, file_path=file_path, detections=detections,
                                preview_name=preview_name)
    d = template()
    d["exif_imagetype"] = ctx.image_type
    d["exif_imagewidth"], d["exif_imageheight"] = str(width), str(height)
    warnings = list(exif.warnings)
    if exif.present:
        d["exif_kvalitet"] = "2"
        d["exif_camera"] = exif.model
        if ctx.data_eier:
            d["exif_dataeier"] = ctx.data_eier
        if exif.datetime_original and " " in exif.datetime_original:
            date, time = exif.datetime_original.split(" ", 1)
            d["exif_dato"] = date.replace(":", "-").replace(".", "-")
            d["exif_tid"] = d["exif_dato"] + "T" + time.replace(".", ":")
        if exif.image_properties:
            redacted = redact_image_properties(exif.image_properties)
            d["exif_imageproperties"] = redacted
            parse_into(d, redacted, "ImageProperties", warnings, lambda x: _image_properties(d, x))
        if exif.reflink_info:
            d["exif_reflinkinfo"] = exif.reflink_info
            parse_into(d, exif.reflink_info, "ReflinkInfo", warnings, lambda x: reflink_into(d, x, ctx.image_type))
        else:
            d["exif_kvalitet"] = "1"
            _from_path(d, image_path, file_path)
            if exif.datetime_original and " " in exif.datetime_original:
                date, time = exif.datetime_original.split(" ", 1)
                d["exif_dato"] = date.replace(":", "-")
                d["exif_tid"] = d["exif_dato"] + "T" + time
            for tok in filename_tokens(d["exif_filnavn"]):
                m = STREKNING.search(tok)
                if m:
                    d["exif_strekning"], d["exif_delstrekning"] = m.group(1), m.group(2)
            if exif.gps:
                gps_fallback(d, exif.gps)
        d["exif_xptitle"] = exif.xptitle if exif.xptitle is not None else ""
    else:
        warnings.append("no EXIF: metadata from the path and file times only")
        d["exif_kvalitet"] = "0"
        _from_path(d, image_path, file_path)
    return finish_record(d, image_path, ctx, warnings, detections, preview_name, _roadident)
