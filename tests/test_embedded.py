"""Pictures hidden in a camera file (EXIF/Photoshop/XMP thumbnails, MPO frames, trailers) never
reach the output: every JPEG stream in the output bytes is decoded and searched for faces."""
import base64
import io
import re
import struct

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.embedded import main_image_end, sanitize_file, sanitize_segments
from engine.jpeg import parse_jpeg
from engine.models import create_adapter, load_card, resolve_model
from engine.runtimes import create_runtime
from engine.types import ImageError
from tests.conftest import jpeg_bytes, scene_with_faces

VENDOR_XML = "\ufeff<?xml version=\"1.0\"?><ReflinkInfo><ReflinkId>42</ReflinkId></ReflinkInfo>".encode("utf-8")
PROPS_XML = ("\ufeff<?xml version=\"1.0\"?><ImageProperties><ImageName>C:\\a\\b.jpg</ImageName>"
             "</ImageProperties>").encode()
IPTC = b"\x1c\x02\x00\x00\x02\x00\x04\x1c\x02\x78\x00\x0bRoad survey"      # record version + caption


@pytest.fixture(scope="module")
def faces():
    """CenterFace through ONNX Runtime: image -> number of faces found."""
    card = load_card("centerface")
    det = create_adapter(card, resolve_model(card), create_runtime("onnxruntime", device="cpu"))
    return lambda rgb: len(det(np.ascontiguousarray(rgb), 1.0).boxes)


# --- camera-style input builders -------------------------------------------------------------

def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _insert(jpeg: bytes, segments: list[bytes]) -> bytes:
    """`segments` right after SOI and APP0."""
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":
        pos = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:pos] + b"".join(segments) + jpeg[pos:]


def _thumb(pixels, size=(160, 120)) -> bytes:
    return jpeg_bytes(np.asarray(Image.fromarray(pixels).resize(size, Image.LANCZOS)), quality=90)


def exif_with_thumbnail(thumbnail: bytes, endian: str = "<") -> bytes:
    """EXIF APP1 payload: IFD0 (Model, vendor tags 40055/40056), Exif IFD, GPS IFD, and IFD1
    holding `thumbnail` as JPEGInterchangeFormat, as road and phone cameras write it."""
    e = Image.Exif()
    e.endian = endian
    e[0x0110] = "RoadCam"
    e[40055] = PROPS_XML
    e[40056] = VENDOR_XML
    e.get_ifd(0x8769)[0x9003] = "2022:06:01 12:00:00"
    gps = e.get_ifd(0x8825)
    gps[1], gps[2] = "N", (63.0, 25.0, 49.8)
    gps[3], gps[4] = "E", (10.0, 23.0, 42.4)
    tiff = bytearray(e.tobytes()[6:])
    (count,) = struct.unpack_from(endian + "H", tiff, 8)
    link = 8 + 2 + 12 * count
    tiff += bytes(len(tiff) % 2)
    ifd1 = len(tiff)
    struct.pack_into(endian + "I", tiff, link, ifd1)
    data = ifd1 + 2 + 3 * 12 + 4
    tiff += struct.pack(endian + "H", 3)
    tiff += struct.pack(endian + "HHIHH", 0x0103, 3, 1, 6, 0)               # Compression = JPEG
    tiff += struct.pack(endian + "HHII", 0x0201, 4, 1, data)
    tiff += struct.pack(endian + "HHII", 0x0202, 4, 1, len(thumbnail))
    tiff += struct.pack(endian + "I", 0) + thumbnail
    return b"Exif\x00\x00" + bytes(tiff)


def photoshop_app13(thumbnail: bytes) -> bytes:
    """APP13 payload: 8BIM IPTC (0x0404), a thumbnail resource (0x040C) and resolution info."""
    def res(rid, data):
        return (b"8BIM" + struct.pack(">H", rid) + b"\x00\x00" + struct.pack(">I", len(data)) + data
                + bytes(len(data) % 2))
    head = struct.pack(">IIIIIIHH", 1, 160, 120, 480, 160 * 120 * 3, len(thumbnail), 24, 1)
    return (b"Photoshop 3.0\x00" + res(0x0404, IPTC) + res(0x040C, head + thumbnail)
            + res(0x03ED, bytes(16)))


