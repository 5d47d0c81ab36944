"""Pictures hidden in a camera file (EXIF/Photoshop/XMP thumbnails, MPO frames, trailers) never
reach the output: every JPEG stream in the output bytes is decoded and searched for faces."""
import base64
import io
import json
import re
import struct

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.embedded import NotCopyable, main_image_end, rebuild_file, sanitize_file, sanitize_segments
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


def test_only_allowlisted_segments_survive():
    from PIL import ImageCms
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    thumb = _thumb(np.full((48, 64, 3), 90, np.uint8))
    adobe = _segment(0xEE, b"Adobe\x00d\x00\x00\x00\x00\x01")
    keep = [_segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + icc), _segment(0xFE, b"a comment")]
    # Dropped whatever they hold: vendor APPn (even without a picture), MPF, FlashPix, JFXX, a
    # COM holding a picture (binary or base64), and JFIF/Adobe on the re-encode path.
    drop = [_segment(0xE4, b"vendor data without pictures"), _segment(0xE2, b"MPF\x00II*\x00"),
            _segment(0xE2, b"FPXR\x00\x00\x01"), _segment(0xE9, b"X" + thumb), _segment(0xFE, thumb),
            _segment(0xE0, b"JFXX\x00\x10" + thumb), _segment(0xFE, b"thumb=" + base64.b64encode(thumb)),
            _segment(0xEF, b"APP15"), _segment(0xED, b"Adobe_CM\x00"), adobe]
    res = sanitize_segments(keep[:1] + drop + keep[1:])
    assert res.segments == keep and len(res.notes) == len(drop)
    # Copy path (the lossless rebuild): JFIF without its thumbnail, Adobe APP14 in 12 bytes.
    jfif = _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x02\x02" + bytes(12))
    assert sanitize_segments([jfif, adobe], copy=True).segments == [
        _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"), adobe]
    long_adobe = _segment(0xEE, b"Adobe\x00d\x00\x00\x00\x00\x01" + thumb)
    assert sanitize_segments([long_adobe], copy=True).segments == [adobe]
    assert sanitize_segments([jfif, adobe]).segments == []      # re-encode: the encoder writes its own
    # Only the first EXIF and the first XMP packet are kept.
    xmp = _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"/>")
    exif = _segment(0xE1, Image.Exif().tobytes())
    assert sanitize_segments([exif, xmp, exif, xmp]).segments == [exif, xmp]


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


# --- red-team leaks -------------------------------------------------------------------------------
# Each input hides a picture of a face where a decoder or a curious reader finds it. The test
# first checks that the face IS found in the input's hidden picture, then runs sladd and checks
# that no picture but the anonymised main image can be pulled out of the output: not from its
# bytes, not from base64/hex text in them, not from the metadata JSON. Main images: one with
# nothing to mask (copied byte for byte or rebuilt losslessly) and one with a face (re-encoded).

XMP_HEAD = b"http://ns.adobe.com/xap/1.0/\x00"
_CHAR_REF = re.compile(rb"&#(?:[xX]([0-9a-fA-F]{1,6})|([0-9]{1,7}));")
_TEXT_SIGNATURES = ((rb"/9j/|iVBORw0KGgo|R0lGOD|UklGR", base64.b64decode),
                    (rb"_9j_", base64.urlsafe_b64decode),
                    (rb"(?i:ffd8ff|89504e47|47494638|52494646)", None))


def _decoded(blob: bytes):
    try:
        im = Image.open(io.BytesIO(blob))
        im.load()
        return np.asarray(im.convert("RGB"))
    except Exception:                                    # noqa: BLE001 - not a picture
        return None


