"""WKT points (`srid=4326;POINT Z( lon lat h )`) and their database forms (docs/reference.md §7.3)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

__all__ = ["SDOGeometry", "parse_wkt", "flip_wkt"]

# The reference's pattern: decimal numbers or NaN, no exponent notation.
_NUM = r"(-?\d+\.?\d*|NaN|nan)"
WKT = re.compile(rf"srid=(\d+);POINT Z\(\s*{_NUM} {_NUM} {_NUM}\s*\)")


@dataclass(frozen=True)
class SDOGeometry:
    """An Oracle SDO_GEOMETRY point: gtype `{dim}001`, SRID, SDO_POINT (x, y[, z]);
    elem_info and ordinates stay NULL, as the reference wrote them."""

    gtype: int
    srid: int
    point: tuple

    @property
    def x(self) -> float:
        return self.point[0]

    @property
    def y(self) -> float:
        return self.point[1]

    @property
    def z(self) -> Optional[float]:
        return self.point[2] if len(self.point) > 2 else None

    def ewkt(self) -> str:
        """PostGIS extended WKT of the 2D/3D point."""
        coords = " ".join(repr(float(c)) for c in self.point)
        return f"SRID={self.srid};POINT{' Z' if len(self.point) == 3 else ''}({coords})"


def parse_wkt(wkt: Optional[str], dim: int = 2) -> Optional[SDOGeometry]:
    """WKT -> SDOGeometry with `dim` coordinates; None for None, or when x or y is NaN.
    ValueError for text that is not a point WKT, or a WGS 84 (srid 4326) point off the globe."""
    if wkt is None:
        return None
    m = WKT.search(wkt)
    if not m:
        raise ValueError(f"not a point WKT: {wkt!r}")
    srid = int(m.group(1))
    x, y, z = (float(v) for v in m.groups()[1:])
    if math.isnan(x) or math.isnan(y):
        return None
    if srid == 4326 and not (-180 <= x <= 180 and -90 <= y <= 90):
        # A JSON file from elsewhere (load-json) may hold an impossible point: NULL, not a row
        # the spatial index places off the globe.
        raise ValueError(f"point ({x}, {y}) is outside longitude [-180, 180] / latitude [-90, 90]")
    point = (x, y) if dim == 2 else (x, y, None if math.isnan(z) else z)
    return SDOGeometry(gtype=int(f"{dim}001"), srid=srid, point=point)


def flip_wkt(wkt: Optional[str]) -> Optional[str]:
    """Swap the first two coordinates (`flip_wkt`, for files written lat-first)."""
    if wkt is None:
        return None
    return WKT.sub(lambda m: f"srid={m.group(1)};POINT Z( {m.group(3)} {m.group(2)} {m.group(4)} )", wkt)