def xmp_with_thumbnail(thumbnail: bytes) -> bytes:
    b64 = base64.encodebytes(thumbnail).decode().replace("\n", "&#xA;")
    return ("http://ns.adobe.com/xap/1.0/\x00"
            '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
            'xmlns:xmpGImg="http://ns.adobe.com/xap/1.0/g/img/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:xmpNote="http://ns.adobe.com/xmp/note/" '
            'xmp:CreatorTool="RoadCam 2.1" xmpNote:HasExtendedXMP="0123456789ABCDEF0123456789ABCDEF">'
            '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">EV6 S1D1 m1234</rdf:li></rdf:Alt></dc:title>'
            '<xmp:Thumbnails><rdf:Alt><rdf:li rdf:parseType="Resource">'
            '<xmpGImg:width>160</xmpGImg:width><xmpGImg:height>120</xmpGImg:height>'
            f'<xmpGImg:format>JPEG</xmpGImg:format><xmpGImg:image>{b64}</xmpGImg:image>'
            '</rdf:li></rdf:Alt></xmp:Thumbnails></rdf:Description></rdf:RDF></x:xmpmeta>'
            + " " * 200 + '<?xpacket end="w"?>').encode("utf-8")


def extended_xmp(thumbnail: bytes) -> bytes:
    """One Extended XMP chunk carrying a full-size picture (as phones store GImage:Data)."""
    body = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description xmlns:GImage="http://ns.google.com/photos/1.0/image/" GImage:Mime="image/jpeg" '
            f'GImage:Data="{base64.b64encode(thumbnail).decode()}"/></rdf:RDF></x:xmpmeta>').encode()
    return (b"http://ns.adobe.com/xmp/extension/\x00" + b"0123456789ABCDEF0123456789ABCDEF"
            + struct.pack(">II", len(body), 0) + body)


