"""Metadata from hostile or broken EXIF: GPS rationals with a zero or negative denominator, NaN,
infinity or an impossible position; undecodable XPTitle bytes; file names that are not UTF-8.
Each gives a null field and a warning; the image and its JSON are still written."""
from __future__ import annotations

import io
import json
import math
import os
import re
import struct
from fractions import Fraction

import pytest
from PIL import Image, TiffImagePlugin

from engine.cli import main
from engine.demo import jpeg_with_exif, road_scene
from engine.jpeg import parse_jpeg
from engine.meta import MetaContext, build_record, dumps, read_exif
from engine.meta.outputs import write_json_files

R = TiffImagePlugin.IFDRational
PATH = r"D:\tilSladding\2021\Planar\EV00006\S1\D1\F1_2021_08_15\EV00006_S1D1_m00123_f1.jpg"


def _rat(x):
    f = Fraction(x)
    return R(f.numerator, f.denominator)


def gps_exif(lat=(_rat(59), _rat(57), R(462017, 10000)), lon=(_rat(10), _rat(53), R(595499, 10000)),
             alt=R(23712, 100), lat_ref="N", lon_ref="E", speed=R(3499, 100), heading=R(21190, 100)) -> Image.Exif:
    """docs/samples.md C5's GPSInfo with the given values swapped in."""
    e = Image.Exif()
    e[0x0110] = "TestCam"
    e.get_ifd(0x8769)[0x9003] = "2021:08:15 13:45:10"
    e.get_ifd(0x8825).update({1: lat_ref, 2: lat, 3: lon_ref, 4: lon, 6: alt, 12: "K", 13: speed, 17: heading})
    return e


def jpeg(exif, size=(64, 32)) -> bytes:
    buf = io.BytesIO()
    exif_bytes = exif.tobytes() if isinstance(exif, Image.Exif) else exif
    Image.new("RGB", size, (90, 90, 90)).save(buf, "JPEG", **({"exif": exif_bytes} if exif_bytes else {}))
    return buf.getvalue()


def record_of(data: bytes, path=PATH, **ctx):
    return build_record(read_exif(parse_jpeg(data).exif), 64, 32, path, MetaContext(versjon="P0.2_K20220131", **ctx))


def assert_no_nan(d: dict):
    """No value is NaN/infinity or a text holding one (the raw vendor XML aside)."""
    for k, v in d.items():
        if isinstance(v, float):
            assert math.isfinite(v), k
        if isinstance(v, str) and k not in ("exif_reflinkinfo", "exif_imageproperties"):
            assert not re.search(r"(?i)\b(nan|inf(inity)?)\b", v), (k, v)


def test_valid_gps_still_gives_the_c5_position():
    d, warnings = record_of(jpeg(gps_exif()))
    assert d["exif_gpsposisjon"] == "srid=4326;POINT Z( 10.899874972222221 59.96283380555556 237.12 )"
    assert not [w for w in warnings if "GPS" in w]


@pytest.mark.parametrize("change,what", [
    ({"lat": (_rat(59), R(1, 0), _rat(0))}, "GPSLatitude"),             # x/0: Pillow gives nan
    ({"lat": (_rat(59), R(0, 0), _rat(0))}, "GPSLatitude"),             # 0/0
    ({"lon": (_rat(10), _rat(53), R(5, 0))}, "GPSLongitude"),
    ({"alt": R(23712, 0)}, "GPSAltitude"),
    ({"lat": (_rat(95), _rat(0), _rat(0))}, "outside"),                 # latitude 95
    ({"lon": (_rat(200), _rat(0), _rat(0)), "lon_ref": "W"}, "outside"),  # longitude -200
    ({"lat": (_rat(89), _rat(59), _rat(3601))}, "outside"),             # 89° 59' 3601" > 90
])
def test_bad_gps_rationals_give_no_position_and_a_warning(change, what):
    d, warnings = record_of(jpeg(gps_exif(**change)))
    assert d["exif_gpsposisjon"] is None and d["exif_altitude"] is None
    assert any("GPS" in w and what in w for w in warnings), warnings
    assert_no_nan(d)
    assert d["exif_kvalitet"] == "1" and d["exif_filnavn"] == "EV00006_S1D1_m00123_f1.jpg"   # the rest is there


