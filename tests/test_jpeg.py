"""JPEG container handling: segments, quality, orientation; decoding errors."""
import io

import numpy as np
import pytest
from PIL import Image, ImageOps
from turbojpeg import TJSAMP_420, TurboJPEG

from engine.codecs import TurboDecoder
from engine.jpeg import (apply_orientation, estimate_quality, parse_jpeg, read_orientation, set_orientation,
                         splice_segments)
from engine.types import ImageError, Job
from tests.conftest import jpeg_bytes

RNG = np.random.default_rng(2)
PIX = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _job(tmp_path):
    return Job(path=tmp_path / "x.jpg", key="x.jpg", output=tmp_path / "o.jpg", archive=None,
               error_dir=tmp_path, size=0, mtime_ns=0)


@pytest.mark.parametrize("q", [50, 75, 85, 90, 95, 100])
def test_estimate_quality_recovers_libjpeg_quality(q):
    assert estimate_quality(parse_jpeg(jpeg_bytes(PIX, quality=q)).luma_table) == q
    tj = TurboJPEG().encode(PIX, quality=q, jpeg_subsample=TJSAMP_420)
    assert estimate_quality(parse_jpeg(tj).luma_table) == q


def test_estimate_quality_of_any_table_is_the_highest_closest_standard_quality():
    """Other (camera) tables get the closest standard quality, the highest on ties. Oracle: the
    distance to each of libjpeg's 100 scaled tables, computed one by one."""
    from engine.jpeg import _STD_LUMA

    def closest(luma):
        errs = []
        for q in range(1, 101):
            s = 5000.0 / q if q < 50 else 200.0 - 2.0 * q
            errs.append(float(np.abs(np.clip(np.floor((_STD_LUMA * s + 50.0) / 100.0), 1, 255) - luma).sum()))
        return max(q for q in range(1, 101) if errs[q - 1] == min(errs))
    rng = np.random.default_rng(5)
    tables = [rng.integers(1, 256, 64).astype(np.float64) for _ in range(200)] + [np.ones(64), np.full(64, 255.0)]
    assert [estimate_quality(t) for t in tables] == [closest(t) for t in tables]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg_bytes(PIX, quality=95, exif=exif.tobytes())
    info = parse_jpeg(data)
    assert read_orientation(info.exif) == orientation
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    frame = TurboDecoder().decode(_job(tmp_path), data)
    assert frame.pixels.shape == ref.shape and frame.orientation == orientation
    assert np.abs(frame.pixels.astype(int) - ref.astype(int)).max() <= 3   # IDCT differences only


def test_set_orientation_changes_only_that_value():
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x0110] = "Cam"
    seg = [s for m, s in parse_jpeg(jpeg_bytes(PIX, exif=exif.tobytes())).segments if m == 0xE1][0]
    out = set_orientation(seg, 1)
    assert len(out) == len(seg) and sum(a != b for a, b in zip(seg, out)) == 1
    e = Image.Exif()
    e.load(out[4:])
    assert e[0x0112] == 1 and e[0x0110] == "Cam"


def test_splice_keeps_exif_xmp_icc_and_vendor_tags():
    exif = Image.Exif()
    exif[40056] = "\ufeff<ReflinkInfo><ReflinkId>1</ReflinkId></ReflinkInfo>".encode("utf-8")
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    from PIL import ImageCms
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = jpeg_bytes(PIX, exif=exif.tobytes(), icc_profile=icc, xmp=xmp)
    segments = [s for _, s in parse_jpeg(src).segments]
    out = splice_segments(TurboJPEG().encode(PIX, quality=90), segments)
    im = Image.open(io.BytesIO(out))
    assert im.getexif()[40056].startswith(b"\xef\xbb\xbf<ReflinkInfo>")
    assert im.info["icc_profile"] == icc
    assert xmp in out
    assert np.asarray(im).shape == PIX.shape


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"hello, this is text", "not a JPEG"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a JPEG"),
])
def test_parse_rejects_non_jpeg(data, reason):
    with pytest.raises(ImageError, match=reason):
        parse_jpeg(data)


def test_truncated_jpeg_fails_instead_of_grey_fill(tmp_path):
    data = jpeg_bytes(RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8), quality=95)
    with pytest.raises(ImageError):
        TurboDecoder().decode(_job(tmp_path), data[: len(data) // 2])


def test_corrupt_entropy_data_fails(tmp_path):
    data = bytearray(jpeg_bytes(RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8), quality=95))
    sos = data.index(b"\xff\xda")
    for i in range(sos + 200, len(data) - 200, 97):
        data[i] = 0xFF                               # 0xFF 0x?? sequences: invalid markers
        data[i + 1] = 0xD3 if i % 2 else 0x01
    with pytest.raises(ImageError):
        TurboDecoder().decode(_job(tmp_path), bytes(data))


def test_pixel_limit_refuses_before_decoding(tmp_path):
    data = jpeg_bytes(PIX)
    with pytest.raises(ImageError, match="max_image_pixels"):
        TurboDecoder(max_pixels=100).decode(_job(tmp_path), data)


def test_apply_orientation_is_a_view():
    a = np.zeros((4, 6, 3), np.uint8)
    for o in range(1, 9):
        assert np.shares_memory(apply_orientation(a, o), a)


def test_grayscale_and_progressive_decode_to_rgb(tmp_path):
    gray = RNG.integers(0, 256, (40, 56), dtype=np.uint8)
    f = TurboDecoder().decode(_job(tmp_path), jpeg_bytes(gray, quality=90))
    assert f.pixels.shape == (40, 56, 3) and (f.pixels[..., 0] == f.pixels[..., 2]).all()
    data = jpeg_bytes(PIX, quality=90, progressive=True)
    f = TurboDecoder().decode(_job(tmp_path), data)
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert f.pixels.shape == PIX.shape and np.abs(f.pixels.astype(int) - ref.astype(int)).max() <= 3


def test_parse_reads_precision_adobe_transform_and_segment_offsets():
    buf = io.BytesIO()
    Image.fromarray(PIX).convert("CMYK").save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    info = parse_jpeg(data)
    assert info.cmyk and info.adobe_transform == 0 and info.precision == 8
    assert data[info.sos:info.sos + 2] == b"\xff\xda"
    # The header segments tile the bytes from SOI to the first SOS.
    assert info.header[0][1] == 2 and info.header[-1][2] == info.sos
    assert all(a[2] == b[1] for a, b in zip(info.header, info.header[1:]))
    plain = parse_jpeg(jpeg_bytes(PIX))
    assert plain.adobe_transform is None and not plain.cmyk and plain.components == 3


def test_cmyk_is_decoded_to_rgb(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(PIX).convert("CMYK").save(buf, "JPEG", quality=90)
    f = TurboDecoder().decode(_job(tmp_path), buf.getvalue())
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert f.pixels.shape == PIX.shape and np.abs(f.pixels.astype(int) - ref.astype(int)).max() <= 3
