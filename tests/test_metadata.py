"""Metadata JSON against the worked examples of docs/samples.md (C4-C8) and the reference rules."""
import io
import json
import os
import time
from fractions import Fraction

import pytest
from PIL import Image, TiffImagePlugin

from engine.jpeg import parse_jpeg
from engine.meta import KEYS, MetaContext, build_record, read_exif
from engine.meta.paths import path_element, split_path

BOM = "\ufeff"
C4_XML = BOM + """<?xml version="1.0" encoding="utf-8"?>
<AdditionalInfoNorway2 xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <ActivFileVersion>1</ActivFileVersion>
  <RoadInfo>
    <ReflinkId>1234567</ReflinkId>
    <ReflinkPosition>0.5</ReflinkPosition>
    <RoadIdent>EV6 S1D1 m1234</RoadIdent>
  </RoadInfo>
  <GnssInfo>
    <Latitude>{lat}</Latitude><Longitude>10.3951</Longitude><Altitude>60.5</Altitude>
    <Roll>0.1</Roll><Pitch>0.2</Pitch><Heading>90.5</Heading><Speed>{speed}</Speed>
    <GeoidalSeparation>40.25</GeoidalSeparation>
    <NorthRmsError>0.02</NorthRmsError><EastRmsError>0.03</EastRmsError><DownRmsError>0.04</DownRmsError>
    <RollRmsError>0.01</RollRmsError><PitchRmsError>0.01</PitchRmsError><HeadingRmsError>0.05</HeadingRmsError>
  </GnssInfo>
  <ImageInfo>
    <StorageFile>E:\\Vegbilder\\2022\\EV00006\\S1\\D1\\F1_2022_06_01\\EV00006_S1D1_m01234_f1.jpg</StorageFile>
    <roadtype>Vanlig</roadtype>
    <meter>1234.567</meter>
    <fylke>50</fylke>
  </ImageInfo>
</AdditionalInfoNorway2>"""


def _jpeg(exif: Image.Exif | None, size=(64, 32)) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, (90, 90, 90))
    img.save(buf, "JPEG", **({"exif": exif.tobytes()} if exif is not None else {}))
    return buf.getvalue()


def _exif_of(data: bytes):
    return read_exif(parse_jpeg(data).exif)


def _ctx(**kw):
    base = dict(versjon="P0.2_K20220131")
    base.update(kw)
    return MetaContext(**base)


def c4_exif(lat="63.4305", speed="12.3456"):
    e = Image.Exif()
    e[40056] = C4_XML.format(lat=lat, speed=speed).encode("utf-8")
    e.get_ifd(0x8769)[0x9003] = "2022:06:01 12:00:00"
    return e


C4_PATH = r"D:\TilSladding\2022\360\EV00006\S1\D1\F1_2022_06_01\EV00006_S1D1_m01234_f1.jpg"


def test_c4_360_additional_info_norway2():
    ctx = _ctx(image_type="360", exif_top_dir="TilSladding", versjon="P0.1_K20220131")
    d, warnings = build_record(_exif_of(_jpeg(c4_exif())), 8000, 4000, C4_PATH, ctx)
    assert list(d) == list(KEYS) and len(d) == 52
    expect = {
        "exif_imagetype": "360", "exif_imagewidth": "8000", "exif_imageheight": "4000",
        "exif_gpsposisjon": "srid=4326;POINT Z( 10.3951 63.4305 60.5 )", "exif_altitude": "60.5",
        "exif_moh": "20.25", "exif_speed_ms": "12.35", "exif_heading": "90.5", "exif_roadtype": "Vanlig",
        "exif_meter": "1234.57", "exif_fylke": "50", "exif_vegkat": "E", "exif_vegstat": "V", "exif_vegnr": "6",
        "exif_feltkode": "1", "exif_strekning": "1", "exif_delstrekning": "1", "exif_strekningreferanse": "S1/D1",
        "exif_filnavn": "EV00006_S1D1_m01234_f1.jpg",
        "exif_mappenavn": "E:/Vegbilder/2022/EV00006/S1/D1/F1_2022_06_01", "exif_roadident": "EV6 S1D1 m1234",
        "exif_reflinkid": "1234567", "exif_reflinkposisjon": "0.5", "exif_imageproperties": None,
        "exif_basislinje": None, "exif_kvalitet": "2", "exif_roll": "0.1", "exif_pitch": "0.2",
        "exif_geoidalseparation": "40.25", "exif_northrmserror": "0.02", "exif_headingrmserror": "0.05",
        "exif_tid": "2022-06-01T12:00:00", "exif_dato": "2022-06-01",
        "bildeid": "2022-06-01T12.00.00_EV00006_S1D1_m01234_360_1",
        "mappenavn": "Vegbilder/2022/360/EV00006/S1/D1/F1_2022_06_01", "versjon": "P0.1_K20220131",
        "exif_xptitle": "", "senterlinjeposisjon": None, "exif_preview_filnavn": None,
    }
    for k, v in expect.items():
        assert d[k] == v, k
    # Fix 2: stored without the BOM, otherwise the vendor's text exactly.
    assert d["exif_reflinkinfo"] == C4_XML.format(lat="63.4305", speed="12.3456")[1:]
    assert warnings == []


