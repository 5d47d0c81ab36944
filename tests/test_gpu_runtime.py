"""GPU runtimes against ONNX Runtime on the CPU (the oracle). Skip, with a reason, without a GPU."""
import numpy as np
import onnx
import pytest

from engine.device import choose_runtime
from engine.models import load_card, resolve_model
from engine.models.centerface import fix_centerface_graph
from engine.runtimes import create_runtime
from kernels._xp import cupy_or_none
from tests.conftest import needs_tensorrt_gpu


def _graph():
    return fix_centerface_graph(onnx.load(str(resolve_model(load_card("centerface")))), 256, 320).SerializeToString()


def _input():
    return {"input.1": (np.random.default_rng(0).random((1, 3, 256, 320)) * 255).astype(np.float32)}


def test_runtime_choice_without_a_gpu():
    assert choose_runtime("auto", "cpu") == "onnxruntime"
    with_trt = {"cupy": True, "tensorrt": True, "onnxruntime-cuda": True, "dali": False}
    assert choose_runtime("auto", "cuda", with_trt) == "tensorrt"
    assert choose_runtime("auto", "cuda", {**with_trt, "tensorrt": False}) == "onnxruntime"
    assert choose_runtime("onnxruntime", "cuda", with_trt) == "onnxruntime"
    with pytest.raises(RuntimeError, match="needs a GPU"):
        choose_runtime("tensorrt", "cpu")


