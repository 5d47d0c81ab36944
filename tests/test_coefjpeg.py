"""One decode for the pixels and the lossless writer's coefficients (engine/codecs/coefjpeg.py,
the native helper engine/codecs/sladd_jpeg.c).

Oracles: PyTurboJPEG's decoder (accurate IDCT) for the pixels; the lossless writer's own
tjTransform path (engine.lossless.transcode without coefficients) for the output bytes; whole
`sladd run`s with the helper switched off (SLADD_JPEG_HELPER=0) for what a user gets.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import jpeg_bytes
from engine.codecs import coefjpeg
from engine.codecs.turbo import TurboDecoder
from engine.demo import road_scene
from engine.driver.budget import _nbytes
from engine.lossless import encode_mcus, geometry, touched_mcus, transcode
from engine.types import ImageError, Job

ROOT = Path(__file__).resolve().parent.parent
JOB = Job(path=None, key="k.jpg", output=None, archive=None, error_dir=None, size=0, mtime_ns=0)
needs_helper = pytest.mark.skipif(not coefjpeg.available(), reason="the JPEG helper is not built "
                                  "(python -m engine.codecs.coefjpeg build; scripts/setup.sh builds it)")


def _tj(data: bytes) -> np.ndarray:
    from turbojpeg import TJFLAG_ACCURATEDCT, TJPF_RGB, TurboJPEG

    return TurboJPEG().decode(data, pixel_format=TJPF_RGB, flags=TJFLAG_ACCURATEDCT)


def test_setup_built_the_helper():
    """scripts/setup.sh (CI) builds the helper; a user's install without a compiler runs without it."""
    if os.environ.get("SLADD_REQUIRE_JPEG_HELPER") != "1":
        pytest.skip("only where scripts/setup.sh built it (SLADD_REQUIRE_JPEG_HELPER=1)")
    assert coefjpeg.available()


@needs_helper
@pytest.mark.parametrize("subsampling", [0, 1, 2, "gray"])
@pytest.mark.parametrize("size", [(200, 264), (219, 333)])
def test_pixels_equal_turbojpeg(subsampling, size):
    img = road_scene(*size, 3)
    if subsampling == "gray":
        data = jpeg_bytes(img[..., 1].copy(), 88)
    else:
        data = jpeg_bytes(img, 88, subsampling=subsampling)
    pixels, coefs = coefjpeg.decode(data)
    assert pixels.shape == (*size, 3) and np.array_equal(pixels, _tj(data))
    assert len(coefs.components) == (1 if subsampling == "gray" else 3)
    assert coefs.nbytes == sum(w * h * 128 for _, _, w, h in coefs.components)
    coefs.close()


@needs_helper
def test_restart_markers_decode_alike():
    img = road_scene(160, 240, 4)
    data = jpeg_bytes(img, 85, restart_marker_blocks=7)
    assert b"\xff\xdd" in data                         # DRI: the file has restart intervals
    pixels, coefs = coefjpeg.decode(data)
    assert np.array_equal(pixels, _tj(data))
    geo = geometry(data, 1)
    assert transcode(data, geo, None, coefs) == transcode(data, geo)


def _patches(img, data, box):
    geo = geometry(data, 1)
    x0, y0, x1, y1 = box
    masked = img.copy()
    masked[y0:y1, x0:x1] = (40, 200, 90)
    mcus = touched_mcus([(y0, x0, np.ones((y1 - y0, x1 - x0), bool))], geo)
    return geo, encode_mcus(masked, mcus, geo)


@needs_helper
@pytest.mark.parametrize("subsampling", [0, 1, 2])
def test_patched_output_is_tjtransforms_byte_for_byte(subsampling):
    img = road_scene(200, 264, 1)                      # partial edge MCUs at 4:2:0
    data = jpeg_bytes(img, 90, subsampling=subsampling)
    geo, patches = _patches(img, data, (37, 50, 101, 90))
    _, coefs = coefjpeg.decode(data)
    assert transcode(data, geo, patches, coefs) == transcode(data, geo, patches)
    assert not coefs.open                              # freed as soon as it is written
    _, coefs = coefjpeg.decode(data)
    assert coefs.write(size_hint=1) == coefs.write(size_hint=10 * len(data)) == transcode(data, geo)
    coefs.close()


