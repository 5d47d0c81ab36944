"""Issue 20: what a review of the GPU path against NVIDIA's APIs found, checked where no GPU is.

Stream ordering is modelled, not run: `_QueuedCopies` queues every copy on a "stream" and runs it
only when that stream is synchronised, as CUDA does for copies queued behind other work, and
`_ReusingPipe` decodes every batch into the same output buffers, as DALI's synchronous executor
may. A missing wait then shows as wrong pixels, which the model is checked to catch. The `gpu`
cases repeat the pointer checks with real CuPy and skip without a GPU.
"""
from __future__ import annotations

import importlib.machinery
import sys
import types
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from engine.codecs.dali import DaliDecoder
from engine.codecs.turbo import TurboDecoder
from engine.types import Job
from tests.conftest import jpeg_bytes

RNG = np.random.default_rng(20)


# --- 1. DALI: frames copied out of reused buffers are waited for ------------------------------
class _QueuedCopies:
    """CuPy as far as ordering goes: `array(copy=True)` queues the copy on the current stream;
    it runs when the stream is synchronised (the engine's later kernels would read it then)."""

    def __init__(self):
        self.pending = []
        self.cuda = SimpleNamespace(get_current_stream=lambda: self)

    def synchronize(self):
        for copy in self.pending:
            copy()
        self.pending.clear()

    def from_dlpack(self, buf):
        return buf                                   # a view of DALI's buffer, as DLPack gives

    def array(self, src, copy=True):
        dst = np.zeros_like(src)
        self.pending.append(lambda: np.copyto(dst, src))
        return dst


class _ReusingPipe:
    """DALI's synchronous executor as far as buffers go: each run() decodes into the buffers the
    previous run() returned."""

    def __init__(self):
        self.bufs, self.fed = {}, []

    def feed_input(self, name, arrays):
        self.fed = [a.tobytes() for a in arrays]

    def run(self):
        out = []
        for i, data in enumerate(self.fed):
            px = TurboDecoder().decode_pixels(data)
            if i not in self.bufs or self.bufs[i].shape != px.shape:
                self.bufs[i] = np.empty_like(px)
            self.bufs[i][...] = px
            out.append(self.bufs[i])
        return (out,)


def _images(n=8):
    return [jpeg_bytes(RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8), quality=92) for _ in range(n)]


def _mixed_decoder(cp):
    dec = DaliDecoder(device="cpu", batch=2)
    dec._cp, dec._pipe = cp, _ReusingPipe()          # the `mixed` path's copies, no GPU needed
    return dec


def _decode_all(dec, datas, tmp_path):
    job = Job(tmp_path / "x.jpg", "x.jpg", tmp_path / "o.jpg", None, tmp_path, 0, 0)
    return dec.decode_batch([(job, d) for d in datas])


def test_dali_frames_survive_the_next_batch_decoded_into_the_same_buffers(tmp_path):
    datas = _images()
    cp = _QueuedCopies()
    frames = _decode_all(_mixed_decoder(cp), datas, tmp_path)     # 4 runs of 2, buffers reused
    cp.synchronize()
    for f, d in zip(frames, datas):
        assert np.array_equal(f.pixels, TurboDecoder().decode_pixels(d))


def test_the_stream_model_catches_a_missing_wait(tmp_path):
    """Without the wait after the copies, earlier frames hold a later batch's pixels."""
    datas = _images()
    cp = _QueuedCopies()
    cp.cuda = SimpleNamespace(get_current_stream=lambda: SimpleNamespace(synchronize=lambda: None))
    frames = _decode_all(_mixed_decoder(cp), datas, tmp_path)
    cp.synchronize()                                                # the copies land late
    wrong = [not np.array_equal(f.pixels, TurboDecoder().decode_pixels(d)) for f, d in zip(frames, datas)]
    assert any(wrong[:-2]) and not any(wrong[-2:])


# --- 2. INT8 calibrator: a blocking copy into a buffer kept alive ---------------------------
def _fake_tensorrt(monkeypatch, version):
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = version
    trt.IInt8EntropyCalibrator2 = object
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


class _QueuedUploads(_QueuedCopies):
    """CuPy's `empty` and `ndarray.set` as far as ordering goes: uploads wait for a sync."""

    float32 = np.float32

    def empty(self, shape, dtype):
        cp = self
        a = np.zeros(shape, dtype)

        class _Dev:
            def __init__(self):
                self.shape, self.host = a.shape, a
                self.data = SimpleNamespace(ptr=a.__array_interface__["data"][0])

            def set(self, host):
                src = host.copy()                     # the host batch may go away after the call
                cp.pending.append(lambda: np.copyto(a, src))
        return _Dev()


def _batches(n=3):
    return [RNG.random((2, 3, 8, 8)).astype(np.float32) for _ in range(n)]


