"""The per-image metadata JSON, in the reference system's format (REFERENCE_NPRA.md §1-2):
52 keys in the template order, string-typed values, the reference number formats, with the
fixes listed at the top of that document."""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Optional

from engine.config import check_template, short_text
from engine.fsutil import text_safe
from engine.meta.exif import ExifData, XmlNode, parse_xml, redact_image_properties
from engine.meta.paths import STREKNING, filename_tokens, kryss, path_element, split_path

__all__ = ["KEYS", "template", "build_record", "bildeid", "mappenavn", "versjon", "to_number", "dumps",
           "MetaContext", "relative_to_top"]

LOG = logging.getLogger("sladd")

KEYS = (
    "exif_tid", "exif_dato", "exif_dataeier", "exif_camera", "exif_imagetype", "exif_imagewidth",
    "exif_imageheight", "exif_speed_ms", "exif_heading", "exif_gpsposisjon", "exif_altitude", "exif_moh",
    "exif_strekningsnavn", "exif_fylke", "exif_vegkat", "exif_vegstat", "exif_vegnr", "exif_roadtype", "exif_hp",
    "exif_strekning", "exif_delstrekning", "exif_ankerpunkt", "exif_kryssdel", "exif_sideanleggsdel", "exif_meter",
    "exif_feltkode", "exif_mappenavn", "exif_filnavn", "exif_strekningreferanse", "exif_imageproperties",
    "exif_basislinje", "exif_reflinkinfo", "exif_reflinkid", "exif_reflinkposisjon", "exif_roadident", "exif_roll",
    "exif_pitch", "exif_geoidalseparation", "exif_northrmserror", "exif_eastrmserror", "exif_downrmserror",
    "exif_rollrmserror", "exif_pitchrmserror", "exif_headingrmserror", "exif_xptitle", "exif_kvalitet", "bildeid",
    "senterlinjeposisjon", "detekterte_objekter", "versjon", "mappenavn", "exif_preview_filnavn",
)


class MetaContext:
    """Config values the record needs (plain attributes, so tests need no config file)."""

    def __init__(self, *, image_type="Planar", data_eier=None, fylkesnummer=None, force_fylke=False,
                 exif_mappenavn="Vegbilder/{relative_input_dir}", exif_top_dir="tilSladding",
                 remove_imagetype_filepath=False, versjon="P0.2_K19700101", preview_enabled=False,
                 old_format=False):
        check_template(exif_mappenavn, "exif_mappenavn")      # as at config load: fields and specs
        self.image_type = image_type
        self.data_eier = data_eier
        self.fylkesnummer = fylkesnummer
        self.force_fylke = force_fylke
        self.exif_mappenavn = exif_mappenavn
        self.exif_top_dir = exif_top_dir
        self.remove_imagetype_filepath = remove_imagetype_filepath
        self.versjon = versjon
        self.preview_enabled = preview_enabled
        self.old_format = old_format

    @classmethod
    def from_config(cls, cfg, config_file: Path) -> "MetaContext":
        return cls(image_type=cfg.image_type, data_eier=cfg.data_eier, fylkesnummer=cfg.fylkesnummer,
                   force_fylke=cfg.force_fylke, exif_mappenavn=cfg.exif_mappenavn, exif_top_dir=cfg.exif_top_dir,
                   remove_imagetype_filepath=cfg.remove_imagetype_filepath,
                   versjon=versjon(cfg.application_version, config_file),
                   preview_enabled=bool(cfg.remote_preview or cfg.local_preview or cfg.archive_preview
                                        or cfg.separate_preview_directory),
                   old_format=cfg.metadata.format == "old")


def template() -> dict:
    d = dict.fromkeys(KEYS)
    d["exif_roadtype"] = "Ukjent"
    return d


def versjon(application_version: str, config_file: Path) -> str:
    mtime = _dt.datetime.fromtimestamp(os.stat(config_file).st_mtime)
    return f"P{application_version}_K{mtime:%Y%m%d}"


def to_number(x):
    """The reference's `num`: None -> None, float, NaN (and infinity) -> None, int when integral."""
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f):
        return None
    return int(f) if f.is_integer() else f