def pictures_in(data: bytes) -> list[tuple[str, np.ndarray]]:
    """Every picture a reader could pull out of `data`: each binary JPEG (fill bytes after the
    SOI allowed), PNG, GIF, WebP, BMP or TIFF stream found by its signature, and each picture
    written as base64 (standard or URL-safe) or hex, read after resolving XML character
    references and removing whitespace and NUL bytes (UTF-16 text)."""
    found = []
    for m in re.finditer(rb"\xff\xd8\xff|\x89PNG|GIF8|RIFF|BM|II\*\x00|MM\x00\*", data):
        px = _decoded(data[m.start():])
        if px is not None:
            found.append((f"{m.group()!r} at byte {m.start()}", px))
    text = _CHAR_REF.sub(lambda m: bytes([min(255, int(m[1], 16) if m[1] else int(m[2]))]), data)
    text = re.sub(rb"[\s\x00]", b"", text)
    for signature, decode in _TEXT_SIGNATURES:
        for m in re.finditer(signature, text):
            if decode is None:
                run = re.match(rb"[0-9a-fA-F]+", text[m.start():]).group()
                blob = bytes.fromhex(run[:len(run) // 2 * 2].decode())
            else:
                run = re.match(rb"[A-Za-z0-9+/_=-]+", text[m.start():]).group()
                try:
                    blob = decode(run + b"=" * (-len(run) % 4))
                except ValueError:
                    continue
            px = _decoded(blob)
            if px is not None:
                found.append((f"text {m.group()!r} at {m.start()}", px))
    return found


@pytest.fixture(scope="module")
def face_jpeg(portrait):
    """The hidden picture: a face."""
    return jpeg_bytes(np.asarray(portrait.resize((256, 300), Image.LANCZOS)), quality=85)


@pytest.fixture(scope="module")
def mains(portrait):
    plain, _ = scene_with_faces(portrait, faces=(), seed=4)
    face, _ = scene_with_faces(portrait, faces=((200, 60, 400),), seed=4)
    return {"copy": jpeg_bytes(plain, quality=90), "reencode": jpeg_bytes(face, quality=90)}


def _both(mains, build) -> dict:
    return {f"{path}.jpg": build(main) for path, main in mains.items()}


def assert_no_leak(tmp_path, faces, files: dict, extract=None) -> dict:
    """`files`: name -> input bytes, each hiding a face. `extract(bytes)`: pictures a dedicated
    reader pulls out (for what pictures_in cannot know: split segments, raw pixels)."""
    def hidden(data):
        got = [(n, px) for n, px in pictures_in(data) if not n.endswith(" at byte 0")]
        return got + ([("extract", px) for px in extract(data)] if extract else [])

    for name, data in files.items():
        assert any(faces(px) >= 1 for _, px in hidden(data)), f"{name}: no face in the input's hidden picture"
    out = _run(tmp_path, files)
    for name, data in out.items():
        assert [n for n, _ in hidden(data)] == [], f"{name}: a picture is left in the output"
        assert faces(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))) == 0
        assert main_image_end(data) == len(data)
        record = json.loads((tmp_path / "out" / name.replace(".jpg", ".json")).read_text())
        for key, value in record.items():
            assert not isinstance(value, str) or not pictures_in(value.encode("utf-8")), f"{name}: JSON {key}"
    return out


def _xmp(inner: str, ns: str = "") -> str:
    return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" {ns}>{inner}'
            '</rdf:Description></rdf:RDF></x:xmpmeta>')


_GIMG = 'xmlns:xmpGImg="http://ns.adobe.com/xap/1.0/g/img/"'
_THUMBS = ('<xmp:Thumbnails><rdf:Alt><rdf:li rdf:parseType="Resource"><xmpGImg:format>JPEG</xmpGImg:format>'
           '<xmpGImg:image>{}</xmpGImg:image></rdf:li></rdf:Alt></xmp:Thumbnails><xmp:Label>kept</xmp:Label>')


def test_leak01_base64_in_an_xmp_comment(tmp_path, faces, mains, face_jpeg):
    b64 = base64.b64encode(face_jpeg).decode()
    seg = _segment(0xE1, XMP_HEAD + _xmp(f"<!-- {b64} --><xmp:Label>kept</xmp:Label>", _GIMG).encode())
    out = assert_no_leak(tmp_path, faces, _both(mains, lambda m: _insert(m, [seg])))
    for data in out.values():
        assert b"<xmp:Label>kept</xmp:Label>" in Image.open(io.BytesIO(data)).info["xmp"]


def test_leak02_xmp_character_references_data_uri_and_utf16(tmp_path, faces, mains, face_jpeg):
    b64 = base64.b64encode(face_jpeg).decode()
    packets = {
        # the namespace and the base64's '/' as character references: only a parser sees them
        "charref": _xmp(_THUMBS.format(b64.replace("/", "&#x2F;")),
                        'xmlns:xmpGImg="http://ns.adobe.com/xap/1.0/g/im&#x67;/"').encode(),
        # a custom property holding a data URI, a newline after /9j/
        "datauri": _xmp(f"<my:Photo>data:image/jpeg;base64,{b64[:4]}\n{b64[4:]}</my:Photo>",
                        'xmlns:my="http://example.com/my/"').encode(),
        # the whole packet in UTF-16
        "utf16": _xmp(_THUMBS.format(b64), _GIMG).encode("utf-16"),
    }
    files = {f"{kind}_{name}": data for kind, packet in packets.items()
             for name, data in _both(mains, lambda m: _insert(m, [_segment(0xE1, XMP_HEAD + packet)])).items()}
    out = assert_no_leak(tmp_path, faces, files)
    for name, data in out.items():
        xmp = Image.open(io.BytesIO(data)).info.get("xmp", b"")
        assert not name.startswith(("charref", "utf16")) or b"kept" in xmp      # the packet stays, cleaned