def test_c4_variant_empty_latitude_gives_quality_1_and_null_position():
    d, _ = build_record(_exif_of(_jpeg(c4_exif(lat=""))), 8000, 4000, C4_PATH,
                        _ctx(image_type="360", exif_top_dir="TilSladding"))
    assert d["exif_kvalitet"] == "1" and d["exif_gpsposisjon"] is None


def test_nan_speed_is_null_not_a_crash():
    d, _ = build_record(_exif_of(_jpeg(c4_exif(speed="NaN"))), 8000, 4000, C4_PATH, _ctx(image_type="360"))
    assert d["exif_speed_ms"] is None and d["exif_moh"] == "20.25"


def _rat(x):
    f = Fraction(x)
    return TiffImagePlugin.IFDRational(f.numerator, f.denominator)


def c5_exif(alt_ref=None):
    e = Image.Exif()
    e[0x0110] = "TestCam"
    e.get_ifd(0x8769)[0x9003] = "2021:08:15 13:45:10"
    gps = e.get_ifd(0x8825)
    gps.update({1: "N", 2: (_rat(59), _rat(57), TiffImagePlugin.IFDRational(462017, 10000)), 3: "E",
                4: (_rat(10), _rat(53), TiffImagePlugin.IFDRational(595499, 10000)),
                6: TiffImagePlugin.IFDRational(23712, 100), 12: "K", 13: TiffImagePlugin.IFDRational(3499, 100),
                17: TiffImagePlugin.IFDRational(21190, 100)})
    if alt_ref is not None:
        gps[5] = alt_ref
    return e


C5_PATH = r"D:\tilSladding\2021\Planar\EV00006\S1\D1\F1_2021_08_15\EV00006_S1D1_m00123_f1.jpg"


def test_c5_gpsinfo_only():
    d, _ = build_record(_exif_of(_jpeg(c5_exif())), 64, 32, C5_PATH, _ctx(fylkesnummer=50))
    expect = {
        "exif_kvalitet": "1", "exif_camera": "TestCam", "exif_tid": "2021-08-15T13:45:10", "exif_dato": "2021-08-15",
        "exif_gpsposisjon": "srid=4326;POINT Z( 10.899874972222221 59.96283380555556 237.12 )",
        "exif_altitude": "237.12", "exif_speed_ms": "34.99", "exif_heading": 211.9, "exif_moh": None,
        "exif_vegkat": "E", "exif_vegstat": "V", "exif_vegnr": "6", "exif_meter": "123", "exif_feltkode": "1",
        "exif_strekning": "1", "exif_delstrekning": "1", "exif_strekningreferanse": None,
        "exif_filnavn": "EV00006_S1D1_m00123_f1.jpg", "exif_mappenavn": None, "exif_roadident": "EV6 S1D1 m123",
        "exif_fylke": "50", "bildeid": "2021-08-15T13.45.10_EV00006_S1D1_m00123_Planar_1",
        "mappenavn": "Vegbilder/2021/Planar/EV00006/S1/D1/F1_2021_08_15",
    }
    for k, v in expect.items():
        assert d[k] == v, k


def test_gps_altitude_ref_1_is_below_sea_level():
    d, _ = build_record(_exif_of(_jpeg(c5_exif(alt_ref=1))), 64, 32, C5_PATH, _ctx())
    assert d["exif_altitude"] == "-237.12" and d["exif_gpsposisjon"].endswith(" -237.12 )")