def mpo(first: np.ndarray, second: np.ndarray, quality=92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(first).save(buf, "MPO", save_all=True, append_images=[Image.fromarray(second)], quality=quality)
    return buf.getvalue()


def camera_file(img: np.ndarray, endian: str = "<") -> bytes:
    """An MPO whose first frame carries every kind of embedded picture of `img`, followed by
    an appended JPEG of `img` after the last frame (as some vendor trailers do)."""
    thumb = _thumb(img)
    data = mpo(img, img)
    segs = [_segment(0xE1, exif_with_thumbnail(thumb, endian)), _segment(0xE1, xmp_with_thumbnail(thumb)),
            _segment(0xE1, extended_xmp(thumb)), _segment(0xED, photoshop_app13(thumb)),
            _segment(0xE2, b"FPXR\x00\x00\x01" + thumb), _segment(0xE5, b"VENDOR\x00" + thumb),
            _segment(0xFE, b"made by a test")]
    return _insert(data, segs) + jpeg_bytes(img, quality=80)


# --- an oracle over every stream in a file ----------------------------------------------------

def embedded_pictures(data: bytes) -> list[tuple[str, np.ndarray]]:
    """Every picture a reader could pull out of the file: each decodable JPEG stream found by
    its SOI (the main image first), and each base64 JPEG in the text (XMP)."""
    found = []
    for m in re.finditer(rb"\xff\xd8\xff", data):
        try:
            im = Image.open(io.BytesIO(data[m.start():]))
            im.load()
        except Exception:                                # noqa: BLE001 - not a picture
            continue
        found.append((f"JPEG at byte {m.start()}", np.asarray(im.convert("RGB"))))
    for m in re.finditer(rb"/9j/[A-Za-z0-9+/=\s]{100,}|/9j/(?:[A-Za-z0-9+/=]|&#xA;){100,}", data):
        raw = re.sub(rb"&#xA;|\s", b"", m.group())
        try:
            im = Image.open(io.BytesIO(base64.b64decode(raw + b"=" * (-len(raw) % 4))))
            im.load()
        except Exception:                                # noqa: BLE001
            continue
        found.append((f"base64 JPEG at byte {m.start()}", np.asarray(im.convert("RGB"))))
    return found


def _run(tmp_path, files: dict, *extra) -> dict:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir(exist_ok=True)
    for name, data in files.items():
        (inp / name).write_bytes(data)
    assert main(["run", "-i", str(inp), "-o", str(out), "-q", *extra]) == 0
    return {name: (out / name).read_bytes() for name in files}


@pytest.mark.parametrize("endian", ["<", ">"])
def test_no_face_survives_anywhere_in_the_output_file(tmp_path, portrait, faces, endian):
    img, _ = scene_with_faces(portrait, faces=((200, 60, 400),))
    src = camera_file(img, endian)
    before = embedded_pictures(src)
    # The oracle must be able to fail: the face is found in every hidden picture of the input
    # (EXIF, XMP, Extended XMP, Photoshop, FlashPix, APP5 thumbnails, MPO frame, appended JPEG).
    assert len(before) == 9
    assert all(faces(px) >= 1 for _, px in before), [(n, faces(px)) for n, px in before]
    out = _run(tmp_path, {"cam.jpg": src})["cam.jpg"]
    after = embedded_pictures(out)
    assert [n for n, _ in after] == ["JPEG at byte 0"], "only the main image may remain"
    assert faces(after[0][1]) == 0
    # One valid JPEG that ends at its EOI, no MPO index.
    assert main_image_end(out) == len(out) and b"MPF\x00" not in out
    im = Image.open(io.BytesIO(out))
    assert im.format == "JPEG" and getattr(im, "n_frames", 1) == 1
    # Everything else survives.
    exif = im.getexif()
    assert exif[0x0110] == "RoadCam" and exif[40055] == PROPS_XML and exif[40056] == VENDOR_XML
    assert exif.get_ifd(0x8825)[1] == "N" and float(exif.get_ifd(0x8825)[2][2]) == pytest.approx(49.8)
    assert exif.get_ifd(0x8769)[0x9003] == "2022:06:01 12:00:00"
    assert IPTC in out and b"made by a test" in out
    xmp = im.info["xmp"]
    assert b"RoadCam 2.1" in xmp and b"EV6 S1D1 m1234" in xmp and b"xmpGImg:" not in xmp and b"/9j/" not in xmp
    assert b"HasExtendedXMP" not in xmp                 # its Extended XMP is gone
    from lxml import etree
    etree.fromstring(xmp)                               # still well-formed


def test_nothing_to_mask_is_rebuilt_losslessly_without_hidden_pictures(tmp_path, portrait, faces):
    img, _ = scene_with_faces(portrait, faces=(), seed=4)
    face_img, _ = scene_with_faces(portrait, faces=((200, 60, 400),))
    thumb = _thumb(face_img)                             # a thumbnail that shows what the frame does not
    base = jpeg_bytes(img, quality=90, progressive=True)
    src = _insert(base, [_segment(0xE1, exif_with_thumbnail(thumb, ">"))]) + jpeg_bytes(face_img)
    plain = jpeg_bytes(img, quality=90)
    out = _run(tmp_path, {"hidden.jpg": src, "plain.jpg": plain})
    assert out["plain.jpg"] == plain                     # nothing hidden: still a byte copy
    got = out["hidden.jpg"]
    assert got != src and main_image_end(got) == len(got)
    assert [n for n, _ in embedded_pictures(got)] == ["JPEG at byte 0"]
    assert sum(faces(px) for _, px in embedded_pictures(src)) >= 2
    # Same entropy-coded data: the pixels decode identically.
    a = np.asarray(Image.open(io.BytesIO(src)).convert("RGB"))
    b = np.asarray(Image.open(io.BytesIO(got)).convert("RGB"))
    assert np.array_equal(a, b)
    assert got[got.index(b"\xff\xda"):] == base[base.index(b"\xff\xda"):]
    assert Image.open(io.BytesIO(got)).getexif()[40056] == VENDOR_XML


# --- function level ---------------------------------------------------------------------------

def _segments(data: bytes) -> list[bytes]:
    info = parse_jpeg(data)
    return [data[s:e] for _, s, e in info.header]


@pytest.mark.parametrize("endian", ["<", ">"])
def test_exif_thumbnail_is_unlinked_and_blanked_in_place(endian):
    thumb = _thumb(np.full((48, 64, 3), 200, np.uint8))
    seg = _segment(0xE1, exif_with_thumbnail(thumb, endian))
    (out,) = sanitize_segments([seg]).segments
    assert len(out) == len(seg) and thumb not in out and b"\xff\xd8\xff" not in out
    e = Image.Exif()
    e.load(out[4:])
    assert e[40055] == PROPS_XML and e.get_ifd(0x8825)[3] == "E"
    assert e.get_ifd(0x8769)[0x9003] == "2022:06:01 12:00:00"
    tiff = out[10:]
    (ifd0,) = struct.unpack_from(endian + "I", tiff, 4)
    (count,) = struct.unpack_from(endian + "H", tiff, ifd0)
    assert struct.unpack_from(endian + "I", tiff, ifd0 + 2 + 12 * count) == (0,)     # no IFD1
    # Bytes outside the thumbnail and IFD1 are untouched (offsets stay valid).
    first = next(i for i in range(len(seg)) if seg[i] != out[i])
    assert seg[:first - 4] == out[:first - 4]


def test_pictures_in_vendor_makernotes_are_blanked_in_place():
    thumb = _thumb(np.full((48, 64, 3), 200, np.uint8))
    e = Image.Exif()
    e[0x0110] = "RoadCam"
    e.get_ifd(0x8769)[0x927C] = b"Vendor\x00\x00" + thumb + b"tail"                # MakerNote preview
    e.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + base64.b64encode(thumb)     # UserComment
    seg = _segment(0xE1, e.tobytes())
    res = sanitize_segments([seg])
    (out,) = res.segments
    assert len(out) == len(seg) and len(res.notes) == 2
    assert b"\xff\xd8\xff" not in out and b"/9j/" not in out
    got = Image.Exif()
    got.load(out[4:])
    note = got.get_ifd(0x8769)[0x927C]
    assert got[0x0110] == "RoadCam" and note.startswith(b"Vendor") and note.endswith(b"tail")


def test_photoshop_thumbnails_go_iptc_stays():
    thumb = _thumb(np.full((48, 64, 3), 90, np.uint8))
    seg = _segment(0xED, photoshop_app13(thumb))
    res = sanitize_segments([seg])
    (out,) = res.segments
    assert IPTC in out and thumb not in out and b"\x03\xed" in out and "0x040C" in " ".join(res.notes)
    # A block split over two APP13 segments (above 64 KiB) is edited as one.
    payload = photoshop_app13(thumb)[14:]
    cut = len(payload) // 2
    two = [_segment(0xED, b"Photoshop 3.0\x00" + payload[:cut]), _segment(0xED, b"Photoshop 3.0\x00" + payload[cut:])]
    (joined,) = sanitize_segments(two).segments
    assert joined == out


def test_xmp_thumbnail_removed_rest_kept_and_unsuspicious_xmp_untouched():
    thumb = _thumb(np.full((48, 64, 3), 90, np.uint8))
    seg = _segment(0xE1, xmp_with_thumbnail(thumb))
    (out,) = sanitize_segments([seg]).segments
    assert b"/9j/" not in out and b"xmpGImg:image" not in out and b"RoadCam 2.1" in out
    assert b"HasExtendedXMP" in out                       # no Extended XMP dropped: the pointer stays
    plain = _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"/>")
    res = sanitize_segments([plain])
    assert res.segments == [plain] and not res.changed
    broken = _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<a>http://ns.adobe.com/xap/1.0/g/img/</b>")
    assert sanitize_segments([broken]).segments == []    # may hide a thumbnail, cannot be edited: dropped