def test_calibrator_batches_are_on_the_device_when_tensorrt_gets_the_pointer(monkeypatch, tmp_path):
    from engine.runtimes import trt_plan

    _fake_tensorrt(monkeypatch, "10.3.0.26")
    cp = _QueuedUploads()
    monkeypatch.setattr("engine.device.cupy_module", lambda: cp)
    batches = _batches()
    cal = trt_plan.make_calibrator(iter(batches), tmp_path / "c.calib")
    assert cal.get_batch_size() == 2
    ptrs = []
    for b in batches:
        ptrs.append(cal.get_batch(["input"])[0])
        assert np.array_equal(cal.buf.host, b)       # landed before the pointer was handed out
    assert len(set(ptrs)) == 1 and ptrs[0] == cal.buf.data.ptr   # one buffer, kept by the calibrator
    assert cal.get_batch(["input"]) is None
    cal.write_calibration_cache(b"cache")
    assert cal.read_calibration_cache() == b"cache"


@pytest.mark.gpu
def test_calibrator_pointer_reads_back_on_another_stream(monkeypatch, tmp_path):
    """Real CuPy: what TensorRT would read through the pointer, on a stream of its own."""
    from kernels._xp import cupy_or_none

    cp = cupy_or_none()
    if cp is None:
        pytest.skip("needs an NVIDIA GPU with CuPy")
    from engine.runtimes import trt_plan

    _fake_tensorrt(monkeypatch, "10.3.0.26")
    batches = [RNG.random((8, 3, 640, 640)).astype(np.float32) for _ in range(4)]
    cal = trt_plan.make_calibrator(iter(batches), tmp_path / "c.calib")
    other = cp.cuda.Stream(non_blocking=True)
    for b in batches:
        ptr = cal.get_batch(["input"])[0]
        mem = cp.cuda.MemoryPointer(cp.cuda.UnownedMemory(ptr, b.nbytes, cal.buf), 0)
        with other:
            seen = cp.ndarray(b.shape, cp.float32, mem).copy()
        assert np.array_equal(seen.get(stream=other), b)


# --- 6. TensorRT 11: no weak typing ---------------------------------------------------------
def test_precision_by_tensorrt_version():
    from engine.runtimes.trt_plan import check_precision

    for p in ("fp32", "fp16", "int8"):
        check_precision("10.3.0.26", p)
    check_precision("11.4.0.106", "fp32")
    for p in ("fp16", "int8"):
        with pytest.raises(ValueError, match=r"TensorRT 11\.4\.0\.106 builds strongly typed.*precision: fp32"):
            check_precision("11.4.0.106", p)
    with pytest.raises(ValueError, match="precision must be one of"):
        check_precision("10.3", "fp8")


def test_tensorrt_11_refuses_fp16_and_int8_at_start_up(monkeypatch, tmp_path):
    from engine.runtimes import create_runtime, trt_plan

    _fake_tensorrt(monkeypatch, "11.4.0.106")
    with pytest.raises(ValueError, match="strongly typed"):
        create_runtime("tensorrt", device="cuda", cache=tmp_path)                 # fp16 by default
    assert create_runtime("tensorrt", device="cuda", cache=tmp_path, precision="fp32").precision == "fp32"
    with pytest.raises(ValueError, match="strongly typed"):
        trt_plan.make_calibrator(iter(_batches()), tmp_path / "c.calib")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"x")
    monkeypatch.setattr(trt_plan, "gpu_name", lambda: pytest.fail("the GPU was touched before the check"))
    with pytest.raises(ValueError, match="strongly typed"):
        trt_plan.build_plan(onnx_file, tmp_path, precision="fp16")


def test_missing_tensorrt_says_where_to_get_it(monkeypatch):
    from engine.runtimes.trt_plan import tensorrt_module

    monkeypatch.setitem(sys.modules, "tensorrt", None)          # import fails
    with pytest.raises(ImportError, match=r"TensorRT is not installed.*tensorrt-cu12.*NVIDIA's package index"):
        tensorrt_module()


# --- 4. ONNX Runtime: a CUDA session that fell back to the CPU fails ------------------------
def _fake_onnxruntime(monkeypatch, session_providers):
    ort = types.ModuleType("onnxruntime")
    ort.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    ort.set_default_logger_severity = lambda level: None
    ort.GraphOptimizationLevel = SimpleNamespace(ORT_ENABLE_ALL=99)

    class SessionOptions:
        def add_session_config_entry(self, key, value):
            pass

    class InferenceSession:
        def __init__(self, src, sess_options=None, providers=None):
            self.asked = providers

        def get_providers(self):
            return list(session_providers)
    ort.SessionOptions, ort.InferenceSession = SessionOptions, InferenceSession
    monkeypatch.setitem(sys.modules, "onnxruntime", ort)


def test_ort_cuda_session_running_on_the_cpu_fails_loudly(monkeypatch):
    from engine.runtimes.onnxruntime import OrtRuntime

    _fake_onnxruntime(monkeypatch, ["CPUExecutionProvider"])     # the CUDA provider did not load
    rt = OrtRuntime(device="cuda")
    with pytest.raises(RuntimeError, match=r"could not start its CUDA provider.*\['CPUExecutionProvider'\]"):
        rt.session(b"graph")