def test_bad_speed_or_heading_is_dropped_alone():
    d, warnings = record_of(jpeg(gps_exif(speed=R(3499, 0), heading=R(1, 0))))
    assert d["exif_gpsposisjon"].startswith("srid=4326;POINT Z( 10.8998")
    assert d["exif_speed_ms"] is None and d["exif_heading"] is None
    assert any("GPSSpeed" in w for w in warnings) and any("GPSImgDirection" in w for w in warnings)
    assert_no_nan(d)


def _tiff_gps(entries) -> bytes:
    """A little-endian TIFF whose IFD0 holds only a GPS IFD with `entries` = [(tag, type,
    count, payload)], written by hand so a tag can carry any type (e.g. SRATIONAL)."""
    gps_off = 8 + 2 + 12 + 4
    data_off = gps_off + 2 + 12 * len(entries) + 4
    body, extra = b"", b""
    for tag, typ, count, payload in sorted(entries):
        if len(payload) <= 4:
            body += struct.pack("<HHI", tag, typ, count) + payload.ljust(4, b"\0")
        else:
            body += struct.pack("<HHII", tag, typ, count, data_off + len(extra))
            extra += payload
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHII", 0x8825, 4, 1, gps_off) + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 8) + ifd0 + struct.pack("<H", len(entries)) + body + b"\0\0\0\0" + extra


def _srational(*pairs) -> bytes:
    return b"".join(struct.pack("<ii", n, d) for n, d in pairs)


@pytest.mark.parametrize("lat", [((59, 1), (57, -1), (0, 1)), ((-59, 1), (0, 1), (0, 1)), ((59, -1), (0, 1), (0, 1))])
def test_negative_rationals_are_refused_not_sign_flipped(lat):
    """GPS values are unsigned (the sign is in GPSLatitudeRef); a SRATIONAL with a negative part
    must not move the point to the other hemisphere."""
    tiff = _tiff_gps([(1, 2, 2, b"N\0"), (2, 10, 3, _srational(*lat)), (3, 2, 2, b"E\0"),
                      (4, 10, 3, _srational((10, 1), (0, 1), (0, 1))), (6, 10, 1, _srational((100, 1)))])
    d, warnings = record_of(jpeg(b"Exif\0\0" + tiff))
    assert d["exif_gpsposisjon"] is None
    assert any("GPSLatitude" in w and "invalid rational" in w for w in warnings), warnings


def test_srational_with_valid_values_is_read():
    tiff = _tiff_gps([(1, 2, 2, b"S\0"), (2, 10, 3, _srational((59, 1), (30, 1), (0, 1))), (3, 2, 2, b"W\0"),
                      (4, 10, 3, _srational((10, 1), (15, 1), (0, 1))), (6, 5, 1, struct.pack("<II", 5, 2))])
    d, _ = record_of(jpeg(b"Exif\0\0" + tiff))
    assert d["exif_gpsposisjon"] == "srid=4326;POINT Z( -10.25 -59.5 2.5 )"


GNSS_XML = """<?xml version="1.0" encoding="utf-8"?>
<AdditionalInfoNorway2>
  <RoadInfo><ReflinkId>1</ReflinkId><ReflinkPosition>0.5</ReflinkPosition><RoadIdent>EV6 S1D1 m1</RoadIdent></RoadInfo>
  <GnssInfo><Latitude>{lat}</Latitude><Longitude>{lon}</Longitude><Altitude>{alt}</Altitude>
    <Heading>{alt}</Heading><GeoidalSeparation>40</GeoidalSeparation><Speed>{alt}</Speed></GnssInfo>
</AdditionalInfoNorway2>"""