def test_c6_no_exif(tmp_path):
    p = tmp_path / "data" / "fake" / "test_2.jpg"
    p.parent.mkdir(parents=True)
    p.write_bytes(_jpeg(None))
    t = time.mktime((2022, 10, 27, 10, 0, 0, 0, 0, -1))
    os.utime(p, (t, t))
    rel = "tests/data/fake/test_2.jpg"                 # as the reference's test names it
    d, warnings = build_record(_exif_of(p.read_bytes()), 64, 32, rel, _ctx(), file_path=p)
    assert d["exif_kvalitet"] == "0" and d["exif_filnavn"] == "test_2.jpg"
    assert d["exif_tid"].startswith("2022-10-27T10:00:00") and d["exif_dato"] == "2022-10-27"
    assert d["exif_roadident"] is None and d["exif_xptitle"] is None and d["exif_dataeier"] is None
    assert d["exif_fylke"] is None                                  # not the string "None"
    assert d["bildeid"] == "2022-10-27T10.00.00_test_2_Planar_None"
    d, _ = build_record(_exif_of(p.read_bytes()), 64, 32, rel, _ctx(fylkesnummer=46), file_path=p)
    assert d["exif_fylke"] == "46"


@pytest.mark.parametrize("name,exp", [
    ("EV00006_S1D1_m00123_KD1_f2.jpg", dict(strekning="1", delstrekning="1", ankerpunkt="00123", kryssdel="1",
                                             sideanleggsdel=None, feltkode="2", meter=None)),
    ("EV00006_S1D1_m00123_SD2_f1.jpg", dict(ankerpunkt="00123", kryssdel=None, sideanleggsdel="2", feltkode="1")),
    ("EV00006_S1D1_m00123_AD3_f5K.jpg", dict(ankerpunkt="00123", sideanleggsdel="3", feltkode="5K")),
    ("FV00013_S1D1_m00014_f1.jpg", dict(strekning=None, ankerpunkt=None, feltkode="1", meter="14")),
    ("RV00004_S1D1_m10918_f4K.jpg", dict(feltkode="4K", meter="10918")),
    ("Fy50_Rv003_hp01_f1_m01237.jpg", dict(feltkode="1", meter=None)),       # fix 8 ("1_m01237" before)
])
def test_c7_file_name_parsing(name, exp):
    d = {}
    path_element(d, name)
    for k, v in exp.items():
        assert d.get(f"exif_{k}") == v, k


def test_c7_roadident_and_bildeid_for_kryss():
    e = Image.Exif()
    e.get_ifd(0x8769)[0x9003] = "2021:08:15 13:45:10"
    path = "/data/tilSladding/2021/EV00006_S1D1_m00123_KD1_f2.jpg"
    d, _ = build_record(_exif_of(_jpeg(e)), 64, 32, path, _ctx())
    assert d["exif_meter"] is None
    d2 = dict(d, exif_meter="123", exif_roadident=None)
    from engine.meta.record import _roadident, bildeid
    assert _roadident(d2) == "EV6 S1D1 M00123 KD1 m123"
    assert bildeid(d, "Planar").split("_", 1)[1] == "EV00006_S1D1_m00123_KD1_Planar_2"