def test_ort_cuda_session_on_the_cuda_provider_is_bound_to_cupy(monkeypatch):
    from engine.runtimes.cuda import CupyBoundSession
    from engine.runtimes.onnxruntime import OrtRuntime
    from tests import cupy_sim

    _fake_onnxruntime(monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr("engine.runtimes.cuda.cupy_module", lambda: cupy_sim.install(monkeypatch))
    sess = OrtRuntime(device="cuda").session(b"graph")
    assert isinstance(sess, CupyBoundSession) and sess.session.asked[0] == "CUDAExecutionProvider"


# --- 8. One dynamic height x width plan for the crops, when asked for ---------------------------
def test_hw_profile_is_validated_and_read_from_the_environment(monkeypatch, tmp_path):
    from engine.runtimes import create_runtime
    from engine.runtimes.tensorrt import HW_PROFILE_ENV, parse_hw_profile

    assert parse_hw_profile(None, "x") is None and parse_hw_profile("", "x") is None
    assert parse_hw_profile("160,384,640", "x") == (160, 384, 640) == parse_hw_profile((160, 384, 640), "x")
    for bad in ("640,384,160", "1,2", "a,b,c", (0, 1, 2)):
        with pytest.raises(ValueError, match="MIN,OPT,MAX"):
            parse_hw_profile(bad, "x")
    monkeypatch.delenv(HW_PROFILE_ENV, raising=False)
    assert create_runtime("tensorrt", device="cuda", cache=tmp_path, precision="fp32").hw_profile is None
    monkeypatch.setenv(HW_PROFILE_ENV, "160,384,640")
    assert create_runtime("tensorrt", device="cuda", cache=tmp_path, precision="fp32").hw_profile == (160, 384, 640)
    monkeypatch.setenv(HW_PROFILE_ENV, "640")
    with pytest.raises(ValueError, match=HW_PROFILE_ENV):
        create_runtime("tensorrt", device="cuda", cache=tmp_path, precision="fp32")


def _centerface(h, w, batch=None):
    from engine.models import load_card, resolve_model
    from engine.models.centerface import fix_centerface_graph

    return fix_centerface_graph(onnx.load(str(resolve_model(load_card("centerface")))), h, w, batch)


def test_dynamic_hw_centerface_graph_computes_what_the_per_size_graphs_compute():
    """ONNX Runtime is the oracle: the one graph for every crop size against each fixed one."""
    import onnxruntime as ort

    from engine.runtimes.tensorrt import dynamic_hw_graph

    dyn = dynamic_hw_graph(_centerface(256, 320).SerializeToString(), (160, 384, 640))
    assert dynamic_hw_graph(_centerface(256, 320).SerializeToString(), (160, 384, 640)) == \
        dynamic_hw_graph(_centerface(160, 640).SerializeToString(), (160, 384, 640))   # one plan for both
    assert dynamic_hw_graph(_centerface(704, 320).SerializeToString(), (160, 384, 640)) is None  # beyond max
    one = ort.InferenceSession(dyn, providers=["CPUExecutionProvider"])
    for h, w in ((160, 160), (256, 384)):
        x = (RNG.random((2, 3, h, w)) * 255).astype(np.float32)
        fixed = ort.InferenceSession(_centerface(h, w).SerializeToString(), providers=["CPUExecutionProvider"])
        for a, b in zip(one.run(None, {"input.1": x}), fixed.run(None, {"input.1": x})):
            assert a.shape == b.shape and np.allclose(a, b, atol=1e-4)


def test_crops_share_one_plan_and_one_session_with_an_hw_profile(monkeypatch, tmp_path):
    from engine.runtimes import create_runtime, tensorrt

    built = []

    def fake_build(path, cache, *, precision, profiles, calibrator):
        built.append((path, tuple(profiles)))
        return tmp_path / f"{path.stem}.plan"
    monkeypatch.setattr(tensorrt, "build_plan", fake_build)
    monkeypatch.setattr(tensorrt, "TrtSession", lambda plan: SimpleNamespace(plan=plan))
    monkeypatch.delenv(tensorrt.HW_PROFILE_ENV, raising=False)
    rt = create_runtime("tensorrt", device="cuda", cache=tmp_path, precision="fp32", max_batch=8,
                        hw_profile=(160, 384, 640))
    a = rt.session(_centerface(256, 320).SerializeToString(), family="centerface")
    b = rt.session(_centerface(640, 160).SerializeToString(), family="centerface")
    full = rt.session(_centerface(2048, 2464).SerializeToString(), family="centerface")
    assert a is b and full is not a and len({p for p, _ in built}) == 2
    (crop_profile,) = built[0][1]
    assert (crop_profile.min, crop_profile.opt, crop_profile.max) == ((1, 3, 160, 160), (8, 3, 384, 384),
                                                                      (8, 3, 640, 640))
    other = rt.session(_centerface(256, 320).SerializeToString(), family="yolo-det")   # not listed: per size
    assert other is not a
