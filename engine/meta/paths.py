"""Road information from folder and file names (docs/reference.md §1.6), with the fixes:
paths split on both `\\` and `/` (fix 1), lane codes stop at `_` (fix 8), every valid county
number, historic and current (fix 9)."""
from __future__ import annotations

import re
from typing import Optional

__all__ = ["split_path", "path_element", "filename_tokens", "kryss", "strip_zeros", "VALID_FYLKER"]

# Fix 9: 01-12, 14-20, 50 (before 2020); 30, 34, 38, 42, 46, 54 (2020-23); 31-33, 39, 40, 55, 56
# (from 2024); 03, 11, 15, 18, 50 span all eras.
VALID_FYLKER = frozenset(
    [f"{n:02d}" for n in list(range(1, 13)) + list(range(14, 21))]
    + ["30", "31", "32", "33", "34", "38", "39", "40", "42", "46", "50", "54", "55", "56"])

FYLKE = re.compile(r"^(\d{2})\b")
FELT = re.compile(r"f(\d[^\W_]*)", re.IGNORECASE)           # fix 8: \w without "_"
VEG = re.compile(r"([ERFKPS])([SHWAPEBUQVXMTG])(\d+)", re.IGNORECASE)
KRYSS = re.compile(r"_S(\d+)D(\d+)_m(\d+)_([KSA])D(\d+)")
METER = re.compile(r"(?<!k)m(\d+)_f")
KM = re.compile(r"km(\d{2})[_,.](\d{3})")
STREKNING = re.compile(r"S(\d+)D(\d+)\b")


def split_path(path: str) -> list[str]:
    """Elements of a Windows or POSIX path, whatever this OS is (fix 1)."""
    return [p for p in re.split(r"[\\/]+", str(path)) if p != ""]


def strip_zeros(s: Optional[str]) -> Optional[str]:
    if s is None:
        return None
    t = s.lstrip("0")
    return t if t else ("0" if s else s)


def kryss(name: str) -> dict:
    """Kryss/sideanlegg pattern on a file name: strekning, delstrekning, ankerpunkt (zeros kept),
    kryssdel (type K) or sideanleggsdel (types S, A). Empty dict when it does not match."""
    m = KRYSS.search(name)
    if not m:
        return {}
    s, d, anker, typ, part = m.groups()
    out = {"exif_strekning": strip_zeros(s), "exif_delstrekning": strip_zeros(d), "exif_ankerpunkt": anker}
    out["exif_kryssdel" if typ == "K" else "exif_sideanleggsdel"] = strip_zeros(part)
    return out


def path_element(d: dict, elem: str) -> None:
    """Update `d` from one path element; later elements overwrite earlier ones."""
    m = FYLKE.search(elem)
    if m and m.group(1) in VALID_FYLKER:
        d["exif_fylke"] = strip_zeros(m.group(1))
    m = FELT.search(elem)
    if m:
        d["exif_feltkode"] = strip_zeros(m.group(1))
    m = VEG.search(elem)
    if m:
        d["exif_vegkat"], d["exif_vegstat"] = m.group(1).upper(), m.group(2).upper()
        d["exif_vegnr"] = strip_zeros(m.group(3))
    for k, v in kryss(elem).items():
        if v:
            d[k] = v
    if not d.get("exif_meter"):
        m = METER.search(elem)
        if m:
            d["exif_meter"] = strip_zeros(m.group(1))
    if not d.get("exif_meter"):
        m = KM.search(elem)
        if m:
            d["exif_meter"] = str(1000 * int(m.group(1)) + int(m.group(2)))


def filename_tokens(name: str) -> list[str]:
    """The reference's token split: the name cut at its first `.`, split on `_`."""
    return name.split(".", 1)[0].split("_")
