"""The device path's host/device discipline, checked without a GPU.

Frames are handed to the detector, the masker and the writer as "device" arrays of a strict
CuPy stand-in (tests/cupy_sim.py: implicit conversion to NumPy or mixing with NumPy arrays
raises, as in CuPy). The model runs through a session with the GPU sessions' contract (device
inputs in, device outputs out). Every output must equal the host path's exactly, and only the
expected explicit copies may cross to the host. This is no substitute for the `gpu` tests
(test_gpu_path.py): it cannot see CUDA, streams or speed — only code that would move data
implicitly or mix host and device arrays, which on a GPU fails or silently copies.

On a machine with CuPy and a GPU the same tests also run with real CuPy arrays (`gpu`
marker; they need neither TensorRT nor DALI): the device path then computes on the GPU, and
its outputs must agree with the host path's within float tolerance.
"""
from types import SimpleNamespace

import dataclasses

import numpy as np
import pytest

from engine.config import Config, ModelSpec, load_config
from engine.codecs import TurboDecoder
from engine.detect import Detector, build_models
from engine.jpeg import apply_orientation
from engine.runtimes import create_runtime
from engine.types import Job
from engine.codecs import TurboEncoder
from engine.worker.write import Writer
from kernels._xp import cupy_or_none
from tests import cupy_sim
from tests.conftest import jpeg_bytes, scene_with_faces


@pytest.fixture(params=["stand-in", pytest.param("cupy", marks=pytest.mark.gpu)])
def sim(request, monkeypatch):
    """The device array module: the strict stand-in (exact comparisons, transfers counted), or
    real CuPy on a GPU (float tolerance)."""
    if request.param == "stand-in":
        m = cupy_sim.install(monkeypatch)
        return SimpleNamespace(xp=m, asarray=m.asarray, exact=True, array=cupy_sim.DeviceArray,
                               raw=lambda a: np.ascontiguousarray(a._a))
    cp = cupy_or_none()
    if cp is None:
        pytest.skip("CuPy with a usable NVIDIA GPU is not available on this machine")
    return SimpleNamespace(xp=cp, asarray=cp.asarray, exact=False, array=cp.ndarray, raw=lambda a: a.get())


class _Session:
    """ONNX Runtime on the CPU behind the GPU sessions' contract (CupyBoundSession, TrtSession):
    device inputs in, device outputs out."""

    def __init__(self, inner, sim):
        self.inner, self.sim = inner, sim

    def get_inputs(self):
        return self.inner.get_inputs()

    def get_outputs(self):
        return self.inner.get_outputs()

    def run(self, names, feed):
        device = any(isinstance(v, self.sim.array) for v in feed.values())
        assert device, "the device path fed the model host arrays"
        outs = self.inner.run(names, {k: v.get() for k, v in feed.items()})
        return [self.sim.asarray(o) for o in outs]


class _Runtime:
    name = "onnxruntime"

    def __init__(self, sim):
        self.inner, self.sim = create_runtime("onnxruntime", device="cpu", threads=2), sim

    def session(self, model, family=None):
        return _Session(self.inner.session(model), self.sim)


class _FullRes:
    """The writer's decoder: frames are already at full resolution (as DALI's are)."""

    def full_pixels(self, frame):
        return frame.pixels


class _DeviceEncoder(TurboEncoder):
    """An encoder that takes device arrays (as nvImageCodec on cuda does)."""

    accepts_device_arrays = True

    def __init__(self, sim):
        super().__init__()
        self.sim = sim

    def encode(self, pixels, quality, subsampling):
        assert isinstance(pixels, self.sim.array)
        # Encoded "on the device": no transfer is counted (the stand-in's storage is read directly).
        return super().encode(self.sim.raw(pixels), quality, subsampling)


def _frames(portrait, sim, sizes=((480, 640, 0), (480, 640, 1), (640, 480, 6)), faces=True):
    """(host frames, device frames): the same JPEGs decoded at full resolution; device frames are
    uploaded in stored orientation and turned upright on the device (strided views, as DALI's)."""
    job = Job(path=None, key="k", output=None, archive=None, error_dir=None, size=0, mtime_ns=0)
    host, dev = [], []
    for k, (h, w, orientation) in enumerate(sizes):
        img, _ = scene_with_faces(portrait, h=h, w=w, seed=k,
                                  faces=((40 + 50 * k, 60, 220), (300, 150, 140)) if faces else ())
        from PIL import Image
        e = Image.Exif()
        e[0x0112] = orientation or 1
        stored = np.ascontiguousarray(np.rot90(img)) if orientation == 6 else img
        f = TurboDecoder().decode(job, jpeg_bytes(stored, quality=90, exif=e.tobytes()))
        host.append(f)
        raw = TurboDecoder().decode_pixels(f.data)
        dev.append(dataclasses.replace(f, pixels=apply_orientation(sim.asarray(raw), f.orientation), timings={}))
    return host, dev


