"""The device-resident GPU path: DALI decoding into GPU memory, model inputs prepared and
CenterFace outputs reduced on the device, masks drawn on the device, one copy back. Every case
compares with the CPU path (the oracle) and skips, with a reason, without an NVIDIA GPU."""
import io

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.codecs import TurboDecoder
from engine.types import Job
from kernels._xp import cupy_or_none
from tests.conftest import jpeg_bytes, scene_with_faces

pytestmark = pytest.mark.gpu

# nvJPEG and libjpeg-turbo differ in IDCT and chroma upsampling: a grey level or two on
# average at most, more at sharp colour edges of 4:2:0 images.
DECODE_MEAN_TOLERANCE = 1.5
DECODE_P999_TOLERANCE = 24


def _cupy():
    cp = cupy_or_none()
    if cp is None:
        pytest.skip("needs CuPy with a usable NVIDIA GPU")
    return cp


def _dali_mixed():
    _cupy()
    pytest.importorskip("nvidia.dali", reason="needs NVIDIA DALI (pip install 'sladd[gpu]')")
    from engine.codecs.dali import DaliDecoder

    return DaliDecoder(device="mixed", batch=4)


def _job(tmp_path):
    return Job(tmp_path / "x.jpg", "x.jpg", tmp_path / "o.jpg", None, tmp_path, 0, 0)


def _images():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    e = Image.Exif()
    e[0x0112] = 6
    return {"420": jpeg_bytes(img, quality=90), "444": jpeg_bytes(img, quality=95, subsampling=0),
            "gray": jpeg_bytes(img[..., 0], quality=90),
            "rotated": jpeg_bytes(img, quality=90, exif=e.tobytes())}


def test_dali_mixed_decodes_into_device_memory_like_turbojpeg(tmp_path):
    cp = _cupy()
    dec = _dali_mixed()
    images = _images()
    frames = dec.decode_batch([(_job(tmp_path), d) for d in images.values()])
    for (name, data), f in zip(images.items(), frames):
        assert isinstance(f.pixels, cp.ndarray), f"{name}: frame not on the device"
        ref = TurboDecoder().decode(_job(tmp_path), data)
        assert f.pixels.shape == ref.pixels.shape and f.orientation == ref.orientation, name
        diff = np.abs(cp.asnumpy(f.pixels).astype(int) - ref.pixels.astype(int))
        assert diff.mean() <= DECODE_MEAN_TOLERANCE, (name, diff.mean())
        assert np.percentile(diff, 99.9) <= DECODE_P999_TOLERANCE, (name, np.percentile(diff, 99.9))


def test_centerface_decode_on_the_device_equals_the_host():
    cp = _cupy()
    from engine.models import load_card
    from engine.models.centerface import CenterFaceAdapter

    rng = np.random.default_rng(2)
    heat = rng.random((1, 1, 64, 80), dtype=np.float32) ** 8      # a few peaks over 0.5
    scale = rng.normal(2.5, 0.3, (1, 2, 64, 80)).astype(np.float32)
    offset = rng.random((1, 2, 64, 80), dtype=np.float32)
    ad = CenterFaceAdapter.__new__(CenterFaceAdapter)
    ad.card = load_card("centerface")
    host = ad.decode(heat, scale, offset, (256, 320))
    dev = ad.decode(cp.asarray(heat), cp.asarray(scale), cp.asarray(offset), (256, 320))
    assert len(host.boxes) > 0
    assert np.allclose(host.boxes, dev.boxes, atol=1e-3) and np.allclose(host.scores, dev.scores)


def test_ort_cuda_keeps_device_outputs_for_device_inputs():
    cp = _cupy()
    import onnx
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with its CUDA provider")
    from engine.models import load_card, resolve_model
    from engine.runtimes import create_runtime
    from engine.models.centerface import fix_centerface_graph

    graph = fix_centerface_graph(onnx.load(str(resolve_model(load_card("centerface")))), 256, 320).SerializeToString()
    x = (np.random.default_rng(0).random((1, 3, 256, 320)) * 255).astype(np.float32)
    ref = create_runtime("onnxruntime", device="cpu").session(graph).run(None, {"input.1": x})
    got = create_runtime("onnxruntime", device="cuda").session(graph).run(None, {"input.1": cp.asarray(x)})
    for a, b in zip(ref, got):
        assert isinstance(b, cp.ndarray)
        assert np.allclose(a, cp.asnumpy(b), atol=1e-3, rtol=1e-3)


def _changed(path, original):
    out = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB")).astype(int)
    return np.abs(out - original.astype(int)).max(2) > 40


def test_full_run_on_gpu_masks_what_the_cpu_masks(tmp_path, portrait):
    """`sladd run --device cuda` (DALI into GPU memory when installed, the GPU runtime,
    device masks) against `--device cpu` on the same images: the same faces found and the
    masked areas agreeing (IoU >= 0.9 of the changed pixels)."""
    _cupy()
    from engine.device import gpu_components

    c = gpu_components()
    if not (c["tensorrt"] or c["onnxruntime-cuda"]):
        pytest.skip("needs a GPU model runtime: TensorRT or onnxruntime-gpu")
    inp = tmp_path / "in"
    inp.mkdir()
    originals = {}
    for i in range(3):
        img, _ = scene_with_faces(portrait, h=720, w=1280, faces=((100 + 300 * i, 200, 200), (900, 300, 90)), seed=i)
        (inp / f"{i}.jpg").write_bytes(jpeg_bytes(img, quality=92))
        originals[f"{i}.jpg"] = np.asarray(Image.open(inp / f"{i}.jpg").convert("RGB"))
    assert main(["run", "-i", str(inp), "-o", str(tmp_path / "gpu"), "--device", "cuda", "-q"]) == 0
    assert main(["run", "-i", str(inp), "-o", str(tmp_path / "cpu"), "--device", "cpu", "-q"]) == 0
    for name, orig in originals.items():
        g, c = _changed(tmp_path / "gpu" / name, orig), _changed(tmp_path / "cpu" / name, orig)
        assert c.sum() > 1000, "the CPU run masked nothing"
        iou = (g & c).sum() / (g | c).sum()
        assert iou >= 0.9, (name, iou)
