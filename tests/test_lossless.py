"""Lossless outside the masks (engine/lossless.py): only the MCUs a mask touches change.

Oracles: libjpeg-turbo's decoder through PyTurboJPEG with fast (box) chroma upsampling, under
which every pixel is decoded from its own MCU only, so "coefficients unchanged" means "pixels
unchanged"; Pillow's default decoder (fancy upsampling) for what viewers show; the masked
pixels themselves for what the re-encoded MCUs must look like; Pillow's EXIF transpose for
the orientation (engine.jpeg.apply_orientation, checked against Pillow's exif_transpose in
tests/test_jpeg.py).
"""
import io

import numpy as np
import pytest
from PIL import Image

from conftest import jpeg_bytes
from engine.config import Config
from engine.demo import road_scene
from engine.jpeg import apply_orientation
from engine.lossless import (LosslessUnavailable, encode_mcus, geometry, patch_render, render_lossless,
                             touched_mcus, transcode)
from engine.types import Detections, Frame, Job


def _fast(data: bytes) -> np.ndarray:
    from turbojpeg import TJFLAG_ACCURATEDCT, TJFLAG_FASTUPSAMPLE, TJPF_RGB, TurboJPEG

    return TurboJPEG().decode(data, pixel_format=TJPF_RGB, flags=TJFLAG_FASTUPSAMPLE | TJFLAG_ACCURATEDCT)


