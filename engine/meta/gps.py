"""The EXIF GPSInfo fallback (docs/reference.md §1.5): a position, speed and heading from the
standard GPS tags when there is no `ReflinkInfo` vendor tag."""
from __future__ import annotations

import math

__all__ = ["gps_fallback"]


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


def gps_fallback(d: dict, gps: dict) -> None:
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