def test_icc_adobe_and_tables_are_kept_unknown_segments_with_pictures_dropped():
    from PIL import ImageCms
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    thumb = _thumb(np.full((48, 64, 3), 90, np.uint8))
    keep = [_segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + icc), _segment(0xEE, b"Adobe\x00d\x00\x00\x00\x00\x01"),
            _segment(0xE4, b"vendor data without pictures"), _segment(0xFE, b"a comment")]
    drop = [_segment(0xE2, b"MPF\x00II*\x00"), _segment(0xE9, b"X" + thumb), _segment(0xFE, thumb),
            _segment(0xE0, b"JFXX\x00\x10" + thumb), _segment(0xFE, b"thumb=" + base64.b64encode(thumb))]
    res = sanitize_segments(keep[:2] + drop + keep[2:])
    assert res.segments == keep and len(res.notes) == len(drop)
    jfif = _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x02\x02" + bytes(12))
    assert sanitize_segments([jfif]).segments == [_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")]


@pytest.mark.parametrize("progressive", [False, True])
def test_main_image_end_finds_the_first_eoi(progressive):
    rng = np.random.default_rng(0)
    main_ = jpeg_bytes(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), quality=95, progressive=progressive)
    tail = jpeg_bytes(np.zeros((16, 16, 3), np.uint8))
    assert main_image_end(main_) == len(main_)
    assert main_image_end(main_ + tail + b"SEFT trailer") == len(main_)
    # A thumbnail whose bytes hold FF D9 inside an APP1 segment does not end the frame early.
    withexif = _insert(main_, [_segment(0xE1, exif_with_thumbnail(tail))])
    assert main_image_end(withexif + tail) == len(withexif)
    with pytest.raises(ImageError, match="end-of-image"):
        main_image_end(main_[:-2])