@pytest.mark.parametrize("lat,lon,alt,fragment", [
    ("NaN", "10.3", "60.5", "not finite"),
    ("63.4", "inf", "60.5", "not finite"),
    ("63.4", "10.3", "nan", "not finite"),
    ("91.0", "10.3", "60.5", "outside"),
    ("63.4", "-180.5", "60.5", "outside"),
    ("63.4", "ti", "60.5", "not numeric"),
])
def test_xml_positions_are_checked_too(lat, lon, alt, fragment):
    e = Image.Exif()
    e[40056] = GNSS_XML.format(lat=lat, lon=lon, alt=alt).encode("utf-8")
    d, warnings = record_of(jpeg(e))
    assert d["exif_gpsposisjon"] is None
    assert any("GnssInfo" in w and fragment in w for w in warnings), warnings
    if alt == "nan":
        assert d["exif_altitude"] is None and d["exif_heading"] is None and d["exif_speed_ms"] is None
        assert d["exif_moh"] is None
    assert_no_nan(d)


def test_xml_position_with_decimal_commas_is_kept_as_written():
    e = Image.Exif()
    e[40056] = GNSS_XML.format(lat="63,4305", lon="10,3951", alt="60,5").encode("utf-8")
    d, _ = record_of(jpeg(e))
    assert d["exif_gpsposisjon"] == "srid=4326;POINT Z( 10,3951 63,4305 60,5 )"     # as the reference wrote it


OLD_PROPS = """<?xml version="1.0"?>
<ImageProperties Date="2019-05-02T10:11:12">
  <ImageName>C:\\DATA\\EV00006\\S1\\D1\\EV00006_S1D1_m00100_f1.jpg</ImageName>
  <GeoTag><dLatitude>{lat}</dLatitude><dLongitude>10.5</dLongitude><dAltitude>{alt}</dAltitude></GeoTag>
  <Heading>{alt}</Heading><Speed>1</Speed>
</ImageProperties>"""


@pytest.mark.parametrize("lat,alt", [("nan", "100"), ("63.0", "inf"), ("-91", "100")])
def test_old_variant_geotag_is_checked(lat, alt):
    e = Image.Exif()
    e[40055] = OLD_PROPS.format(lat=lat, alt=alt).encode("utf-8")
    d, warnings = record_of(jpeg(e), old_format=True)
    assert d["exif_gpsposisjon"] is None and any("GeoTag" in w for w in warnings), warnings
    assert_no_nan(d)