def test_leak03_binary_jpeg_after_the_xmp_packet(tmp_path, faces, mains, face_jpeg):
    seg = _segment(0xE1, XMP_HEAD + b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>' + face_jpeg)
    assert_no_leak(tmp_path, faces, _both(mains, lambda m: _insert(m, [seg])))


def test_leak04_jpeg_after_icc_adobe_and_jfif_headers(tmp_path, faces, mains, face_jpeg):
    from PIL import ImageCms
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()

    def jfif_tail(m):                                    # the JFIF APP0 with a JPEG after its 14 bytes
        n = 4 + struct.unpack(">H", m[4:6])[0]
        return m[:2] + _segment(0xE0, m[6:n] + face_jpeg) + m[n:]
    builders = {"icc": lambda m: _insert(m, [_segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + icc + face_jpeg)]),
                "adobe": lambda m: _insert(m, [_segment(0xEE, b"Adobe\x00d\x00\x00\x00\x00\x01" + face_jpeg)]),
                "jfif": jfif_tail}
    files = {f"{k}_{n}": d for k, b in builders.items() for n, d in _both(mains, b).items()}
    out = assert_no_leak(tmp_path, faces, files)
    for name, data in out.items():
        info = parse_jpeg(data)
        assert all(e - s == 18 for m, s, e in info.header if m == 0xE0)          # JFIF: its 14 bytes
        assert all(e - s == 16 for m, s, e in info.header if m == 0xEE)          # Adobe: its 12 bytes
    assert parse_jpeg(out["adobe_copy.jpg"]).adobe_transform == 1                # still describes the data


def test_leak05_jpeg_with_a_fill_byte_after_its_soi(tmp_path, faces, mains, face_jpeg):
    fill = b"\xff\xd8\xff" + face_jpeg[2:]                 # FF D8 FF FF E0 ...: libjpeg and Pillow read it
    e = Image.Exif()
    e[0x0110] = "RoadCam"
    e.get_ifd(0x8769)[0x927C] = b"Nikon\x00\x02\x10\x00\x00" + fill + b"tail"
    resource = b"8BIM\x0b\xb7\x00\x00" + struct.pack(">I", len(fill)) + fill + bytes(len(fill) % 2)
    segs = {"com": _segment(0xFE, fill), "app15": _segment(0xEF, b"VENDOR\x00" + fill),
            "makernote": _segment(0xE1, e.tobytes()),
            "app13": _segment(0xED, b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(IPTC))
                              + IPTC + bytes(len(IPTC) % 2) + resource)}
    files = {f"{k}_{n}": d for k, seg in segs.items() for n, d in _both(mains, lambda m: _insert(m, [seg])).items()}
    out = assert_no_leak(tmp_path, faces, files)
    for name in ("makernote_copy.jpg", "makernote_reencode.jpg"):
        exif = Image.open(io.BytesIO(out[name])).getexif()
        assert exif[0x0110] == "RoadCam" and exif.get_ifd(0x8769)[0x927C].endswith(b"tail")
    assert IPTC in out["app13_copy.jpg"] and IPTC in out["app13_reencode.jpg"]


def test_leak06_base64_hex_gif_webp_in_a_comment(tmp_path, faces, mains, face_jpeg, portrait):
    b64 = base64.b64encode(face_jpeg)
    gif, webp = io.BytesIO(), io.BytesIO()
    portrait.resize((160, 188)).save(gif, "GIF")
    portrait.resize((256, 300)).save(webp, "WEBP", quality=80)
    payloads = {"newline": b64[:4] + b"\n" + b64[4:], "urlsafe": base64.urlsafe_b64encode(face_jpeg),
                "hex": face_jpeg.hex().encode(), "gif": gif.getvalue(), "webp": webp.getvalue()}
    files = {f"{k}_{n}": d for k, p in payloads.items()
             for n, d in _both(mains, lambda m: _insert(m, [_segment(0xFE, p), _segment(0xFE, b"made by a test")]))
             .items()}
    out = assert_no_leak(tmp_path, faces, files)
    assert all(b"made by a test" in data for data in out.values())              # plain comments stay