def _compare(cfg, host_frames, dev_frames, sim, encoder=None):
    rt_host = create_runtime("onnxruntime", device="cpu", threads=2)
    d_host = Detector(cfg, *build_models(cfg, rt_host))
    d_dev = Detector(cfg, *build_models(cfg, _Runtime(sim)))
    want = d_host.detect_batch(host_frames)
    got = d_dev.detect_batch(dev_frames)
    w_host = Writer(cfg, _FullRes())
    w_dev = Writer(cfg, _FullRes(), encoder=encoder)
    masked = 0
    for fh, fd, a, b in zip(host_frames, dev_frames, want, got):
        assert len(a) == len(b) and a.counts() == b.counts()
        if sim.exact:
            assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
        else:
            assert np.allclose(a.boxes, b.boxes, atol=1.0) and np.allclose(a.scores, b.scores, atol=1e-3)
        ch = dataclasses.replace(fh, pixels=fh.pixels.copy())
        cd = dataclasses.replace(fd, pixels=fd.pixels.copy())
        before = cupy_sim.transfers["to_host"]
        data_h, m_h, _ = w_host.render(ch, a)
        data_d, m_d, _ = w_dev.render(cd, b)
        assert m_h == m_d
        if sim.exact:
            assert data_h == data_d
            if m_d:
                # The anonymised image crosses once (host encoder) or not at all (device encoder).
                assert cupy_sim.transfers["to_host"] - before == (0 if encoder is not None else 1)
        else:
            diff = np.abs(_pixels(data_h).astype(int) - _pixels(data_d).astype(int))
            assert diff.mean() < 0.5, diff.mean()
        masked += m_d
    assert masked >= 2, "the comparison must include masked images"
    return want


def _pixels(data: bytes) -> np.ndarray:
    import io

    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(data)))


def test_default_cascade_batched_over_device_frames(portrait, sim):
    host, dev = _frames(portrait, sim)
    cfg = Config(engine={"batch_size": 4}, models=[ModelSpec(card="centerface-fast")])
    dets = _compare(cfg, host, dev, sim)
    assert sum(len(d) for d in dets) >= 4


@pytest.mark.parametrize("mask", [
    {"blur": 30, "gray_blur": False},
    {"blur": 30, "gray_blur": True, "normalized_gray_blur": False},
    {"blur": None, "mask_color": None},                         # the reference's per-class colours
    {"mask": {"mode": "pixelate"}},
])
def test_mask_modes_on_the_device_equal_the_host(portrait, sim, mask):
    host, dev = _frames(portrait, sim, sizes=((480, 640, 0), (640, 480, 6)))
    cfg = Config(models=[ModelSpec(card="centerface")], output={"lossless": False}, **mask)   # compares encoders
    _compare(cfg, host, dev, sim, encoder=_DeviceEncoder(sim))


def test_360_cutouts_and_seam_on_device_frames(portrait, sim, tmp_path):
    host, dev = _frames(portrait, sim, sizes=((600, 1800, 0), (600, 1800, 1)))
    cfg, _ = load_config(overrides={"image_type": "360", "use_cutouts": True, "cutout_dim_downscale": [2, 3],
                                    "cutout_step_factor": [300, 600], "models": [{"card": "centerface"}],
                                    "engine": {"batch_size": 3}})
    _compare(cfg, host, dev, sim)


def test_segmenter_letterbox_and_masks_on_device_frames(portrait, sim, tmp_path):
    from tests.test_models import _card, _yolo_graph

    _yolo_graph(tmp_path / "toy.onnx")
    host, dev = _frames(portrait, sim, sizes=((128, 128, 0), (128, 128, 1)), faces=False)
    cfg = Config(models=[ModelSpec(card=str(_card(tmp_path)), file=str(tmp_path / "toy.onnx"))])
    _compare(cfg, host, dev, sim)


def test_the_stand_in_is_strict(sim):
    """The check is only worth something if mixing host and device arrays fails (as it does
    with CuPy itself)."""
    d = sim.asarray(np.zeros((4, 4), np.uint8))
    for bad in (lambda: np.asarray(d), lambda: np.ascontiguousarray(d), lambda: d + np.ones((4, 4)),
                lambda: sim.xp.concatenate([d, np.zeros((1, 4), np.uint8)])):
        with pytest.raises(TypeError):
            bad()
    host = np.zeros((4, 4), np.uint8)
    with pytest.raises(TypeError):
        host[:] = d
