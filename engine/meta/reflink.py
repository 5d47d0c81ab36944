"""The `ReflinkInfo` vendor tag (40056), docs/reference.md §1.4: the v2 reader, which the old
variant also runs (with its own precedence, engine.meta.old)."""
from __future__ import annotations

import re

from engine.meta.common import finite_text, position_ok, to_number
from engine.meta.exif import XmlNode
from engine.meta.paths import kryss, path_element, split_path

__all__ = ["reflink_into"]

_GNSS = {"exif_roll": "Roll", "exif_pitch": "Pitch", "exif_geoidalseparation": "GeoidalSeparation",
         "exif_northrmserror": "NorthRmsError", "exif_eastrmserror": "EastRmsError",
         "exif_downrmserror": "DownRmsError", "exif_rollrmserror": "RollRmsError",
         "exif_pitchrmserror": "PitchRmsError", "exif_headingrmserror": "HeadingRmsError",
         "exif_altitude": "Altitude", "exif_heading": "Heading"}


def reflink_into(d: dict, xml: XmlNode, image_type: str) -> None:
    """Fill record `d` from a ReflinkInfo root: `ReflinkInfo` (id and position only) or
    `AdditionalInfoNorway2` (road, GNSS and image info); only truthy values overwrite."""
    if xml.tag == "ReflinkInfo":
        d["exif_reflinkid"] = xml.get("ReflinkId") or None
        d["exif_reflinkposisjon"] = xml.get("ReflinkPosition") or None
        return
    if xml.tag != "AdditionalInfoNorway2":
        d.setdefault("_warnings", []).append(f"unknown ReflinkInfo root <{xml.tag}>")
        return
    d["exif_reflinkid"] = xml.get("RoadInfo/ReflinkId") or None
    d["exif_reflinkposisjon"] = xml.get("RoadInfo/ReflinkPosition") or None
    if xml.get("RoadInfo/RoadIdent"):
        d["exif_roadident"] = xml.get("RoadInfo/RoadIdent")
    lat, lon, alt = (xml.get(f"GnssInfo/{k}") for k in ("Latitude", "Longitude", "Altitude"))
    gnss_complete = all(v not in (None, "") for v in (lat, lon, alt))
    if image_type == "360" and not gnss_complete:
        d["exif_kvalitet"] = "1"
    values: dict = {k: finite_text(xml.get(f"GnssInfo/{tag}")) for k, tag in _GNSS.items()}
    geoid = to_number(xml.get("GnssInfo/GeoidalSeparation", "NaN"))
    altitude = to_number(alt)
    if geoid is not None and altitude is not None:
        values["exif_moh"] = str(altitude - geoid)
    speed = to_number(xml.get("GnssInfo/Speed"))
    # The reference crashed on a NaN speed; a missing or NaN speed is simply not set.
    values["exif_speed_ms"] = f"{round(speed, 2):.2f}" if speed is not None else None
    # Fix 11: a position with a missing coordinate is null, not a string containing None.
    if gnss_complete and position_ok(lon, lat, alt, d.setdefault("_warnings", []), "GnssInfo"):
        values["exif_gpsposisjon"] = f"srid=4326;POINT Z( {lon} {lat} {alt} )"
    else:
        values["exif_gpsposisjon"] = None
    ident = xml.get("RoadInfo/RoadIdent") or ""
    tokens = ident.split(" ")
    m = re.match(r"^.(\d+)D(\d+)", tokens[1]) if len(tokens) > 1 else None
    if m:
        values["exif_strekning"], values["exif_delstrekning"] = m.group(1), m.group(2)
        values["exif_strekningreferanse"] = f"S{m.group(1)}/D{m.group(2)}"
    if xml.has("ImageInfo"):
        values["exif_fylke"] = xml.get("ImageInfo/fylke")
        values["exif_roadtype"] = xml.get("ImageInfo/roadtype")
        meter = to_number(xml.get("ImageInfo/meter"))
        if meter is not None:
            values["exif_meter"] = str(round(float(meter), 2))
        storage = xml.get("ImageInfo/StorageFile")
        if storage:
            elems = split_path(storage)
            values["exif_filnavn"] = elems[-1]
            values["exif_mappenavn"] = "/".join(elems[:-1]) or None
            k = kryss(elems[-1])
            for key in ("exif_ankerpunkt", "exif_kryssdel", "exif_sideanleggsdel"):
                values[key] = k.get(key)
            for e in elems:
                path_element(d, e)
    for k, v in values.items():
        if v:                                  # the reference overwrote only with truthy values
            d[k] = v