def test_leak07_picture_split_over_segments(tmp_path, faces, mains, face_jpeg, portrait):
    png = io.BytesIO()
    portrait.resize((256, 300)).save(png, "PNG")
    png = png.getvalue()
    cases = {"app15": (0xEF, face_jpeg), "app4": (0xE4, png), "com": (0xFE, face_jpeg)}

    def split(marker, pic):
        parts = [pic[:3]] + [pic[i:i + 60000] for i in range(3, len(pic), 60000)]
        return lambda m: _insert(m, [_segment(marker, b"PART%02d" % i + p) for i, p in enumerate(parts)])

    def joined(data):                                    # the reader that knows: payloads after 6 bytes, joined
        info = parse_jpeg(data)
        got = []
        for marker in (0xEF, 0xE4, 0xFE):
            px = _decoded(b"".join(data[s + 10:e] for m, s, e in info.header if m == marker))
            got += [px] if px is not None else []
        return got
    files = {f"{k}_{n}": d for k, (mk, pic) in cases.items() for n, d in _both(mains, split(mk, pic)).items()}
    assert_no_leak(tmp_path, faces, files, extract=joined)


def _dnl(payload: bytes) -> bytes:
    return _segment(0xDC, payload)


def test_leak08_dnl_segments_holding_a_picture(tmp_path, faces, mains, face_jpeg):
    main = mains["copy"]
    progressive = jpeg_bytes(np.asarray(Image.open(io.BytesIO(main))), quality=90, progressive=True)
    sos = progressive.index(b"\xff\xda", progressive.index(b"\xff\xda") + 2)
    files = {"header.jpg": main[:main.index(b"\xff\xda")] + _dnl(face_jpeg) + main[main.index(b"\xff\xda"):],
             "after_scan.jpg": main[:-2] + _dnl(face_jpeg) + main[-2:],
             "between_scans.jpg": progressive[:sos] + _dnl(face_jpeg) + progressive[sos:]}
    out = assert_no_leak(tmp_path, faces, files)
    for name, data in out.items():                       # rebuilt losslessly: the same pixels
        assert b"\xff\xdc" not in data[:data.index(b"\xff\xda")]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(Image.open(io.BytesIO(files[name]))))
    # A DNL in its standard 4-byte form is what a decoder may need: it stays.
    ok = main[:-2] + _dnl(b"\x01\xe0") + main[-2:]
    rebuilt, _ = sanitize_file(ok + b"trailer")
    assert rebuilt == ok


def test_leak09_pictures_in_exif_text_tags_and_in_the_json(tmp_path, faces, mains, face_jpeg):
    b64 = base64.b64encode(face_jpeg).decode()
    props = ('\ufeff<?xml version="1.0"?><ImageProperties><ImageName>C:\\a\\b.jpg</ImageName>'
             f'<Thumbnail>{b64}</Thumbnail></ImageProperties>').encode()

    def exif(tags=(), sub=()):
        e = Image.Exif()
        e[0x0110] = "RoadCam"
        e.get_ifd(0x8769)[0x9003] = "2022:06:01 12:00:00"
        for k, v in tags:
            e[k] = v
        for k, v in sub:
            e.get_ifd(0x8769)[k] = v
        return _segment(0xE1, e.tobytes())
    segs = {"xptitle": exif([(0x9C9B, b64.encode("utf-16-le"))]),
            "usercomment": exif(sub=[(0x9286, b"UNICODE\x00" + b64.encode("utf-16-be"))]),
            "imageproperties": exif([(40055, props)])}
    files = {f"{k}_{n}": d for k, seg in segs.items() for n, d in _both(mains, lambda m: _insert(m, [seg])).items()}
    out = assert_no_leak(tmp_path, faces, files)
    for name, data in out.items():
        e = Image.open(io.BytesIO(data)).getexif()
        assert e[0x0110] == "RoadCam" and e.get_ifd(0x8769)[0x9003] == "2022:06:01 12:00:00"
        record = json.loads((tmp_path / "out" / name.replace(".jpg", ".json")).read_text())
        if name.startswith("imageproperties"):
            # the vendor XML stays well-formed XML, only the base64 run is gone, in the image and the JSON
            from lxml import etree
            xml = e[40055].decode("utf-8").lstrip("\ufeff")
            assert etree.fromstring(xml.encode()).findtext("ImageName") == "C:\\a\\b.jpg"
            assert "<ImageName>C:\\a\\b.jpg</ImageName>" in record["exif_imageproperties"]