def test_gps_json_end_to_end_has_null_not_nan(tmp_path):
    """`sladd json` on an image whose latitude minutes are 1/0: JSON written, position null."""
    inp = tmp_path / "in" / "tilSladding" / "2021"
    inp.mkdir(parents=True)
    (inp / "EV00006_S1D1_m00123_f1.jpg").write_bytes(jpeg(gps_exif(lat=(_rat(59), R(1, 0), _rat(0)))))
    (inp / "ok_f1.jpg").write_bytes(jpeg(gps_exif()))
    cfg = tmp_path / "c.yml"
    cfg.write_text("fylkesnummer: 50\n")
    assert main(["json", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-k", str(cfg)]) == 0
    bad = (tmp_path / "out" / "tilSladding" / "2021" / "EV00006_S1D1_m00123_f1.json").read_text(encoding="utf-8")
    assert json.loads(bad)["exif_gpsposisjon"] is None and "nan" not in bad.lower()
    ok = json.loads((tmp_path / "out" / "tilSladding" / "2021" / "ok_f1.json").read_text(encoding="utf-8"))
    assert ok["exif_gpsposisjon"].startswith("srid=4326;POINT Z( 10.89")


# --- XPTitle ----------------------------------------------------------------------------------
@pytest.mark.parametrize("raw,expect", [
    (b"\xff\xfe" + "Tittel".encode("utf-16-le") + b"\x41", "Tittel\ufffd"),          # BOM, odd length
    (b"\xff\xfe" + "A".encode("utf-16-le") + b"\x00\xd8" + "B".encode("utf-16-le"), "A\ufffdB"),   # lone surrogate
    ("Tittel".encode("utf-16-le") + b"\x00\xdc", "Tittel\ufffd"),                    # no BOM, lone low surrogate
])
def test_undecodable_xptitle_is_a_warning(raw, expect):
    e = Image.Exif()
    e[0x9C9B] = raw
    d, warnings = record_of(jpeg(e))
    assert d["exif_xptitle"] == expect
    assert any("XPTitle" in w and "U+FFFD" in w for w in warnings), warnings
    dumps(d).encode("utf-8")


def test_valid_xptitle_has_no_warning():
    e = Image.Exif()
    e[0x9C9B] = b"\xff\xfe" + "Bilde fra ViaPhoto Recorder\x00".encode("utf-16-le")
    d, warnings = record_of(jpeg(e))
    assert d["exif_xptitle"] == "Bilde fra ViaPhoto Recorder\x00" and not [w for w in warnings if "XPTitle" in w]


def test_run_writes_image_and_json_despite_a_broken_xptitle(tmp_path):
    """Before the fix the JPEG was written, then the metadata raised and the image failed."""
    inp = tmp_path / "in" / "tilSladding" / "2022"
    path = jpeg_with_exif(road_scene(96, 128, seed=2), inp / "EV00006_S1D1_m00100_f1.jpg")
    with Image.open(path) as im:
        exif = im.getexif()
        pixels = im.copy()
    exif[0x9C9B] = b"\xff\xfe" + "Tittel".encode("utf-16-le") + b"\x00\xd8"
    pixels.save(path, "JPEG", quality=92, exif=exif.tobytes())
    cfg = tmp_path / "c.yml"
    cfg.write_text('fylkesnummer: 50\ndata_eier: "SVV"\n')
    out = tmp_path / "out"
    assert main(["run", "-i", str(tmp_path / "in"), "-o", str(out), "-k", str(cfg), "-q"]) == 0
    rel = "tilSladding/2022/EV00006_S1D1_m00100_f1"
    assert (out / f"{rel}.jpg").is_file()
    assert json.loads((out / f"{rel}.json").read_text(encoding="utf-8"))["exif_xptitle"] == "Tittel\ufffd"


# --- file names that are not UTF-8 -------------------------------------------------------------
def test_non_utf8_file_name_gives_an_encodable_record(tmp_path):
    name = os.fsdecode(b"EV00006_S1D1_m00100_f1_\xe6\xf8.jpg")        # Latin-1 "æø": surrogate escapes
    assert "\udce6" in name
    folder = os.fsdecode(b"mappe_\xe5")
    image_path = f"/data/tilSladding/2022/{folder}/{name}"
    d, warnings = record_of(jpeg(gps_exif()), path=image_path)
    assert d["exif_filnavn"] == "EV00006_S1D1_m00100_f1_\\xe6\\xf8.jpg"
    assert d["mappenavn"] == "Vegbilder/2022/mappe_\\xe5"
    assert "\\xe6\\xf8" in d["bildeid"]
    out = tmp_path / "x.json"
    write_json_files(dumps(d), [out])                                 # UTF-8 file, no UnicodeEncodeError
    assert json.loads(out.read_text(encoding="utf-8"))["exif_filnavn"] == d["exif_filnavn"]
    for w in warnings:
        w.encode("utf-8")


def test_non_utf8_file_name_old_variant(tmp_path):
    name = os.fsdecode(b"EV00006_S1D1_m00100_f1_\xff.jpg")
    d, _ = record_of(jpeg(None), path=f"/x/{name}", old_format=True)
    assert d["exif_filnavn"] == "EV00006_S1D1_m00100_f1_\\xff.jpg"
    dumps(d).encode("utf-8")