def _pil(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def _touched_map(mcus, mcu, shape) -> np.ndarray:
    out = np.zeros(shape, bool)
    for r, c in mcus:
        out[r * mcu[0]:(r + 1) * mcu[0], c * mcu[1]:(c + 1) * mcu[1]] = True
    return out


def _patch(pixels, data, box, orientation=1):
    """Fill `box` (x0, y0, x1, y1, upright pixels) with grey and patch it in; (output, touched map)."""
    geo = geometry(data, orientation)
    x0, y0, x1, y1 = box
    masked = pixels.copy()
    masked[y0:y1, x0:x1] = (40, 200, 90)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    mask[:] = True
    mcus = touched_mcus([(y0, x0, mask)], geo)
    out = transcode(data, geo, encode_mcus(masked, mcus, geo))
    return out, _touched_map(mcus, geo.mcu, (geo.height, geo.width)), masked


@pytest.mark.parametrize("subsampling,mcu", [(0, (8, 8)), (1, (8, 16)), (2, (16, 16))])
@pytest.mark.parametrize("progressive", [False, True])
def test_only_the_touched_mcus_change(subsampling, mcu, progressive):
    img = road_scene(200, 264, 1)                    # 264 = 16.5 MCUs: a partial edge column
    data = jpeg_bytes(img, 90, subsampling=subsampling, progressive=progressive)
    out, touched, masked = _patch(img, data, (37, 50, 101, 90))
    assert geometry(data, 1).mcu == mcu
    a, b = _fast(data).astype(int), _fast(out).astype(int)
    assert np.abs(a - b)[~touched].max() == 0, "a pixel outside the re-encoded MCUs changed"
    # Default (fancy) upsampling: the one pixel ring around them may take their new chroma.
    ring = touched.copy()
    ring[1:] |= touched[:-1]; ring[:-1] |= touched[1:]
    ring[:, 1:] |= ring[:, :-1].copy(); ring[:, :-1] |= ring[:, 1:].copy()
    assert np.abs(_pil(data) - _pil(out))[~ring].max() == 0
    if subsampling == 0:
        assert np.abs(_pil(data) - _pil(out))[~touched].max() == 0
    # Inside: the masked pixels, re-encoded with the input's quantisation tables.
    inside = np.abs(_pil(out) - masked.astype(int))[50:90, 37:101]
    assert inside.mean() < 4, inside.mean()
    assert Image.open(io.BytesIO(out)).info.get("progressive", 0) == int(progressive)


def test_grayscale_and_partial_edge_mcus():
    img = np.ascontiguousarray(road_scene(77, 93, 2)[..., :1].repeat(3, axis=2))
    buf = io.BytesIO()
    Image.fromarray(img[..., 0]).save(buf, "JPEG", quality=85)
    data = buf.getvalue()
    out, touched, masked = _patch(img, data, (60, 40, 93, 77))   # reaches the right and bottom edges
    assert Image.open(io.BytesIO(out)).mode == "L"
    a, b = np.asarray(Image.open(io.BytesIO(data))).astype(int), np.asarray(Image.open(io.BytesIO(out))).astype(int)
    assert np.abs(a - b)[~touched].max() == 0
    luma = 0.299 * 40 + 0.587 * 200 + 0.114 * 90                      # the fill colour, as grey
    assert np.abs(b[40:, 60:] - luma).mean() < 4


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied_in_the_dct_domain(orientation):
    upright = road_scene(96, 128, 4)
    t = (1, 0, 2)
    stored = {1: upright, 2: upright[:, ::-1], 3: upright[::-1, ::-1], 4: upright[::-1], 5: upright.transpose(t),
              6: upright[:, ::-1].transpose(t), 7: upright[::-1, ::-1].transpose(t),
              8: upright[::-1].transpose(t)}[orientation]
    stored = np.ascontiguousarray(stored)
    np.testing.assert_array_equal(apply_orientation(stored, orientation), upright)
    data = jpeg_bytes(stored, 92, subsampling=2)
    geo = geometry(data, orientation)
    out = transcode(data, geo)
    assert (geo.width, geo.height) == (128, 96)
    # What Pillow shows for the input turned upright: equal up to the rounding of libjpeg's
    # integer IDCT, which is not symmetric in its two passes (a transposed block decodes within
    # a few levels of the transposed pixels).
    shown = apply_orientation(_pil(data), orientation)
    diff = np.abs(_pil(out) - shown)
    assert diff.max() <= 4 and diff.mean() < 0.2


def test_rotation_that_would_move_a_partial_mcu_is_refused():
    data = jpeg_bytes(road_scene(100, 120, 5), 90, subsampling=2)      # 100 and 120: not multiples of 16
    with pytest.raises(LosslessUnavailable, match="whole number"):
        geometry(data, 6)
    geometry(data, 5)                                                   # transpose keeps edges at the edge


class _Renderer:
    """The parts of engine.worker.render.Renderer that patch_render uses."""

    def __init__(self, cfg, pixels):
        from engine.codecs import TurboEncoder
        from engine.mask import Masker

        self.cfg, self.masker = cfg, Masker(cfg)
        self.preview_encoder = self.encoder = TurboEncoder()
        self.decoder = type("D", (), {"full_pixels": staticmethod(lambda frame: pixels)})()

    def quality(self, frame):
        return 90


def _frame(data, pixels, orientation=1):
    job = Job(path=None, key="t.jpg", output=None, archive=None, error_dir=None, size=len(data), mtime_ns=0)
    from engine.jpeg import parse_jpeg

    info = parse_jpeg(data)
    return Frame(job=job, data=data, pixels=pixels, scale=1.0, full_size=pixels.shape[:2], orientation=orientation,
                 segments=[s for _, s in info.segments], quality=90, subsampling=2, exif=info.exif)


def _dets(box):
    return Detections(np.array([box], np.float32), np.array([0.9], np.float32), np.array([0], np.int32), ("face",),
                      shapes=("box",))


def test_patch_render_masks_and_keeps_the_rest():
    img = road_scene(160, 224, 6)
    data = jpeg_bytes(img, 90, subsampling=2)
    pixels = _fast(data).copy()
    res = patch_render(_Renderer(Config(), pixels), _frame(data, pixels), _dets((50, 40, 110, 100)), need_pixels=True)
    assert res.masked and res.mcus is not None and res.mcu == (16, 16)
    touched = _touched_map(res.mcus, res.mcu, img.shape[:2])
    assert touched[40:100, 50:110].all()
    assert np.abs(_fast(data).astype(int) - _fast(res.data))[~touched].max() == 0
    assert np.abs(_fast(res.data).astype(int)[40:100, 50:110] - _fast(data)[40:100, 50:110]).mean() > 5   # masked
    assert res.pixels is not None and res.pixels.shape == img.shape


def test_a_failing_filter_never_publishes_unpatched(monkeypatch):
    """If the coefficients cannot be written, the masked pixels are re-encoded instead: the
    output never holds the unmasked face."""
    import engine.lossless as lossless

    img = road_scene(160, 224, 7)
    data = jpeg_bytes(img, 90, subsampling=2)
    geo = geometry(data, 1)
    bad = {0: {0: (np.array([10_000]), np.zeros((1, 64), np.int16))}}       # a block past the row's end
    with pytest.raises(LosslessUnavailable, match="patching failed|planned"):
        transcode(data, geo, bad)
    monkeypatch.setattr(lossless, "encode_mcus", lambda *a: bad)
    pixels = _fast(data).copy()
    res = patch_render(_Renderer(Config(), pixels), _frame(data, pixels), _dets((50, 40, 110, 100)))
    assert res.mcus is None                                               # re-encoded whole
    out = _fast(res.data).astype(int)
    assert np.abs(out[40:100, 50:110] - _fast(data)[40:100, 50:110]).mean() > 5


def test_cmyk_with_masks_is_left_to_the_renderer():
    from pathlib import Path

    data = (Path(__file__).parent / "data" / "ycck_96x128.jpg").read_bytes()
    pixels = np.zeros((96, 128, 3), np.uint8)
    assert render_lossless(_Renderer(Config(), pixels), _frame(data, pixels), _dets((10, 10, 40, 40))) is None
    geo = geometry(data, 1)
    assert not geo.patchable and transcode(data, geo)[:2] == b"\xff\xd8"     # still turned upright losslessly


def test_a_progressive_transform_leaves_no_state_behind():
    """libjpeg-turbo 2.1 keeps the progressive scan script in a reused transform handle: the
    next baseline file came out broken. Every transform starts from a fresh handle."""
    gray = io.BytesIO()
    Image.fromarray(road_scene(77, 93, 2)[..., 0]).save(gray, "JPEG", quality=85)
    gray = gray.getvalue()
    prog = jpeg_bytes(road_scene(64, 80, 3), 90, progressive=True)
    transcode(prog, geometry(prog, 1))
    assert np.abs(_pil(gray) - _pil(transcode(gray, geometry(gray, 1)))).max() == 0


def test_arithmetic_coded_and_trailing_garbage_inputs():
    from pathlib import Path

    data = (Path(__file__).parent / "data" / "arithmetic_96x128.jpg").read_bytes()
    out = transcode(data, geometry(data, 1))
    assert np.abs(_fast(data).astype(int) - _fast(out)).max() == 0
    junk = jpeg_bytes(road_scene(64, 64, 8), 90)[:-2] + b"\x00garbage\xff\xd9"
    assert transcode(junk, geometry(junk, 1))[:2] == b"\xff\xd8"


def test_sladd_run_changes_only_the_masked_mcus(tmp_path, portrait):
    """`output.lossless` (the default) in a whole run: every pixel that changed, decoded with
    fast upsampling, lies in the 16x16 MCUs around the pasted portrait (its face, and the person
    NanoDet masks when installed, dilated)."""
    from pathlib import Path as _P

    from conftest import scene_with_faces
    from engine.cli import main
    from engine.worker import render

    if "render_lossless" not in _P(render.__file__).read_text(encoding="utf-8"):
        pytest.skip("engine/worker/render.py does not call engine.lossless.render_lossless yet")
    img, boxes = scene_with_faces(portrait, 480, 640, ((200, 100, 220),))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(jpeg_bytes(img, 92))
    assert main(["run", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-q"]) == 0
    before, after = _fast((tmp_path / "in" / "a.jpg").read_bytes()), _fast((tmp_path / "out" / "a.jpg").read_bytes())
    changed = np.abs(before.astype(int) - after).max(axis=2) > 0
    x0, y0, x1, y1 = (v + d for v, d in zip(boxes[0], (-16, -16, 16, 16)))
    allowed = np.zeros_like(changed)
    allowed[max(0, y0) // 16 * 16:-(-y1 // 16) * 16, max(0, x0) // 16 * 16:-(-x1 // 16) * 16] = True
    assert changed.any() and not (changed & ~allowed).any()