@needs_helper
def test_arrays_not_as_planned_fall_back_to_the_transform():
    img = road_scene(128, 128, 2)
    data, other = jpeg_bytes(img, 90), jpeg_bytes(img[:96], 90)
    geo, patches = _patches(img, data, (10, 10, 60, 40))
    _, wrong = coefjpeg.decode(other)                   # another picture's coefficients
    assert coefjpeg.write_patched(wrong, geo.blocks, patches) is None and not wrong.open
    _, wrong = coefjpeg.decode(other)
    assert transcode(data, geo, patches, wrong) == transcode(data, geo, patches)


@needs_helper
def test_files_left_to_the_usual_path():
    img = road_scene(120, 160, 5)
    assert coefjpeg.decode(jpeg_bytes(img, 90, progressive=True)) is None
    whole = jpeg_bytes(img, 90)
    assert coefjpeg.decode(whole[: len(whole) // 2]) is None           # truncated: libjpeg warns
    assert coefjpeg.decode(b"\xff\xd8\xff\xd9") is None
    dec = TurboDecoder()
    dec.keep_coefficients = True
    with pytest.raises(ImageError, match="Premature end of JPEG file"):
        dec.decode(JOB, whole[: len(whole) // 2])


@needs_helper
def test_decoder_keeps_them_only_when_asked_and_the_budget_counts_them():
    data = jpeg_bytes(road_scene(96, 128, 6), 90)
    job = JOB
    dec = TurboDecoder()
    assert dec.decode(job, data).coefficients is None
    dec.keep_coefficients = True
    frame = dec.decode(job, data)
    assert frame.coefficients is not None and np.array_equal(frame.pixels, _tj(data))
    assert _nbytes(frame) == frame.pixels.nbytes + frame.coefficients.nbytes
    frame.coefficients.close()
    frame.coefficients.close()                          # idempotent
    with pytest.raises(ValueError):
        frame.coefficients.blocks(0)


def test_build_reports_a_missing_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises((RuntimeError, OSError)):
        coefjpeg.build(out=tmp_path / "x.so")
    assert not (tmp_path / "x.so").exists()


@needs_helper
def test_sladd_run_writes_the_same_bytes_with_and_without_the_helper(tmp_path):
    """The bundled demo tree (faces, people, vehicles, plates, EXIF orientations, a truncated
    file): every output and the failures are the same with the helper on and off."""
    from PIL import Image

    from engine.demo import build_demo_tree, jpeg_with_exif, paste_portrait, sample_portrait

    inp = build_demo_tree(tmp_path / "in")
    portrait = Image.open(sample_portrait())
    scene = road_scene(480, 640, 7)
    paste_portrait(scene, portrait, 200, 120, 160)
    more = inp / "more"
    more.mkdir()
    jpeg_with_exif(scene, more / "rotated.jpg", orientation=6)
    jpeg_with_exif(scene, more / "upright.jpg", orientation=1)
    (more / "gray.jpg").write_bytes(jpeg_bytes(scene[..., 0].copy(), 90))
    (more / "progressive.jpg").write_bytes(jpeg_bytes(scene, 90, progressive=True))
    (more / "full_chroma.jpg").write_bytes(jpeg_bytes(scene, 95, subsampling=0))
    whole = jpeg_bytes(scene, 90)
    (more / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    outs = {}
    for flag in ("1", "0"):
        out = tmp_path / f"out{flag}"
        env = dict(os.environ, SLADD_JPEG_HELPER=flag)
        res = subprocess.run([sys.executable, "-m", "engine.cli", "run", "-i", str(inp), "-o", str(out), "-q"],
                             env=env, cwd=ROOT, capture_output=True, text=True)
        assert "Failed: 1" in res.stderr, res.stderr                     # cut.jpg, with the helper too
        outs[flag] = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.jpg")}
    assert len(outs["1"]) == 8 and outs["1"].keys() == outs["0"].keys()
    assert [k for k in outs["1"] if outs["1"][k] != outs["0"][k]] == []


def test_the_wheel_carries_the_source(tmp_path):
    pytest.importorskip("setuptools", reason="building a wheel needs setuptools")
    import zipfile

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, cwd=tmp_path, capture_output=True)
    (whl,) = tmp_path.glob("sladd-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    assert "engine/codecs/sladd_jpeg.c" in names and "engine/codecs/_sladd_jpeg.so" not in names
    built = coefjpeg.build(out=tmp_path / "_sladd_jpeg.so")
    assert built.is_file() and built.stat().st_size > 0


@needs_helper
def test_the_first_image_decoded_ahead_hands_over_its_coefficients(monkeypatch):
    """engine.first_pass decodes the run's first image during the start: the run's decoder takes
    its pixels and coefficients once, for the same bytes only."""
    import engine.codecs.turbo as turbo
    from engine.held import Held

    monkeypatch.setattr(turbo, "_AHEAD", Held(misses=4, one=True))
    data = jpeg_bytes(road_scene(96, 128, 8), 90)
    pixels, coefs = coefjpeg.decode(data)
    turbo.keep_decoded(data, pixels, coefs)
    dec = TurboDecoder()
    dec.keep_coefficients = True
    other = dec.decode(JOB, jpeg_bytes(road_scene(96, 128, 9), 90))
    assert other.coefficients is not coefs and other.pixels is not pixels
    frame = dec.decode(JOB, data)
    assert frame.pixels is pixels and frame.coefficients is coefs and turbo._AHEAD.items == []
    assert dec.decode(JOB, data).coefficients is not coefs              # handed over once


@needs_helper
def test_pictures_too_large_for_two_frames_in_flight_keep_none(monkeypatch):
    """Coefficients add to a frame's bytes in the frames-in-flight budget: above the limit the
    decoder keeps none (the writer reads the file again), so two such frames still fit; the
    bytes follow the sampling (4:4:4 holds twice 4:2:0's coefficients)."""
    from engine.codecs.turbo import frame_bytes
    from engine.driver.budget import FRAME_BYTES
    from engine.jpeg import parse_jpeg

    assert 2 * TurboDecoder.COEFFICIENTS_MAX_BYTES <= FRAME_BYTES
    img = road_scene(96, 128, 10)
    data, full = jpeg_bytes(img, 90), jpeg_bytes(img, 90, subsampling=0)
    assert frame_bytes(parse_jpeg(data), 2) == 96 * 128 * 6 and frame_bytes(parse_jpeg(full), 0) == 96 * 128 * 9
    dec = TurboDecoder()
    dec.keep_coefficients = True
    monkeypatch.setattr(TurboDecoder, "COEFFICIENTS_MAX_BYTES", 96 * 128 * 6)
    assert dec.decode(JOB, data).coefficients is not None
    frame = dec.decode(JOB, full)
    assert frame.coefficients is None and np.array_equal(frame.pixels, _tj(full))
    monkeypatch.setattr(TurboDecoder, "COEFFICIENTS_MAX_BYTES", 96 * 128 * 6 - 1)
    assert dec.decode(JOB, data).coefficients is None


@needs_helper
@pytest.mark.parametrize("sampling", [0x22, 0x12, 0x41])
def test_gray_frames_declaring_other_sampling_write_as_the_transform(sampling):
    """A one-component frame header may declare 2x2 (or other) sampling; tjTransform writes it
    as 1x1, and so must the helper (byte for byte)."""
    data = bytearray(jpeg_bytes(road_scene(64, 72, 11)[..., 0].copy(), 90))
    sof = data.index(b"\xff\xc0")
    assert data[sof + 11] == 0x11
    data[sof + 11] = sampling                          # the entropy-coded data stays valid
    data = bytes(data)
    pixels, coefs = coefjpeg.decode(data)
    assert np.array_equal(pixels, _tj(data))
    geo = geometry(data, 1)
    out = transcode(data, geo, None, coefs)
    assert out == transcode(data, geo) and out[out.index(b"\xff\xc0") + 11] == 0x11


@needs_helper
def test_a_view_keeps_its_coefficients_alive():
    data = jpeg_bytes(road_scene(64, 64, 12), 90)
    view = coefjpeg.decode(data)[1].blocks(0)          # the Coefficients object itself is not kept
    import gc

    gc.collect()
    junk = [bytearray(b"\x55" * 65536) for _ in range(100)]
    _, again = coefjpeg.decode(data)
    assert np.array_equal(view, again.blocks(0)) and len(junk) == 100


def test_scaled_decodes_count_as_misses_of_the_first_image(monkeypatch):
    """The first image decoded ahead is dropped after a few decodes of other bytes, at any scale
    (a run decoding at half scale must not hold it to the end)."""
    from fractions import Fraction

    import engine.codecs.turbo as turbo
    from engine.held import Held

    monkeypatch.setattr(turbo, "_AHEAD", Held(misses=4, one=True))
    data = jpeg_bytes(road_scene(96, 128, 13), 90)
    turbo.keep_decoded(data, _tj(data))
    other = jpeg_bytes(road_scene(96, 128, 14), 90)
    for _ in range(4):
        TurboDecoder().decode_pixels(other, Fraction(1, 2))
    assert turbo._AHEAD.items == []


@needs_helper
def test_render_frees_the_coefficients_whatever_it_writes(tmp_path):
    """Renderer.render frees the decoder's coefficients, also when they go unused (nothing to
    mask: the input is copied)."""
    from engine.codecs.turbo import TurboEncoder
    from engine.config import Config
    from engine.types import Detections
    from engine.worker.render import Renderer

    data = jpeg_bytes(road_scene(96, 128, 15), 90)
    dec = TurboDecoder()
    dec.keep_coefficients = True
    frame = dec.decode(JOB, data)
    coefs = frame.coefficients
    none = Detections(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                      classes=np.zeros(0, np.int32), names=("face",))
    out, masked, _ = Renderer(Config(), dec, TurboEncoder(), TurboEncoder()).render(frame, none)
    assert not masked and out[:2] == b"\xff\xd8" and not coefs.open and frame.coefficients is None


def test_the_budget_releases_what_it_admitted_when_the_frame_shrinks():
    """The writer frees a frame's coefficients before the budget lets the frame go: the budget
    releases the bytes it admitted, once, whatever the frame holds by then."""
    from engine.driver.budget import FrameBudget

    class F:
        pixels = np.zeros(1000, np.uint8)
        coefficients = type("C", (), {"nbytes": 3000})()

    fb, frames = FrameBudget(limit=10_000), [F() for _ in range(2)]
    for f in frames:
        fb.admit(f)
    assert fb.used == 8000
    frames[0].coefficients = None
    fb.discharge(frames[0])
    fb.discharge(frames[0])                                      # a second release frees nothing more
    assert fb.used == 4000
    fb.discharge(F())                                            # never admitted: nothing
    assert fb.used == 4000
    fb.discharge(frames[1])
    assert fb.used == 0


@needs_helper
def test_a_run_longer_than_the_frame_budget_finishes(tmp_path, monkeypatch):
    """A real run of more frames than the frames-in-flight budget holds, with the coefficients
    kept: it ends with every image written. Released by what was left after the writer freed
    the coefficients, the budget counted them for ever, and a run of 40 5 MP images hung after
    ~17; here 24 small ones through a budget of about three."""
    import threading

    import engine.driver.stream as stream
    from engine.config import load_config
    from engine.run import run

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    scene = road_scene(480, 640, 5)
    for i in range(24):
        (inp / f"{i:02d}.jpg").write_bytes(jpeg_bytes(np.roll(scene, 9 * i, axis=1).copy(), 90))
    per_frame = 480 * 640 * 3 + (80 * 60 + 2 * 40 * 30) * 128
    monkeypatch.setattr(stream, "FRAME_BYTES", 3 * per_frame)
    kept, real = [], coefjpeg.decode
    monkeypatch.setattr(coefjpeg, "decode", lambda data: kept.append(1) or real(data))
    cfg_file = tmp_path / "cfg.yml"
    cfg_file.write_text("models: [{card: centerface-fast}]\n")
    cfg, _ = load_config(cfg_file)
    done: list = []
    th = threading.Thread(target=lambda: done.append(run(cfg, inp, out)), daemon=True)
    th.start()
    th.join(90)
    assert not th.is_alive(), "the run hung: the frames-in-flight budget never freed room"
    assert done[0].failed == 0 and len(list(out.glob("*.jpg"))) == 24
    assert len(kept) >= 20                                       # the coefficients were kept for the writer


@needs_helper
def test_a_decode_during_the_decode_ahead_waits_for_it_instead_of_decoding_too(monkeypatch):
    """While engine.first_pass decodes the first image during the start, the run's decoder
    reaching the same file waits for that decode and takes it (one decode, not two side by side);
    a decode ahead that never ends holds it back at most AHEAD_WAIT."""
    import threading
    import time

    import engine.codecs.turbo as turbo
    from engine.held import Held

    monkeypatch.setattr(turbo, "_AHEAD", Held(misses=4, one=True))
    data = jpeg_bytes(road_scene(96, 128, 8), 90)
    real, calls = coefjpeg.decode, []
    monkeypatch.setattr(coefjpeg, "decode", lambda d: calls.append(1) or real(d))
    dec = TurboDecoder()
    dec.keep_coefficients = True

    def ahead():
        time.sleep(0.1)
        turbo.keep_decoded(data, *real(data))
        turbo.decoding_ahead(False)
    turbo.decoding_ahead(True)
    th = threading.Thread(target=ahead)
    try:
        th.start()
        frame = dec.decode(JOB, data)
    finally:
        th.join()
        turbo.decoding_ahead(False)
    assert calls == [] and frame.coefficients is not None and np.array_equal(frame.pixels, _tj(data))
    monkeypatch.setattr(turbo, "AHEAD_WAIT", 0.05)
    turbo.decoding_ahead(True)
    try:
        t = time.perf_counter()
        frame = dec.decode(JOB, data)
        waited = time.perf_counter() - t
    finally:
        turbo.decoding_ahead(False)
    assert calls == [1] and 0.04 <= waited < 1.0 and np.array_equal(frame.pixels, _tj(data))


def test_the_decode_ahead_without_the_helper_does_not_wait_for_itself(monkeypatch, tmp_path):
    """Found in review: where the first image goes through TurboJPEG (no helper, a rotated or
    progressive file), the decode ahead used the decoder's own entry point, which waited
    AHEAD_WAIT for the very decode it was doing. Oracle: the time, and TurboJPEG's pixels."""
    import time

    import engine.codecs.turbo as turbo
    from engine import first_pass
    from engine.held import Held

    monkeypatch.setattr(turbo, "_AHEAD", Held(misses=4, one=True))
    monkeypatch.setattr(turbo, "AHEAD_WAIT", 2.0)
    monkeypatch.setattr(turbo, "coefficients_fit", lambda *a: False)        # the TurboJPEG path
    img = road_scene(128, 192, 4)
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(img, 90))
    turbo.decoding_ahead(True)
    try:
        t = time.perf_counter()
        blob = first_pass.input_for(tmp_path / "a.jpg", None, {"factor": 2, "multiple": 32})
        took = time.perf_counter() - t
    finally:
        turbo.decoding_ahead(False)
    assert blob is not None and took < 1.0
    pixels, _ = turbo._AHEAD.items[0][1]
    assert np.array_equal(pixels, _tj((tmp_path / "a.jpg").read_bytes()))