def dumps(record: dict) -> str:
    return json.dumps(record, indent=4, ensure_ascii=False)


# --- time and ids ------------------------------------------------------------------------------
def _iso(tid: str) -> Optional[_dt.datetime]:
    m = re.match(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})", tid or "")
    if not m:
        return None
    return _dt.datetime(*(int(g) for g in m.groups()))


def bildeid(d: dict, image_type: str) -> Optional[str]:
    """Deterministic id, the primary key of existing rows: kept exactly (fix 18)."""
    t = _iso(d.get("exif_tid") or "")
    name = d.get("exif_filnavn")
    if t is None or not name:
        return None
    stem = re.sub(r"_f\d+", "", os.path.splitext(name)[0])
    return f"{t:%Y-%m-%dT%H.%M.%S}_{stem}_{image_type}_{d.get('exif_feltkode')}"


def relative_to_top(image_path: str, top_dir: str) -> Optional[str]:
    """Folders below the first `top_dir` (exact, case-sensitive) of a path; None if absent."""
    dirs = split_path(image_path)[:-1]
    return "/".join(dirs[dirs.index(top_dir) + 1:]) if top_dir in dirs else None


def mappenavn(d: dict, image_path: str, ctx: MetaContext, warnings: Optional[list] = None) -> Optional[str]:
    rel = relative_to_top(image_path, ctx.exif_top_dir)
    if rel is None:
        if warnings is not None:
            warnings.append(f"exif_top_dir {ctx.exif_top_dir!r} is not in the path; relative_input_dir is empty")
        rel = ""
    t = _iso(d.get("exif_tid") or "")
    try:
        out = ctx.exif_mappenavn.format(
            aar=t.year if t else None, maaned=t.month if t else None, dag=t.day if t else None,
            fylke=str(d.get("exif_fylke")).zfill(2), vegkat=d.get("exif_vegkat"), vegstat=d.get("exif_vegstat"),
            vegnr=d.get("exif_vegnr"), meter=d.get("exif_meter"), feltkode=d.get("exif_feltkode"),
            strekningreferanse=d.get("exif_strekningreferanse"), hp=d.get("exif_hp"), relative_input_dir=rel)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        # The template was checked at load; a format spec can still meet a missing (None) value.
        raise ValueError(f"exif_mappenavn {ctx.exif_mappenavn!r} cannot be formatted: {exc}") from None
    if ctx.remove_imagetype_filepath and t is not None:
        out = re.sub(rf"({t.year})/planar", str(t.year), out, flags=re.IGNORECASE)
    return out


def _roadident(d: dict) -> Optional[str]:
    """§1.7, omitting missing parts instead of printing None (fix 11)."""
    road = "".join(p for p in (d.get("exif_vegkat"), d.get("exif_vegstat"), d.get("exif_vegnr")) if p)
    sd = "".join(f"{k}{v}" for k, v in (("S", d.get("exif_strekning")), ("D", d.get("exif_delstrekning"))) if v)
    parts = [p for p in (road, sd) if p]
    if not parts:
        return None
    return " ".join(parts + roadident_tail(d))


def roadident_tail(d: dict) -> list[str]:
    """The anchor, junction/side-facility part and meter of a built roadident (§1.7)."""
    tail = []
    if d.get("exif_ankerpunkt"):
        tail.append(f"M{d['exif_ankerpunkt']}")
    if d.get("exif_sideanleggsdel"):
        tail.append(f"AD{d['exif_sideanleggsdel']}")
    elif d.get("exif_kryssdel"):
        tail.append(f"KD{d['exif_kryssdel']}")
    if d.get("exif_meter"):
        tail.append(f"m{d['exif_meter']}")
    return tail


# --- the routes of §1.2 ------------------------------------------------------------------------
def _file_time(d: dict, file_path: Optional[Path]) -> None:
    if d.get("exif_tid") or file_path is None:
        return
    st = os.stat(file_path)
    t = _dt.datetime.fromtimestamp(min(st.st_mtime, st.st_ctime))
    d["exif_tid"] = t.strftime("%Y-%m-%dT%H:%M:%S.%f")
    d["exif_dato"] = t.strftime("%Y-%m-%d")