@pytest.mark.gpu
def test_ort_cuda_with_cupy_bound_inputs_matches_cpu():
    import onnxruntime as ort
    if cupy_or_none() is None or "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs an NVIDIA GPU, CuPy and onnxruntime-gpu")
    ref = create_runtime("onnxruntime", device="cpu").session(_graph()).run(None, _input())
    got = create_runtime("onnxruntime", device="cuda").session(_graph()).run(None, _input())
    for a, b in zip(ref, got):
        assert np.allclose(a, b, atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.trt
def test_tensorrt_fp16_plan_matches_cpu(tmp_path):
    needs_tensorrt_gpu()
    ref = create_runtime("onnxruntime", device="cpu").session(_graph()).run(None, _input())
    sess = create_runtime("tensorrt", device="cuda", cache=tmp_path).session(_graph())
    got = sess.run(None, _input())
    heat_ref, heat = ref[0], got[0]
    assert heat.shape == heat_ref.shape and np.abs(heat - heat_ref).max() < 0.02      # FP16 tolerance


def _components(**kw):
    c = {"cupy": False, "tensorrt": False, "onnxruntime-cuda": False, "dali": False}
    c.update(kw)
    return c


@pytest.mark.parametrize("have,expect", [
    ({}, "cpu"),
    ({"cupy": True}, "cpu"),                                   # a GPU but no runtime for it
    ({"tensorrt": True, "onnxruntime-cuda": True}, "cpu"),     # runtimes but no usable device
    ({"cupy": True, "tensorrt": True}, "cuda"),
    ({"cupy": True, "onnxruntime-cuda": True, "dali": True}, "cuda"),
])
def test_device_auto_picks_cuda_only_when_usable_and_says_why(have, expect, caplog):
    from engine.device import choose_device

    with caplog.at_level("INFO", logger="sladd"):
        assert choose_device("auto", _components(**have)) == expect
    assert f"device auto -> {expect}" in caplog.text and "cupy: " in caplog.text
    assert choose_device("cpu", _components(**have)) == "cpu"


def test_device_cuda_names_what_is_missing():
    from engine.device import choose_device

    with pytest.raises(RuntimeError, match="usable NVIDIA GPU") as e:
        choose_device("cuda", _components(tensorrt=True))
    assert "GPU model runtime" not in str(e.value)
    with pytest.raises(RuntimeError, match="GPU model runtime: TensorRT") as e:
        choose_device("cuda", _components(cupy=True, dali=True))
    assert "usable NVIDIA GPU" not in str(e.value)
    assert choose_device("cuda", _components(cupy=True, **{"onnxruntime-cuda": True})) == "cuda"


def test_decoder_auto_is_dali_into_gpu_memory_on_cuda_only():
    from engine.device import choose_decoder

    assert choose_decoder("auto", "cuda", _components(cupy=True, tensorrt=True, dali=True)) == ("dali", "mixed")
    assert choose_decoder("auto", "cuda", _components(cupy=True, tensorrt=True)) == ("turbojpeg", "mixed")
    assert choose_decoder("auto", "cpu", _components(dali=True)) == ("turbojpeg", "cpu")
    assert choose_decoder("dali", "cpu", _components(dali=True)) == ("dali", "cpu")


def test_tensorrt_int8_needs_calibration_images_and_plans_follow_the_cache_settings(monkeypatch, tmp_path):
    from engine.models.resolve import models_dir, plans_dir

    with pytest.raises(ValueError, match="calibration_images"):
        create_runtime("tensorrt", device="cuda", precision="int8")
    monkeypatch.delenv("SLADD_MODELS_DIR", raising=False)
    monkeypatch.delenv("SLADD_PLANS_DIR", raising=False)
    monkeypatch.delenv("SLADD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert plans_dir() == tmp_path / "xdg" / "sladd" / "plans" and models_dir() == tmp_path / "xdg" / "sladd" / "models"
    monkeypatch.setenv("SLADD_CACHE_DIR", str(tmp_path / "c"))        # Dockerfile.gpu: /cache
    assert plans_dir() == tmp_path / "c" / "plans"
    assert create_runtime("tensorrt", device="cuda").cache == tmp_path / "c" / "plans"
    monkeypatch.setenv("SLADD_PLANS_DIR", str(tmp_path / "p"))
    assert plans_dir() == tmp_path / "p"


def _graph_with_input(tmp_path, dims):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, dims)
    g = helper.make_graph([helper.make_node("Relu", ["images"], ["out"])], "g", [x], [y])
    p = tmp_path / f"g{len(list(tmp_path.glob('*.onnx')))}.onnx"
    onnx.save(helper.make_model(g), str(p))
    return p


def test_tensorrt_profiles_cover_a_dynamic_batch_and_refuse_other_dynamic_dims(tmp_path):
    rt = create_runtime("tensorrt", device="cuda", cache=tmp_path / "plans", max_batch=6)
    assert rt.profiles(_graph_with_input(tmp_path, [1, 3, 64, 64])) == []
    (p,) = rt.profiles(_graph_with_input(tmp_path, ["batch", 3, 64, 96]))
    assert (p.name, p.min, p.opt, p.max) == ("images", (1, 3, 64, 96), (6, 3, 64, 96), (6, 3, 64, 96))
    with pytest.raises(ValueError, match="fixed input size"):
        rt.profiles(_graph_with_input(tmp_path, ["batch", 3, "h", "w"]))


def test_centerface_dynamic_batch_graph_for_tensorrt(tmp_path):
    """TensorRT gets one CenterFace graph per size with a dynamic batch (profile 1..batch_size);
    that graph computes what the fixed-batch graphs compute (ONNX Runtime as the oracle)."""
    import onnxruntime as ort

    m = onnx.load(str(resolve_model(load_card("centerface"))))
    dyn = fix_centerface_graph(m, 256, 320, None)
    x = (np.random.default_rng(0).random((3, 3, 256, 320)) * 255).astype(np.float32)
    got = ort.InferenceSession(dyn.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input.1": x})
    one = ort.InferenceSession(fix_centerface_graph(m, 256, 320, 1).SerializeToString(),
                               providers=["CPUExecutionProvider"])
    for i in range(3):
        for a, b in zip(got, one.run(None, {"input.1": x[i:i + 1]})):
            assert np.allclose(a[i:i + 1], b, atol=1e-4)
    onnx.save(dyn, str(tmp_path / "cf.onnx"))
    (p,) = create_runtime("tensorrt", device="cuda", cache=tmp_path, max_batch=4).profiles(tmp_path / "cf.onnx")
    assert p.min == (1, 3, 256, 320) and p.max == (4, 3, 256, 320)