def test_image_properties_route_redacts_and_splits_windows_paths():
    xml = BOM + ("<?xml version=\"1.0\" encoding=\"utf-8\"?><ImageProperties Date=\"2020-06-02T09:42:46.39\">"
                 "<ImageName>C:\\DATA\\ViaPPS\\2020_06_02\\FV00013\\S1\\D1\\F1_2020_06_02\\FV00013_S1D1_m00014_f1.jpg"
                 "</ImageName><BaseLinePosition>1306</BaseLinePosition><BaseLineTickInterval>227</BaseLineTickInterval>"
                 "<BaseLineTickOffset>0</BaseLineTickOffset><TiltPoint>1341</TiltPoint><Tilt>0</Tilt>"
                 "<VegComValues><VCCountyNo>46</VCCountyNo><VCArea>DRAGSVIK FK X55</VCArea><VCMeter>14.3391</VCMeter>"
                 "</VegComValues><Surroundings><Driver>Ola Nordmann</Driver><CarID>AB12345</CarID>"
                 "<Comment>privat</Comment></Surroundings></ImageProperties>")
    e = Image.Exif()
    e[40055] = xml.encode("utf-8")
    e.get_ifd(0x8769)[0x9003] = "2020:06:02 09:42:46"
    # Without a ReflinkInfo tag the reference then parses the input path too, and the input's
    # own name becomes exif_filnavn: give it the camera's name, as in real trees.
    d, _ = build_record(_exif_of(_jpeg(e)), 2448, 2048, "/x/tilSladding/FV00013_S1D1_m00014_f1.jpg", _ctx())
    assert d["exif_basislinje"] == "1306;227;0;1341;0"
    assert d["exif_filnavn"] == "FV00013_S1D1_m00014_f1.jpg"
    assert d["exif_mappenavn"] == "C:/DATA/ViaPPS/2020_06_02/FV00013/S1/D1/F1_2020_06_02"
    assert (d["exif_vegkat"], d["exif_vegstat"], d["exif_vegnr"]) == ("F", "V", "13")
    assert d["exif_fylke"] == "46" and d["exif_meter"] == "14.34" and d["exif_feltkode"] == "1"
    assert d["exif_strekningsnavn"] == "DRAGSVIK FK X55"                 # fix 10
    assert "Ola Nordmann" not in d["exif_imageproperties"] and "<Driver>FJERNET</Driver>" in d["exif_imageproperties"]
    assert d["exif_kvalitet"] == "1"                                     # no ReflinkInfo tag
    assert d["exif_strekning"] == "1" and d["exif_roadident"] == "FV13 S1D1 m14.34"


def test_reflinkinfo_march_2020_root():
    e = Image.Exif()
    e[40056] = (BOM + "<ReflinkInfo><ReflinkId>384067</ReflinkId><ReflinkPosition>0.027226146823267947"
                "</ReflinkPosition></ReflinkInfo>").encode("utf-8")
    d, _ = build_record(_exif_of(_jpeg(e)), 64, 32, "/a/b.jpg", _ctx())
    assert d["exif_reflinkid"] == "384067" and d["exif_reflinkposisjon"] == "0.027226146823267947"
    assert d["exif_kvalitet"] == "2" and d["exif_gpsposisjon"] is None


def test_malformed_xml_is_a_warning_not_a_crash():
    e = Image.Exif()
    e[40056] = (BOM + "<AdditionalInfoNorway2><RoadInfo>").encode("utf-8")
    d, warnings = build_record(_exif_of(_jpeg(e)), 64, 32, "/a/b.jpg", _ctx())
    assert any("ReflinkInfo" in w and "malformed" in w for w in warnings)
    assert d["exif_kvalitet"] == "2" and d["exif_reflinkid"] is None


def test_aeoeaa_in_path_and_xml_and_json_is_utf8():
    e = c4_exif()
    xml = C4_XML.format(lat="63.4305", speed="1").replace("Vanlig", "Gang- og sykkelveg på Ørland")
    e[40056] = xml.encode("utf-8")
    path = "/data/TilSladding/2022/Sør-Trøndelag/æøå/EV00006_S1D1_m01234_f1.jpg"
    d, _ = build_record(_exif_of(_jpeg(e)), 64, 32, path, _ctx(image_type="360", exif_top_dir="TilSladding"))
    assert d["exif_roadtype"] == "Gang- og sykkelveg på Ørland"
    assert d["mappenavn"] == "Vegbilder/2022/Sør-Trøndelag/æøå"
    from engine.meta import dumps
    text = dumps(d)
    assert "Ørland" in text and json.loads(text) == d


@pytest.mark.parametrize("elem,fylke", [("06", "6"), ("13", None), ("46", "46"), ("56", "56"), ("21", None),
                                        ("06_Ev134", None), ("2022", None)])
def test_county_numbers_old_and_new(elem, fylke):
    d = {}
    path_element(d, elem)
    assert d.get("exif_fylke") == fylke


def test_split_path_both_separators():
    assert split_path(r"C:\a\b/c.jpg") == ["C:", "a", "b", "c.jpg"]
    assert split_path("/a/b/c.jpg") == ["a", "b", "c.jpg"]