def test_leak10_uncompressed_exif_thumbnails(tmp_path, faces, mains, portrait):
    w, h = 96, 112
    raw = np.asarray(portrait.resize((w, h), Image.LANCZOS)).tobytes()

    def tiff(kind, e):
        """IFD0 (Model) and an RGB strip thumbnail IFD: linked from SubIFDs (0x014A), or as IFD1
        with StripOffsets typed SLONG."""
        out = bytearray(b"II*\x00" if e == "<" else b"MM\x00*") + struct.pack(e + "I", 8)
        n0 = 2 if kind == "subifd" else 1
        model_at = 8 + 2 + 12 * n0 + 4
        model = b"RoadCam\x00"
        thumb_ifd = model_at + len(model)
        tags = [(0x0100, 3, w), (0x0101, 3, h), (0x0102, 3, 8), (0x0103, 3, 1), (0x0106, 3, 2),
                (0x0111, 9 if kind == "slong" else 4, None), (0x0115, 3, 3), (0x0116, 3, h), (0x0117, 4, len(raw))]
        data_at = thumb_ifd + 2 + 12 * len(tags) + 4
        out += struct.pack(e + "H", n0) + struct.pack(e + "HHII", 0x0110, 2, len(model), model_at)
        if kind == "subifd":
            out += struct.pack(e + "HHII", 0x014A, 13, 1, thumb_ifd) + struct.pack(e + "I", 0)
        else:
            out += struct.pack(e + "I", thumb_ifd)
        out += model + struct.pack(e + "H", len(tags))
        for t, typ, v in tags:
            v = data_at if v is None else v
            value = struct.pack(e + "HH", v, 0) if typ == 3 else struct.pack(e + "I", v)
            out += struct.pack(e + "HHI", t, typ, 1) + value
        return b"Exif\x00\x00" + bytes(out + struct.pack(e + "I", 0) + raw)

    def strips(data):                                     # a reader that finds the strip bytes
        at = data.find(raw)
        return [np.frombuffer(raw, np.uint8).reshape(h, w, 3)] if at >= 0 else []
    files = {f"{kind}_{'le' if e == '<' else 'be'}_{n}": d for kind in ("subifd", "slong") for e in "<>"
             for n, d in _both(mains, lambda m: _insert(m, [_segment(0xE1, tiff(kind, e))])).items()}
    out = assert_no_leak(tmp_path, faces, files, extract=strips)
    for data in out.values():
        e = Image.open(io.BytesIO(data)).getexif()
        assert e[0x0110] == "RoadCam" and 0x014A not in e


def test_a_picture_hidden_before_the_eoi_is_not_copied(tmp_path, faces, mains, face_jpeg):
    """libjpeg skips (and sladd's decoder tolerates) bytes between the last scan and the EOI:
    such an image is re-encoded rather than copied."""
    main = mains["copy"]
    files = {"b64.jpg": main[:-2] + base64.b64encode(face_jpeg) + main[-2:]}
    out = assert_no_leak(tmp_path, faces, files)
    with pytest.raises(NotCopyable):
        rebuild_file(files["b64.jpg"])
    assert out["b64.jpg"][-2:] == b"\xff\xd9"


def test_clean_files_are_copied_byte_for_byte_anything_else_is_rebuilt():
    plain = jpeg_bytes(np.zeros((32, 32, 3), np.uint8), exif=Image.Exif().tobytes())
    assert rebuild_file(plain).data is None
    # Fill bytes between segments, a stray restart marker: not what the rebuild writes.
    filled = plain[:2] + b"\xff\xff" + plain[2:]
    assert rebuild_file(filled).data == plain
    # A table segment with bytes libjpeg does not read: not copyable (re-encoded).
    at = plain.index(b"\xff\xc4")
    n = struct.unpack(">H", plain[at + 2:at + 4])[0]
    padded = (plain[:at] + b"\xff\xc4" + struct.pack(">H", n + 32) + plain[at + 4:at + 2 + n] + bytes(32)
              + plain[at + 2 + n:])
    with pytest.raises(NotCopyable):
        rebuild_file(padded)