def _from_path(d: dict, image_path: str, file_path: Optional[Path]) -> None:
    _file_time(d, file_path)
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


_GNSS = {"exif_roll": "Roll", "exif_pitch": "Pitch", "exif_geoidalseparation": "GeoidalSeparation",
         "exif_northrmserror": "NorthRmsError", "exif_eastrmserror": "EastRmsError",
         "exif_downrmserror": "DownRmsError", "exif_rollrmserror": "RollRmsError",
         "exif_pitchrmserror": "PitchRmsError", "exif_headingrmserror": "HeadingRmsError",
         "exif_altitude": "Altitude", "exif_heading": "Heading"}


def finite_text(v: Optional[str]) -> Optional[str]:
    """A number as read from XML, or None for NaN/infinity (never a "nan" string in the JSON)."""
    try:
        return None if v is not None and not math.isfinite(float(v)) else v
    except (TypeError, ValueError):
        return v


def position_ok(lon, lat, alt, warnings: list, source: str) -> bool:
    """True if the texts lon, lat, alt are finite numbers (`,` or `.` as the decimal mark) with
    lat in [-90, 90] and lon in [-180, 180]; else False and a warning: the position is null,
    never "nan" or an impossible point."""
    try:
        x, y, z = (float(str(v).strip().replace(",", ".")) for v in (lon, lat, alt))
    except ValueError:
        warnings.append(f"{source}: position ({short_text(lon)}, {short_text(lat)}, {short_text(alt)}) is not "
                        "numeric; no position")
        return False
    if not all(math.isfinite(v) for v in (x, y, z)):
        warnings.append(f"{source}: position ({x}, {y}, {z}) is not finite; no position")
        return False
    if not (-90 <= y <= 90 and -180 <= x <= 180):
        warnings.append(f"{source}: latitude {y:g} / longitude {x:g} outside [-90, 90] / [-180, 180]; no position")
        return False
    return True


def _reflink(d: dict, xml: XmlNode, image_type: str) -> None:
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


class _BadGps(ValueError):
    pass


def _rational(v, what: str) -> float:
    """A GPS RATIONAL (Pillow IFDRational, an old-Pillow (num, den) pair or a plain number) as
    a float. EXIF GPS values are unsigned (the sign is in the *Ref tags): a zero or negative
    denominator, a negative numerator, NaN or infinity is refused, never turned into "nan" or
    a flipped sign."""
    if isinstance(v, tuple) and len(v) == 2:
        num, den = v
    elif hasattr(v, "numerator") and hasattr(v, "denominator"):
        num, den = v.numerator, v.denominator
    else:
        num, den = v, 1
    try:
        num, den = float(num), float(den)
    except (TypeError, ValueError):
        raise _BadGps(f"{what} is not a number") from None
    if not (math.isfinite(num) and math.isfinite(den)) or den <= 0 or num < 0:
        raise _BadGps(f"{what} is an invalid rational ({num:g}/{den:g})")
    return num / den


def _dms(v, what: str) -> float:
    """Degrees, minutes, seconds (one to three rationals) -> decimal degrees."""
    if not isinstance(v, (tuple, list)):
        v = (v,)
    if not 1 <= len(v) <= 3:
        raise _BadGps(f"{what} has {len(v)} values, not 3 (degrees, minutes, seconds)")
    return sum(_rational(x, what) / 60 ** i for i, x in enumerate(v))


