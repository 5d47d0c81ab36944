"""Column formatters: JSON record -> database value (docs/reference.md §7.2). A table YAML names
them; `text:<key>` and `number:<key>` serve user tables too."""
from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Any, Callable, Optional

from engine.db.geometry import parse_wkt
from engine.meta.record import to_number

__all__ = ["FORMATTERS", "get_formatter"]


def _tid(d: dict) -> Optional[_dt.datetime]:
    m = re.match(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?", d.get("exif_tid") or "")
    if not m:
        return None
    parts = [int(g) for g in m.groups()[:6]]
    micro = int((m.group(7) or "0").ljust(6, "0"))
    return _dt.datetime(*parts, micro)


def _text(key: str) -> Callable[[dict], Any]:
    return lambda d: d.get(key)


def _num(key: str, fallback: Optional[str] = None) -> Callable[[dict], Any]:
    def f(d: dict):
        v = d.get(key)
        if v is None and fallback is not None:
            v = d.get(fallback)
        return to_number(v)
    return f


def _id(d: dict):
    if d.get("bildeid"):
        return d["bildeid"]
    from engine.meta.record import bildeid
    return bildeid(d, d.get("exif_imagetype") or "Planar")


def _z(key: str):
    def f(d: dict):
        g = parse_wkt(d.get(key), dim=3)
        return g.z if g is not None else None
    return f


FORMATTERS: dict[str, Callable[[dict], Any]] = {
    "ID": _id,
    "Tidspunkt": _tid,
    "Dataeier": _text("exif_dataeier"),
    "Kamera": _text("exif_camera"),
    "Bildetype": _text("exif_imagetype"),
    "Bildebredde": _text("exif_imagewidth"),          # the reference passed the string through
    "Bildehoyde": _text("exif_imageheight"),
    "Moh": _num("exif_moh"),
    "Strekningsnavn": _text("exif_strekningsnavn"),
    "Strekningsreferanse": _text("exif_strekningreferanse"),
    "Retning": _num("exif_heading"),
    "Posisjon_2d": lambda d: parse_wkt(d.get("exif_gpsposisjon"), dim=2),
    "Posisjon": lambda d: parse_wkt(d.get("exif_gpsposisjon"), dim=3),
    "Hoyde": _z("exif_gpsposisjon"),
    "SenterlinjePosisjon_2d": lambda d: parse_wkt(d.get("senterlinjeposisjon"), dim=2),
    "SenterlinjePosisjon": lambda d: parse_wkt(d.get("senterlinjeposisjon"), dim=3),
    "SenterlinjeHoyde": _z("senterlinjeposisjon"),
    "FylkeNummer": _num("exif_fylke"),
    "Vegkategori": _text("exif_vegkat"),
    "Vegstatus": _text("exif_vegstat"),
    "Vegnummer": _num("exif_vegnr"),
    "Vegtype": _text("exif_roadtype"),
    "HP": _num("exif_hp"),
    "Strekning": _num("exif_strekning"),
    "Delstrekning": _num("exif_delstrekning"),
    "Ankerpunkt": _num("exif_ankerpunkt"),
    "Kryssdel": _num("exif_kryssdel"),
    "Sideanleggsdel": _num("exif_sideanleggsdel"),
    "Meter": _num("exif_meter"),
    "Hastighet": _num("exif_speed_ms"),
    "Baselineinfo": _text("exif_basislinje"),
    "Mappenavn": _text("mappenavn"),
    "Filnavn": _text("exif_filnavn"),
    "PreviewFilnavn": _text("exif_preview_filnavn"),
    "JsonData": lambda d: json.dumps(d, ensure_ascii=False),
    "ReflinkID": _num("exif_reflinkid", "veglenkeid"),
    "ReflinkPosisjon": _num("exif_reflinkposisjon", "veglenkepos"),
    "DetekterteObjekter": lambda d: json.dumps(d.get("detekterte_objekter"), ensure_ascii=False),
    "Aar": lambda d: _tid(d).year if _tid(d) else None,
    "Feltkode": _text("exif_feltkode"),
    "VegIdentitet": _text("exif_roadident"),
    "Versjon": _text("versjon"),
    "XpTitle": _text("exif_xptitle"),
    "ExifKvalitet": _num("exif_kvalitet"),
    "StrekningReferanse": _text("exif_strekningreferanse"),
}
for _name in ("Roll", "Pitch", "Geoidalseparation", "Northrmserror", "Eastrmserror", "Downrmserror",
              "Rollrmserror", "Pitchrmserror", "Headingrmserror"):
    FORMATTERS[_name] = _num(f"exif_{_name.lower()}")


def get_formatter(name: str) -> Callable[[dict], Any]:
    if name.startswith("text:"):
        return _text(name[5:])
    if name.startswith("number:"):
        return _num(name[7:])
    try:
        return FORMATTERS[name]
    except KeyError:
        raise ValueError(f"unknown formatter {name!r}; valid: text:<json key>, number:<json key>, "
                         f"{', '.join(sorted(FORMATTERS))}") from None