# --- the older variant (§1.9) -------------------------------------------------------------------
OLD_PROPS = BOM + ("<?xml version=\"1.0\" encoding=\"utf-8\"?>"
                   "<ImageProperties Date=\"2020-06-02T09:42:46.3948628\">"
                   "<ImageName>C:\\DATA\\2020_06_02\\FV00013\\S1\\D1\\F1_2020_06_02\\FV00013_S1D1_m00014_f1.jpg</ImageName>"
                   "<Speed>{speed}</Speed><Heading>302.295333221872</Heading>"
                   "<GeoTag><dLatitude>61.214710343813685</dLatitude><dLongitude>6.5663939242382572</dLongitude>"
                   "<dAltitude>48.856250803013438</dAltitude></GeoTag>"
                   "<VegComValues><VCCounty>Vestland</VCCounty><VCArea>DRAGSVIK FK X55</VCArea>"
                   "<VCCountyNo>46</VCCountyNo><VCRoad>FV013</VCRoad><VCHP>S1D1</VCHP><VCLaneName>1</VCLaneName>"
                   "<VCMeter>14.34</VCMeter></VegComValues></ImageProperties>")


def _old_ctx(**kw):
    return _ctx(old_format=True, **kw)


def test_old_variant_image_properties_first():
    e = Image.Exif()
    e[40055] = OLD_PROPS.format(speed="12.3456").encode("utf-8")
    e.get_ifd(0x8769)[0x9003] = "2020:06:02 09:42:00"           # ignored: @Date came first
    d, _ = build_record(_exif_of(_jpeg(e)), 2448, 2048, "/x/tilSladding/2020/FV00013_S1D1_m00014_f1.jpg",
                        _old_ctx())
    assert list(d) == list(KEYS)
    expect = {"exif_kvalitet": "2", "exif_tid": "2020-06-02T09:42:46.3948628", "exif_dato": "2020-06-02",
              "exif_gpsposisjon": "srid=4326;POINT Z( 6.5663939242382572 61.214710343813685 48.856250803013438 )",
              "exif_altitude": "48.856250803013438", "exif_speed_ms": "12.35", "exif_heading": "302.295333221872",
              "exif_vegkat": "F", "exif_vegstat": "V", "exif_vegnr": "13", "exif_strekning": "1",
              "exif_delstrekning": "1", "exif_feltkode": "1", "exif_strekningsnavn": "DRAGSVIK FK X55",
              "exif_fylke": "46", "exif_meter": "14.34", "exif_strekningreferanse": "S1/D1",
              "exif_mappenavn": "C:/DATA/2020_06_02/FV00013/S1/D1/F1_2020_06_02",
              "exif_filnavn": "FV00013_S1D1_m00014_f1.jpg", "exif_roadident": "FV13 14 1",
              "bildeid": "2020-06-02T09.42.46_FV00013_S1D1_m00014_Planar_1", "mappenavn": "Vegbilder/2020"}
    for k, v in expect.items():
        assert d[k] == v, k


def test_old_variant_nan_speed_and_no_geotag():
    props = OLD_PROPS.format(speed="NaN").replace("<GeoTag>", "<X>").replace("</GeoTag>", "</X>")
    e = Image.Exif()
    e[40055] = props.encode("utf-8")
    d, _ = build_record(_exif_of(_jpeg(e)), 64, 32, "/a/b.jpg", _old_ctx())
    assert d["exif_speed_ms"] is None and d["exif_kvalitet"] == "1" and d["exif_gpsposisjon"] is None


def test_old_variant_file_name_only():
    e = Image.Exif()
    e.get_ifd(0x8769)[0x9003] = "2018:06:21 10:00:00"
    path = "/data/tilSladding/06/2018/06_Ev134/Hp05_Damaasen/F1_2018_06_21/Fy06_Ev134_hp05_f1_m04478.jpg"
    d, _ = build_record(_exif_of(_jpeg(e)), 64, 32, path, _old_ctx())
    assert d["exif_kvalitet"] == "1" and d["exif_hp"] == "5" and d["exif_meter"] == "4478"
    assert (d["exif_vegkat"], d["exif_vegstat"], d["exif_vegnr"]) == ("E", "V", "134")
    assert d["exif_fylke"] == "6" and d["exif_feltkode"] == "1"
    assert d["exif_roadident"] == "EV134 HP5 m4478"


def test_xptitle_utf16_kept_as_the_reference_read_it():
    e = Image.Exif()
    e[0x9C9B] = "Bilde fra ViaPhoto Recorder\x00".encode("utf-16-le")
    d, _ = build_record(_exif_of(_jpeg(e)), 64, 32, "/a/b.jpg", _ctx())
    assert d["exif_xptitle"] == "Bilde fra ViaPhoto Recorder\x00"
