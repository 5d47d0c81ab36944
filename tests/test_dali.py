"""The DALI decoder in DALI's CPU-only mode (device_id=None), against TurboJPEG decoding."""
import io

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.codecs import TurboDecoder, create_decoder
from engine.types import ImageError, Job
from tests.conftest import jpeg_bytes, scene_with_faces

pytestmark = pytest.mark.dali

# Runs wherever DALI is installed (scripts/setup.sh test installs it); elsewhere the whole
# module skips, and `pytest -ra` lists the reason.
pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install -e '.[dali]')")

RNG = np.random.default_rng(3)
TOLERANCE = 1                                            # grey levels, DALI vs TurboJPEG


def _job(tmp_path):
    return Job(tmp_path / "x.jpg", "x.jpg", tmp_path / "o.jpg", None, tmp_path, 0, 0)


def _variants():
    img = RNG.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    e = Image.Exif()
    e[0x0112] = 6
    yield "420", jpeg_bytes(img, quality=90)
    yield "444", jpeg_bytes(img, quality=95, subsampling=0)
    yield "gray", jpeg_bytes(img[..., 0], quality=90)
    yield "progressive", jpeg_bytes(img, quality=90, progressive=True)
    yield "rotated", jpeg_bytes(img, quality=90, exif=e.tobytes())


@pytest.mark.parametrize("name,data", list(_variants()))
def test_dali_cpu_matches_turbojpeg(tmp_path, name, data):
    a = create_decoder("dali").decode(_job(tmp_path), data)
    b = TurboDecoder().decode(_job(tmp_path), data)
    assert a.pixels.shape == b.pixels.shape and a.orientation == b.orientation
    assert np.abs(a.pixels.astype(int) - b.pixels.astype(int)).max() <= TOLERANCE, name