def test_sanitize_file_leaves_clean_files_alone():
    data = jpeg_bytes(np.zeros((32, 32, 3), np.uint8), exif=Image.Exif().tobytes())
    assert sanitize_file(data) == (None, [])


# --- an image is published whole or not at all --------------------------------------------------

def _ledger(out):
    import sqlite3

    from engine.driver import ledger_path
    with sqlite3.connect(ledger_path(out)) as db:
        return dict(db.execute("SELECT key, status FROM images"))


def test_a_failing_metadata_record_writes_nothing(tmp_path, portrait, monkeypatch):
    import engine.worker.write

    img, _ = scene_with_faces(portrait, faces=((200, 60, 300),))
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    (inp / "a.jpg").write_bytes(jpeg_bytes(img))

    def broken(*a, **k):
        raise UnicodeDecodeError("utf-16-le", b"\xff", 0, 1, "undecodable XPTitle")
    monkeypatch.setattr(engine.worker.write, "build_record", broken)
    assert main(["run", "-i", str(inp), "-o", str(out), "-q"]) == 1
    assert _ledger(out) == {"a.jpg": "failed"}
    assert not (out / "a.jpg").exists() and not list(out.glob("*.json"))


def test_a_failing_write_removes_what_the_image_already_wrote(tmp_path, portrait, monkeypatch):
    import engine.worker.sinks

    img, _ = scene_with_faces(portrait, faces=((200, 60, 300),))
    inp, out, arch = tmp_path / "in", tmp_path / "out", tmp_path / "arch"
    inp.mkdir()
    (inp / "a.jpg").write_bytes(jpeg_bytes(img))
    real = engine.worker.sinks.write_atomic
    written = []

    def fail_on_preview(path, data):
        if str(path).endswith("_preview.jpg"):
            raise OSError(5, "Input/output error")
        real(path, data)
        written.append(path)
    monkeypatch.setattr(engine.worker.sinks, "write_atomic", fail_on_preview)
    cfg = tmp_path / "c.yml"
    cfg.write_text("remote_preview: true\npreview_dim: [64, 64]\n")
    assert main(["run", "-i", str(inp), "-o", str(out), "-a", str(arch), "-k", str(cfg), "-q"]) == 1
    assert {p.name for p in written} == {"a.jpg", "a.json"}          # the JPEG and JSON went first
    assert _ledger(out) == {"a.jpg": "failed"}
    assert not (out / "a.jpg").exists() and not (out / "a.json").exists() and not (arch / "a.jpg").exists()


def test_previews_are_cut_from_the_anonymised_pixels(tmp_path, portrait, faces):
    img, _ = scene_with_faces(portrait, faces=((200, 60, 400),))
    assert faces(img) >= 1
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    (inp / "a.jpg").write_bytes(camera_file(img))
    cfg = tmp_path / "c.yml"
    cfg.write_text("remote_preview: true\npreview_dim: [640, 480]\n")
    assert main(["run", "-i", str(inp), "-o", str(out), "-k", str(cfg), "-q"]) == 0
    preview = (out / "a_preview.jpg").read_bytes()
    assert [n for n, _ in embedded_pictures(preview)] == ["JPEG at byte 0"]
    assert faces(np.asarray(Image.open(io.BytesIO(preview)).convert("RGB"))) == 0
