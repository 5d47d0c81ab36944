"""CMYK and YCCK JPEGs are anonymised and stay CMYK (their ICC profile stays valid); grayscale
stays grayscale; 12-bit files are refused with their reason."""
import io
import struct

import numpy as np
import pytest
from PIL import Image
from turbojpeg import TJPF_CMYK, TJSAMP_420, TurboJPEG

from engine.cli import main
from engine.codecs import TurboDecoder, cmyk_to_rgb, rgb_to_cmyk
from engine.jpeg import parse_jpeg
from engine.models import create_adapter, load_card, resolve_model
from engine.runtimes import create_runtime
from engine.types import ImageError, Job
from tests.conftest import jpeg_bytes, scene_with_faces

# A CMYK output profile header (data colour space 'CMYK', PCS 'Lab '): carried byte for byte.
CMYK_ICC = (struct.pack(">I", 132) + b"test" + b"\x02\x10\x00\x00" + b"prtrCMYKLab " + bytes(12) + b"acsp"
            + bytes(128 - 40) + bytes(4))


@pytest.fixture(scope="module")
def faces():
    card = load_card("centerface")
    det = create_adapter(card, resolve_model(card), create_runtime("onnxruntime", device="cpu"))
    return lambda rgb: len(det(np.ascontiguousarray(rgb), 1.0).boxes)


def cmyk_file(rgb: np.ndarray, kind: str, exif: bytes = b"") -> bytes:
    """'cmyk': Pillow's Adobe CMYK JPEG (inverted values, APP14 transform 0); 'ycck': the same
    CMYK coded as YCCK by libjpeg-turbo (APP14 transform 2), 4:2:0 as cameras' RIPs write it."""
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=92, icc_profile=CMYK_ICC, exif=exif)
    data = buf.getvalue()
    if kind == "cmyk":
        return data
    stored = TurboJPEG().decode(data, pixel_format=TJPF_CMYK)
    ycck = TurboJPEG().encode(stored, quality=92, pixel_format=TJPF_CMYK, jpeg_subsample=TJSAMP_420)
    info = parse_jpeg(data)
    carried = b"".join(s for m, s in info.segments)              # ICC and EXIF
    return ycck[:2] + carried + ycck[2:]


def _psnr(a, b):
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def _rgb(data: bytes) -> np.ndarray:
    from PIL import ImageOps
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


@pytest.mark.parametrize("kind,orientation", [("cmyk", 1), ("ycck", 1), ("ycck", 6)])
def test_cmyk_and_ycck_are_anonymised_and_stay_cmyk(tmp_path, portrait, faces, kind, orientation):
    img, boxes = scene_with_faces(portrait, faces=((200, 60, 300),))
    e = Image.Exif()
    e[0x0110] = "PrintCam"
    e[0x0112] = orientation
    stored = np.ascontiguousarray(np.rot90(img)) if orientation == 6 else img
    src = cmyk_file(stored, kind, e.tobytes())
    before = _rgb(src)
    assert before.shape == img.shape and faces(before) >= 1, "the face must be detectable in the input"
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    (inp / "c.jpg").write_bytes(src)
    assert main(["run", "-i", str(inp), "-o", str(out), "-q"]) == 0
    got = (out / "c.jpg").read_bytes()
    im = Image.open(io.BytesIO(got))
    assert im.mode == "CMYK" and parse_jpeg(got).components == 4
    assert im.info["icc_profile"] == CMYK_ICC and im.getexif()[0x0110] == "PrintCam"
    assert im.getexif().get(0x0112, 1) == 1
    after = _rgb(got)
    assert faces(after) == 0, "a face is still detectable"
    outside = np.ones(img.shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        outside[max(0, y0 - 8):y1 + 8, max(0, x0 - 8):x1 + 8] = False
    assert _psnr(before[outside], after[outside]) >= 40.0
    assert np.abs(before[~outside].astype(int) - after[~outside].astype(int)).max() > 30   # masked


def test_grayscale_stays_grayscale(tmp_path, portrait, faces):
    img, _ = scene_with_faces(portrait, faces=((200, 60, 300),))
    gray = np.asarray(Image.fromarray(img).convert("L"))
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    (inp / "g.jpg").write_bytes(jpeg_bytes(gray, quality=90))
    assert main(["run", "-i", str(inp), "-o", str(out), "-q"]) == 0
    im = Image.open(out / "g.jpg")
    assert im.mode == "L" and faces(np.asarray(im.convert("RGB"))) == 0


def _job(tmp_path):
    return Job(tmp_path / "x.jpg", "x.jpg", tmp_path / "o.jpg", None, tmp_path, 0, 0)


@pytest.mark.parametrize("kind", ["cmyk", "ycck"])
def test_cmyk_decodes_to_the_rgb_pillow_shows(tmp_path, kind):
    rgb = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = cmyk_file(rgb, kind)
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    for scale in (1.0, 0.5):
        dec = TurboDecoder(min_scale=scale)
        f = dec.decode(_job(tmp_path), data)
        assert f.pixels.shape == (int(48 * scale), int(64 * scale), 3)
        if scale == 1.0:
            assert np.abs(f.pixels.astype(int) - ref).max() <= 3
        assert np.array_equal(dec.full_pixels(f), TurboDecoder().decode(_job(tmp_path), data).pixels)


@pytest.mark.parametrize("inverted", [True, False])
def test_rgb_to_cmyk_inverts_cmyk_to_rgb(inverted):
    rgb = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rgb[0, 0] = 0
    back = cmyk_to_rgb(rgb_to_cmyk(rgb, inverted), inverted)
    assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 1
    pil = np.asarray(Image.fromarray(rgb).convert("CMYK").convert("RGB"))     # Pillow's own pair
    cmyk_plain = np.asarray(Image.fromarray(rgb).convert("CMYK"))
    stored = cmyk_plain if not inverted else 255 - cmyk_plain
    assert np.abs(cmyk_to_rgb(stored, inverted).astype(int) - pil.astype(int)).max() <= 1


def test_12_bit_is_refused_with_a_clear_reason(tmp_path):
    data = bytearray(jpeg_bytes(np.zeros((16, 16, 3), np.uint8)))
    data[data.index(b"\xff\xc0") + 4] = 12
    assert parse_jpeg(bytes(data)).precision == 12
    with pytest.raises(ImageError, match=r"12-bit JPEG \(precision 12\) is not supported"):
        TurboDecoder().decode(_job(tmp_path), bytes(data))