def _gps_fallback(d: dict, gps: dict) -> None:
    """§1.5. Each value is checked (see _rational); the position needs a valid latitude in
    [-90, 90], longitude in [-180, 180] and altitude, else it is null with a warning. Speed
    and heading are dropped on their own when invalid."""
    warn = d.setdefault("_warnings", []).append
    missing = [name for tag, name in ((2, "GPSLatitude"), (4, "GPSLongitude"), (6, "GPSAltitude")) if tag not in gps]
    if missing:
        warn(f"GPSInfo incomplete: no {', '.join(missing)}; no position")
        return
    try:
        lat, lon = _dms(gps[2], "GPSLatitude"), _dms(gps[4], "GPSLongitude")
        alt = _rational(gps[6], "GPSAltitude")
    except _BadGps as exc:
        warn(f"GPSInfo: {exc}; no position")
        return
    if str(gps.get(1, "")).strip() == "S":
        lat = -lat
    if str(gps.get(3, "")).strip() == "W":
        lon = -lon
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        warn(f"GPSInfo: latitude {lat:g} / longitude {lon:g} outside [-90, 90] / [-180, 180]; no position")
        return
    ref = gps.get(5, 0)
    if (ref[0] if isinstance(ref, bytes) and ref else ref) == 1:
        alt = -alt                             # fix 12: GPSAltitudeRef 1 = below sea level
    d["exif_gpsposisjon"] = f"srid=4326;POINT Z( {lon} {lat} {alt} )"
    d["exif_altitude"] = f"{alt}"
    speed = gps.get(13)
    if speed:
        denom = {"K": 1, "M": 2.237, "N": 1.944}.get(str(gps.get(12, "K")).strip(), 1)
        try:
            d["exif_speed_ms"] = f"{_rational(speed, 'GPSSpeed') / denom:.2f}"
        except _BadGps as exc:
            warn(f"GPSInfo: {exc}; no speed")
    if gps.get(17) is not None:
        try:
            d["exif_heading"] = _rational(gps[17], "GPSImgDirection")
        except _BadGps as exc:
            warn(f"GPSInfo: {exc}; no heading")


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
        from engine.meta.old import build_record_old
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
            _parse_into(d, redacted, "ImageProperties", warnings, lambda x: _image_properties(d, x))
        if exif.reflink_info:
            d["exif_reflinkinfo"] = exif.reflink_info
            _parse_into(d, exif.reflink_info, "ReflinkInfo", warnings, lambda x: _reflink(d, x, ctx.image_type))
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
                _gps_fallback(d, exif.gps)
        d["exif_xptitle"] = exif.xptitle if exif.xptitle is not None else ""
    else:
        warnings.append("no EXIF: metadata from the path and file times only")
        d["exif_kvalitet"] = "0"
        _from_path(d, image_path, file_path)
    return finish_record(d, image_path, ctx, warnings, detections, preview_name, _roadident)


def finish_record(d: dict, image_path: str, ctx: MetaContext, warnings: list, detections, preview_name,
                  roadident_fn) -> tuple[dict, list[str]]:
    """The steps every variant ends with (§1.2 step 4): bildeid, mappenavn (before the fylke
    fallback, as the reference), a built roadident when none was read, the fylke fallback."""
    warnings.extend(d.pop("_warnings", []))
    d["bildeid"] = bildeid(d, ctx.image_type)
    d["mappenavn"] = mappenavn(d, image_path, ctx, warnings)
    if not d["exif_roadident"]:
        d["exif_roadident"] = roadident_fn(d)
    if ctx.force_fylke or not d["exif_fylke"]:
        d["exif_fylke"] = str(ctx.fylkesnummer) if ctx.fylkesnummer is not None else None
    d["detekterte_objekter"] = detections
    d["versjon"] = ctx.versjon
    d["exif_preview_filnavn"] = preview_name if ctx.preview_enabled else None
    return _text_safe(d), [_text_safe(w) for w in warnings]


def _text_safe(v):
    """Every text of a record encodable as UTF-8: a file name with bytes that are not UTF-8
    arrives with surrogate escapes (PEP 383), which the JSON file, a log line or a database
    cannot hold; each such byte becomes `\\xNN` (engine.fsutil.text_safe)."""
    if isinstance(v, str):
        return text_safe(v)
    if isinstance(v, dict):
        return {_text_safe(k): _text_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_text_safe(x) for x in v]
    return v


def _parse_into(d: dict, text: str, what: str, warnings: list, fn) -> None:
    try:
        node = parse_xml(text)
    except ValueError as exc:
        warnings.append(f"{what}: {exc}")
        return
    if node is not None:
        fn(node)
