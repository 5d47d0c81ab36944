"""TensorRT plan cache: the sidecar decides reuse vs rebuild (plain Python, runs everywhere);
building itself needs TensorRT and a GPU (`trt`)."""
import json
import subprocess
import sys

import pytest

from engine.runtimes.trt_plan import Profile, find_plan, parse_shape, plan_paths

PROFILES = [Profile("images", (1, 3, 640, 640), (8, 3, 640, 640), (16, 3, 640, 640))]


def _plan(tmp_path, onnx, **kw):
    args = dict(precision="fp16", profiles=PROFILES, gpu="NVIDIA H100 80GB HBM3", trt_version="10.3.0")
    args.update(kw)
    return plan_paths(tmp_path / "plans", onnx, **args)


def test_plan_reused_only_when_everything_matches(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"model v1")
    plan, side = _plan(tmp_path, onnx)
    assert find_plan(plan, side) is None                        # nothing built yet
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"plan")
    plan.with_suffix(".json").write_text(json.dumps(side.__dict__))
    assert find_plan(plan, side) == plan
    for change in ({"gpu": "NVIDIA A100-SXM4-80GB"}, {"trt_version": "10.4.0"}, {"precision": "fp32"},
                   {"profiles": [Profile("images", (1, 3, 640, 640), (4, 3, 640, 640), (8, 3, 640, 640))]}):
        other_plan, other = _plan(tmp_path, onnx, **change)
        assert other_plan != plan and find_plan(plan, other) is None, change
    onnx.write_bytes(b"model v2")                               # a new ONNX file: new key
    new_plan, new = _plan(tmp_path, onnx)
    assert new_plan != plan and find_plan(plan, new) is None


def test_shapes_and_precision_are_validated(tmp_path):
    assert parse_shape("1x3x416x416") == (1, 3, 416, 416)
    with pytest.raises(ValueError):
        parse_shape("1x3xABC")
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(ValueError, match="precision"):
        _plan(tmp_path, onnx, precision="fp8")


def test_build_engine_without_tensorrt_says_why(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    res = subprocess.run([sys.executable, "build_engine.py", str(onnx), "--cache", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "TensorRT is not installed" in res.stderr
    res = subprocess.run([sys.executable, "-m", "engine.cli", "build-engine", str(onnx), "--precision", "fp16"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "TensorRT is not installed" in res.stderr


@pytest.mark.trt
@pytest.mark.gpu
def test_build_centerface_plan_and_reuse(tmp_path):
    from tests.conftest import needs_tensorrt_gpu
    needs_tensorrt_gpu()
    import onnx as onnx_lib

    from engine.models import load_card, resolve_model
    from engine.models.centerface import fix_centerface_graph
    from engine.runtimes.trt_plan import build_plan
    model = tmp_path / "cf.onnx"
    onnx_lib.save(fix_centerface_graph(onnx_lib.load(str(resolve_model(load_card("centerface")))), 640, 640), model)
    plan = build_plan(model, tmp_path / "plans", precision="fp16")
    mtime = plan.stat().st_mtime_ns
    assert build_plan(model, tmp_path / "plans", precision="fp16") == plan and plan.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("family", ["centerface", "nanodet", "yolo-seg"])
def test_calibration_batches_match_the_adapters_preprocessing(tmp_path, family, portrait):
    """INT8 calibration data is prepared exactly as the adapter feeds the model (no TensorRT needed)."""
    import numpy as np

    from engine.runtimes.trt_plan import calibration_batches
    from tests.conftest import jpeg_bytes, scene_with_faces
    for i in range(5):
        img, _ = scene_with_faces(portrait, h=240, w=320, faces=((20 * i, 20, 150),), seed=i)
        (tmp_path / f"{i}.jpg").write_bytes(jpeg_bytes(img, quality=95))
    batches = list(calibration_batches(tmp_path, family, (2, 3, 256, 320)))
    assert len(batches) == 2 and all(b.shape == (2, 3, 256, 320) and b.dtype == np.float32 for b in batches)
    first = batches[0][0]
    if family == "centerface":
        assert first.max() > 100 and np.all(first[:, 240:] == 0)            # RGB 0..255, padded below
    elif family == "nanodet":
        assert first.min() < -1 and abs(float(first.mean())) < 2           # BGR mean/std normalised
    else:
        assert 0 <= first.min() and first.max() <= 1                        # RGB / 255
    with pytest.raises(ValueError, match="no JPEG"):
        list(calibration_batches(tmp_path / "empty", family, (1, 3, 64, 64)))
