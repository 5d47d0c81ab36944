"""The nvImageCodec encoder in its CPU-only backend (no GPU), against TurboJPEG: the same
libjpeg quality scale, the input's subsampling, grayscale as one component, and a whole run
with it writing what the TurboJPEG run writes."""
import io

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.demo import road_scene
from engine.jpeg import estimate_quality, parse_jpeg
from engine.codecs import TurboEncoder, create_encoder
from tests.conftest import jpeg_bytes, scene_with_faces

# Runs wherever nvImageCodec is installed (scripts/setup.sh test installs it); elsewhere the
# whole module skips, and `pytest -ra` lists the reason.
pytest.importorskip("nvidia.nvimgcodec", reason="nvImageCodec is not installed (pip install -e '.[nvimgcodec]')")

IMG = road_scene(480, 640, 1)


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _sampling(data: bytes):
    return Image.open(io.BytesIO(data)).layer


@pytest.mark.parametrize("subsampling", [0, 1, 2])
@pytest.mark.parametrize("quality", [70, 87, 95])
def test_cpu_backend_matches_turbojpeg(subsampling, quality):
    got = create_encoder("nvimagecodec", "cpu").encode(IMG, quality, subsampling)
    ref = TurboEncoder().encode(IMG, quality, subsampling)
    assert estimate_quality(parse_jpeg(got).luma_table) == quality
    assert _sampling(got) == _sampling(ref)
    a, b = _decode(got).astype(int), _decode(ref).astype(int)
    assert a.shape == b.shape == IMG.shape
    assert np.abs(a - b).mean() < 0.5 and np.abs(a - IMG).mean() < np.abs(b - IMG).mean() + 0.5


def test_gray_inputs_stay_one_component_jpegs():
    got = create_encoder("nvimagecodec", "cpu").encode(IMG, 90, 3)
    assert parse_jpeg(got).components == 1 and Image.open(io.BytesIO(got)).mode == "L"


def test_run_with_nvimagecodec_writes_what_turbojpeg_writes(tmp_path, portrait):
    inp = tmp_path / "in"
    inp.mkdir()
    img, _ = scene_with_faces(portrait, h=360, w=480, faces=((60, 40, 200),))
    e = Image.Exif()
    e[0x0110] = "TestCam"
    (inp / "a.jpg").write_bytes(jpeg_bytes(img, quality=88, exif=e.tobytes()))
    cfg = tmp_path / "c.yml"
    cfg.write_text("output: {encoder: nvimagecodec}\n")
    assert main(["run", "-i", str(inp), "-o", str(tmp_path / "nv"), "-k", str(cfg), "-q", "--device", "cpu"]) == 0
    assert main(["run", "-i", str(inp), "-o", str(tmp_path / "tj"), "-q", "--device", "cpu"]) == 0
    nv, tj = (tmp_path / "nv" / "a.jpg").read_bytes(), (tmp_path / "tj" / "a.jpg").read_bytes()
    assert estimate_quality(parse_jpeg(nv).luma_table) == 88
    assert Image.open(io.BytesIO(nv)).getexif()[0x0110] == "TestCam"          # metadata carried
    a, b = _decode(nv).astype(int), _decode(tj).astype(int)
    assert np.abs(a - b).mean() < 0.5
    assert np.abs(a - img.astype(int)).max() > 30                               # anonymised


@pytest.mark.gpu
@pytest.mark.parametrize("subsampling", [0, 2, 3])
def test_device_frames_encode_on_the_gpu_like_turbojpeg(subsampling):
    from kernels._xp import cupy_or_none

    cp = cupy_or_none()
    if cp is None:
        pytest.skip("needs CuPy with a usable NVIDIA GPU")
    try:
        enc = create_encoder("nvimagecodec", "cuda")
    except RuntimeError as exc:
        pytest.skip(f"nvImageCodec has no GPU encoder here: {exc}")
    got = enc.encode(cp.asarray(IMG)[:, ::-1], 90, subsampling)          # a strided device view
    ref = TurboEncoder().encode(np.ascontiguousarray(IMG[:, ::-1]), 90, subsampling)
    assert estimate_quality(parse_jpeg(got).luma_table) == 90
    assert parse_jpeg(got).components == parse_jpeg(ref).components
    a, b = _decode(got).astype(int), _decode(ref).astype(int)
    assert a.shape == b.shape and np.abs(a - b).mean() < 1.0       # nvJPEG's DCT vs libjpeg-turbo's
