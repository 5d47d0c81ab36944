"""What both metadata variants share (record.py: v2, old.py: pre-2022): the JSON template,
the config values a record needs, ids, mappenavn, number and text helpers, and the steps every
record ends with (docs/reference.md §1-2). The variants import this module, never each other
(except record.build_record choosing the old variant)."""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from pathlib import Path
from typing import Optional

from engine.config.checks import check_template, short_text
from engine.fsutil import text_safe
from engine.meta.exif import parse_xml
from engine.meta.paths import split_path

__all__ = ["KEYS", "MetaContext", "template", "versjon", "to_number", "dumps", "iso_time", "bildeid",
           "relative_to_top", "mappenavn", "roadident_tail", "file_time", "finite_text", "position_ok",
           "parse_into", "finish_record"]

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
def iso_time(tid: str) -> Optional[_dt.datetime]:
    m = re.match(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})", tid or "")
    if not m:
        return None
    return _dt.datetime(*(int(g) for g in m.groups()))


def bildeid(d: dict, image_type: str) -> Optional[str]:
    """Deterministic id, the primary key of existing rows: kept exactly (fix 18)."""
    t = iso_time(d.get("exif_tid") or "")
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
    t = iso_time(d.get("exif_tid") or "")
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


# --- steps both variants take ----------------------------------------------------------------
def file_time(d: dict, file_path: Optional[Path]) -> None:
    """exif_tid / exif_dato from the file's older time stamp, when nothing set them."""
    if d.get("exif_tid") or file_path is None:
        return
    st = os.stat(file_path)
    t = _dt.datetime.fromtimestamp(min(st.st_mtime, st.st_ctime))
    d["exif_tid"] = t.strftime("%Y-%m-%dT%H:%M:%S.%f")
    d["exif_dato"] = t.strftime("%Y-%m-%d")


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


def parse_into(d: dict, text: str, what: str, warnings: list, fn) -> None:
    """fn(root node) of the vendor XML `text`; a parse error becomes a warning about `what`."""
    try:
        node = parse_xml(text)
    except ValueError as exc:
        warnings.append(f"{what}: {exc}")
        return
    if node is not None:
        fn(node)