def test_dali_failures_are_image_errors_and_it_recovers(tmp_path):
    dec = create_decoder("dali")
    data = jpeg_bytes(RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8), quality=95)
    with pytest.raises(ImageError):
        dec.decode(_job(tmp_path), data[: len(data) // 2])
    assert dec.decode(_job(tmp_path), data).pixels.shape == (256, 256, 3)


def test_run_with_the_dali_decoder_gives_the_same_outputs(tmp_path, portrait):
    inp = tmp_path / "in"
    inp.mkdir()
    img, _ = scene_with_faces(portrait, h=240, w=320, faces=((40, 20, 150),))
    (inp / "a.jpg").write_bytes(jpeg_bytes(img, quality=90))
    cfg = tmp_path / "c.yml"
    cfg.write_text("engine: {decoder: dali}\n")
    assert main(["run", "-i", str(inp), "-o", str(tmp_path / "dali"), "-k", str(cfg), "-q"]) == 0
    assert main(["run", "-i", str(inp), "-o", str(tmp_path / "tj"), "-q"]) == 0
    assert (tmp_path / "dali" / "a.jpg").read_bytes() == (tmp_path / "tj" / "a.jpg").read_bytes()
    assert np.abs(np.asarray(Image.open(io.BytesIO((tmp_path / "dali" / "a.jpg").read_bytes()))).astype(int)
                  - img.astype(int)).max() > 30          # anonymised


def _cmyk_jpeg():
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).convert("CMYK").save(buf, "JPEG")
    return buf.getvalue()


def test_dali_batches_equal_turbojpeg_and_bad_images_fail_alone(tmp_path):
    """One DALI run per batch; refused (too large) and broken images give an error in their
    place, CMYK goes to TurboJPEG on the host, and every other image of the batch equals its
    TurboJPEG decode."""
    good = [d for _, d in _variants()]
    big = jpeg_bytes(RNG.integers(0, 256, (300, 400, 3), dtype=np.uint8), quality=90)
    broken = good[0][: len(good[0]) // 2]
    datas = [good[0], broken, good[1], _cmyk_jpeg(), good[2], big, good[3], good[4]]
    dec = create_decoder("dali", batch=4, max_pixels=100_000)
    out = dec.decode_batch([(_job(tmp_path), d) for d in datas])
    assert [type(o).__name__ for o in out] == ["Frame", "ImageError", "Frame", "Frame", "Frame",
                                               "ImageError", "Frame", "Frame"]
    assert "max_image_pixels" in str(out[5])
    ref = TurboDecoder()
    for o, d in zip(out, datas):
        if isinstance(o, ImageError):
            continue
        b = ref.decode(_job(tmp_path), d)
        assert o.pixels.shape == b.pixels.shape and o.orientation == b.orientation and o.quality == b.quality
        assert np.abs(o.pixels.astype(int) - b.pixels.astype(int)).max() <= TOLERANCE


def test_run_with_dali_batches_fails_only_the_broken_image(tmp_path, portrait):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(5):
        img, _ = scene_with_faces(portrait, h=240, w=320, faces=((40 + 20 * i, 20, 150),), seed=i)
        (inp / f"{i}.jpg").write_bytes(jpeg_bytes(img, quality=90))
    data = (inp / "2.jpg").read_bytes()
    (inp / "2.jpg").write_bytes(data[: len(data) // 2])
    cfg = tmp_path / "c.yml"
    cfg.write_text("engine: {decoder: dali, decode_batch: 4, queue_size: 8}\n")
    assert main(["run", "-i", str(inp), "-o", str(tmp_path / "dali"), "-k", str(cfg), "-q"]) == 1
    assert main(["run", "-i", str(inp), "-o", str(tmp_path / "tj"), "-q"]) == 1
    assert sorted(p.name for p in (tmp_path / "dali").glob("*.jpg")) == ["0.jpg", "1.jpg", "3.jpg", "4.jpg"]
    for name in ("0.jpg", "1.jpg", "3.jpg", "4.jpg"):
        assert (tmp_path / "dali" / name).read_bytes() == (tmp_path / "tj" / name).read_bytes(), name
    assert (tmp_path / "dali_error" / "2_error.txt").is_file()


def _many(n=24):
    """Distinct 4:2:0 JPEGs of two sizes (DALI reallocates on a size change, reuses otherwise)."""
    return [jpeg_bytes(RNG.integers(0, 256, ((96, 128) if k % 3 else (64, 80)) + (3,), dtype=np.uint8),
                       quality=90) for k in range(n)]


def _every_frame_equals_turbojpeg(dec, tmp_path, datas):
    frames = dec.decode_batch([(_job(tmp_path), d) for d in datas])
    ref = TurboDecoder()
    for k, (f, d) in enumerate(zip(frames, datas)):
        px = f.pixels.get() if hasattr(f.pixels, "get") else f.pixels     # device frames: explicit copy
        want = ref.decode(_job(tmp_path), d).pixels
        assert px.shape == want.shape and np.abs(px.astype(int) - want.astype(int)).max() <= TOLERANCE, k


def test_frames_of_earlier_batches_are_not_overwritten_by_later_ones(tmp_path):
    """Every frame is kept until the end and compared then: a frame still backed by DALI's
    output buffer would hold a later batch's pixels (CPU mode; the gpu test below does the
    same on the `mixed` path)."""
    _every_frame_equals_turbojpeg(create_decoder("dali", batch=4), tmp_path, _many())


@pytest.mark.gpu
def test_mixed_frames_of_many_batches_equal_turbojpeg(tmp_path):
    """nvJPEG into GPU memory, copied out of DALI's reused buffers: 40 batches, every frame kept
    and checked against TurboJPEG at the end (the race of issue 20, item 1)."""
    from kernels._xp import cupy_or_none

    if cupy_or_none() is None:
        pytest.skip("needs an NVIDIA GPU with CuPy (DALI's mixed decoder)")
    big = [jpeg_bytes(RNG.integers(0, 256, (1024, 1536, 3), dtype=np.uint8), quality=90) for _ in range(8)]
    datas = [big[k % 8] if k % 5 else d for k, d in enumerate(_many(320))]
    _every_frame_equals_turbojpeg(create_decoder("dali", device="mixed", batch=8), tmp_path, datas)


def test_a_dali_without_adjust_orientation_is_refused_with_the_floor():
    import nvidia.dali
    import nvidia.dali.backend as backend

    from engine.codecs.dali import DALI_MIN, require_decoder_arguments

    require_decoder_arguments(backend, nvidia.dali.__version__)        # the installed one has it

    class _Old:
        @staticmethod
        def GetSchema(name):
            return type("Schema", (), {"HasArgument": staticmethod(lambda arg: False)})()
    with pytest.raises(ImportError, match=rf"DALI 1\.42\.0 is too old.*adjust_orientation.*>= {DALI_MIN}.*sladd\[dali\]"):
        require_decoder_arguments(_Old, "1.42.0")
