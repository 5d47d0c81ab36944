"""CPU speed: the INT8 CenterFace build (engine.models.quantize) and when it is used, the
runtime `auto` choice between ONNX Runtime and OpenVINO, and the host fast paths of the
cascade's coarse view and the model input (checked against their plain NumPy definitions)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.config import load_config
from engine.models import ModelNotFound, load_card
from engine.models.centerface import CenterFaceAdapter
from engine.models.quantize import _hits, _scene, build_centerface_int8
from engine.models.resolve import resolve_model
from engine.runtimes import create_runtime
from engine.slots import build_models
from kernels import downscale_mean


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("shape", [(37, 53, 3), (64, 96, 3), (31, 45, 1)])
def test_downscale_mean_of_uint8_is_the_rounded_block_mean(factor, shape):
    src = np.random.default_rng(factor).integers(0, 256, shape, dtype=np.uint8)
    h, w = shape[0] // factor * factor, shape[1] // factor * factor
    blocks = src[:h, :w].astype(np.int64).reshape(h // factor, factor, w // factor, factor, shape[2])
    want = (blocks.sum((1, 3)) + factor * factor // 2) // (factor * factor)
    got = downscale_mean(src, factor)
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.array_equal(got, want)
    as_float = downscale_mean(src.astype(np.float32), factor)       # float input: exact means
    assert np.allclose(as_float, blocks.sum((1, 3)) / factor ** 2, atol=1e-4)


def test_centerface_blob_is_the_zero_padded_chw_float_image():
    rng = np.random.default_rng(0)
    views = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8) for _ in range(2)]
    blob = CenterFaceAdapter.blob(views, 64, 96)
    want = np.zeros((2, 3, 64, 96), np.float32)
    for i, v in enumerate(views):
        want[i, :, :50, :70] = v.transpose(2, 0, 1)
    assert blob.dtype == np.float32 and np.array_equal(blob, want)


def _runtime(precision):
    return create_runtime("onnxruntime", device="cpu", threads=2, precision=precision)


def _slot_file(precision, monkeypatch, vnni=True):
    import engine.models.int8 as q
    monkeypatch.setattr(q, "cpu_int8_dot", lambda: vnni)
    cfg, _ = load_config(None, overrides={"models": [{"card": "centerface-fast"}]})
    slots, _ = build_models(cfg, _runtime(precision))
    path = slots[0].adapter.model_path
    # With the INT8 build the cascade proposes candidates at the card's lower INT8 threshold.
    card = load_card("centerface-fast")
    want = card.cascade.int8_threshold if path.name == card.int8_file else card.cascade.threshold
    assert slots[0].card.cascade.threshold == want
    return path


@pytest.fixture(scope="module")
def int8_dir(tmp_path_factory):
    """A models cache of this module's own: the INT8 build made here is seen by these tests
    only (the others keep running the fp32 file, whatever this CPU has)."""
    d = tmp_path_factory.mktemp("int8-models")
    mp = pytest.MonkeyPatch()
    mp.setenv("SLADD_MODELS_DIR", str(d))
    yield d
    mp.undo()


@pytest.fixture(scope="module")
def int8_build(int8_dir):
    card = load_card("centerface-fast")
    fp32 = resolve_model(card)
    return build_centerface_int8(card, fp32, int8_dir / card.int8_file), fp32


def test_precision_picks_the_int8_build_only_where_asked_and_present(int8_build, monkeypatch, int8_dir):
    int8, fp32 = int8_build
    record = json.loads((int8_dir / "centerface.int8.source.json").read_text())
    # The build's own check ran the run's detectors with both files and found the same faces.
    for card in ("centerface", "centerface-fast"):
        assert record["check"][card]["int8"] == record["check"][card]["fp32"] >= 24
    assert _slot_file("auto", monkeypatch, vnni=True) == int8
    assert _slot_file("auto", monkeypatch, vnni=False) == fp32      # no 8-bit dot products: fp32
    assert _slot_file("int8", monkeypatch, vnni=False) == int8      # asked for explicitly
    assert _slot_file("fp32", monkeypatch) == fp32
    # A build that no longer matches its record (or its fp32 file) is never used.
    saved = int8.read_bytes()
    try:
        int8.write_bytes(saved + b"\0")
        assert _slot_file("auto", monkeypatch) == fp32
        with pytest.raises(ModelNotFound, match="sladd models fetch centerface-fast"):
            _slot_file("int8", monkeypatch)
    finally:
        int8.write_bytes(saved)


def test_int8_cascade_finds_every_face_of_24_to_160_px_the_fp32_cascade_finds(int8_build, monkeypatch):
    """Held-out scenes (seeds the calibration and the build check never saw), the run's whole
    face cascade: INT8 loses no face, and its boxes are where fp32 puts them."""
    from engine.detect import Detector

    import engine.models.int8 as q
    monkeypatch.setattr(q, "cpu_int8_dot", lambda: True)
    cfg, _ = load_config(None, overrides={"models": [{"card": "centerface-fast"}]})
    found = _held_out_faces({p: Detector(cfg, *build_models(cfg, _runtime(p))) for p in ("fp32", "int8")},
                            better="int8", than="fp32")
    assert found["int8"] >= found["fp32"] >= 18          # 21 faces, the 24 px ones are hard for both


def _held_out_faces(detectors: dict, better: str, than: str) -> dict:
    """Faces each detector finds in three held-out scenes (faces of 24-160 px); in each scene
    `better` finds at least what `than` finds."""
    from PIL import Image

    from engine.demo import sample_portrait
    from engine.types import Frame

    portrait = Image.open(sample_portrait()).convert("RGB")
    found = dict.fromkeys(detectors, 0)
    for seed in (201, 202, 203):
        img, faces = _scene(seed, portrait, hw=(2048, 2448))
        frame = Frame(job=None, data=b"", pixels=img, scale=1.0, full_size=img.shape[:2], orientation=1,
                      segments=[], quality=None, subsampling=2)
        hits = {p: sum(_hits(d(frame), faces)) for p, d in detectors.items()}
        for p in hits:
            found[p] += hits[p]
        assert hits[better] >= hits[than]
    return found


def test_int8_cascade_with_openvinos_large_passes_finds_what_onnx_runtime_finds(int8_build, monkeypatch):
    """engine.runtime auto on a CPU where OpenVINO won: the INT8 candidate passes run there,
    calibrated (card int8_threshold) on ONNX Runtime's INT8 output. Held-out scenes with faces
    of 24-160 px: no face ONNX Runtime's cascade finds is lost."""
    pytest.importorskip("openvino")
    from engine.detect import Detector
    from engine.runtimes.ov_passes import LargePasses

    import engine.models.int8 as q
    monkeypatch.setattr(q, "cpu_int8_dot", lambda: True)
    cfg, _ = load_config(None, overrides={"models": [{"card": "centerface-fast"}]})
    used = []

    def large(model_path, graph, view=None):
        used.append(Path(model_path).name)
        return LargePasses(graph, threads=2, streams=1)
    ov_runtime = _runtime("int8")
    ov_runtime.large_passes = large
    detectors = {"onnxruntime": Detector(cfg, *build_models(cfg, _runtime("int8"))),
                 "openvino": Detector(cfg, *build_models(cfg, ov_runtime))}
    assert used == ["centerface.int8.onnx"]
    found = _held_out_faces(detectors, better="openvino", than="onnxruntime")
    assert detectors["openvino"].slots[0].adapter._large._compiled      # the coarse passes ran there
    assert found["openvino"] >= found["onnxruntime"] >= 18


# --- the INT8 plate model (engine.models.quantize_yolo) -------------------------------------------
def _real_model(name):
    import os
    from pathlib import Path
    p = Path(os.environ.get("SLADD_REAL_MODELS", Path.home() / ".cache/sladd/models")) / name
    return p if p.is_file() else None


def _plate_samples():
    """The sample photographs, where they already are (the plate benchmark's `.cache/plates`, or
    engine.models.plate_samples' cache): the tests download nothing."""
    from pathlib import Path

    from engine.models.plate_samples import SamplesUnavailable, sample_dir
    for given in (None, Path(__file__).resolve().parent.parent / ".cache" / "plates"):
        try:
            return sample_dir(given, download=False)
        except SamplesUnavailable:
            continue
    return None


@pytest.fixture(scope="module")
def plates_int8_build(int8_dir):
    """plates.onnx (and NanoDet, for the vehicles the plate search looks near) from the real models
    cache into this module's own, and its INT8 build made there."""
    from engine.models.quantize_yolo import build_yolo_int8

    plates, samples = _real_model("plates.onnx"), _plate_samples()
    if plates is None or samples is None:
        pytest.skip("needs `sladd models fetch plates` and the plate sample photographs "
                    "(`python -m benchmarks.bench_plates` or `sladd models fetch plates` fetch them)")
    for name in ("plates.onnx", "nanodet.onnx"):
        if _real_model(name) and not (int8_dir / name).exists():
            (int8_dir / name).symlink_to(_real_model(name))
    card = load_card("plates")
    fp32 = int8_dir / "plates.onnx"
    return build_yolo_int8(card, fp32, int8_dir / card.int8_file, samples=samples), fp32, samples


def _plates_file(precision, monkeypatch, vnni=True):
    import engine.models.int8 as q
    monkeypatch.setattr(q, "cpu_int8_dot", lambda: vnni)
    cfg, _ = load_config(None, overrides={"models": [{"card": "plates"}]})
    slots, _ = build_models(cfg, _runtime(precision))
    return slots[0].adapter.model_path


def test_plates_int8_build_passes_its_check_is_picked_by_precision_and_runs_at_every_size(plates_int8_build,
                                                                                          monkeypatch, int8_dir):
    import onnx
    import onnxruntime as ort

    from engine.models.yolo_det import _set_input_dims

    int8, fp32, _ = plates_int8_build
    check = json.loads((int8_dir / "plates.int8.source.json").read_text())["check"]["plates"]
    # The build's own check: the run's plate search found with INT8 every plate fp32 found, no more FPs.
    assert check["int8"] == check["fp32"] >= 8 and check["fp_int8"] <= check["fp_fp32"]
    assert _plates_file("auto", monkeypatch, vnni=True) == int8
    assert _plates_file("auto", monkeypatch, vnni=False) == fp32
    assert _plates_file("int8", monkeypatch, vnni=False) == int8
    assert _plates_file("fp32", monkeypatch) == fp32
    # Quantised as exported (dynamic sizes): it runs at the crop buckets and the full-frame size,
    # as it is and with its input dims fixed per size (runtimes with one graph per size).
    proto = onnx.load(str(int8))
    dynamic = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    for hw in ((160, 160), (320, 480), (544, 640)):
        m = onnx.ModelProto()
        m.CopyFrom(proto)
        _set_input_dims(m, "images", [1, 3, *hw])
        fixed = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((1, 3, *hw), np.float32)
        a, b = dynamic.run(None, {"images": x})[0], fixed.run(None, {"images": x})[0]
        assert a.shape == (1, 5, hw[0] * hw[1] // 64 * 21 // 16) and np.allclose(a, b, atol=1e-4)


def test_int8_plate_search_finds_every_plate_the_fp32_one_finds_on_held_out_images(plates_int8_build, monkeypatch):
    """Composites neither the calibration nor the build check saw (other scales and places), the
    run's plate search as `engine.precision` picks it: INT8 loses no plate, adds no false positive."""
    from engine.detect import Detector
    from engine.models.plate_samples import PLATE_PHOTOS
    from engine.models.quantize_yolo import _load, compose, plates_found
    from engine.types import Frame

    import engine.models.int8 as q
    _, _, samples = plates_int8_build
    monkeypatch.setattr(q, "cpu_int8_dot", lambda: True)
    models = [{"card": "nanodet", "classes": []}, {"card": "plates"}] if _real_model("nanodet.onnx") else \
        [{"card": "plates"}]
    cfg, _ = load_config(None, overrides={"models": models, "plates": {"full_frame_tiles": len(models) == 1}})
    detectors = {p: Detector(cfg, *build_models(cfg, _runtime(p))) for p in ("fp32", "int8")}
    assert detectors["int8"].slots[-1].adapter.model_path.name == "plates.int8.onnx"
    found = {"fp32": 0, "int8": 0}
    fps = {"fp32": 0, "int8": 0}
    for name, scale, seed in (("fastalpr_test_image.png", 0.6, 61), ("oim_car_image.webp", 0.3, 61),
                              ("licenseplate_motion.jpg", 1.5, 62), ("fastalpr_test_image.png", 1.5, 63),
                              ("oim_car_image.webp", 1.0, 64)):
        img, truths, _ = compose(_load(samples, name), PLATE_PHOTOS[name], scale, seed)
        frame = Frame(job=None, data=b"", pixels=img, scale=1.0, full_size=img.shape[:2], orientation=1,
                      segments=[], quality=None, subsampling=2)
        hits = {}
        for p, d in detectors.items():
            hits[p], fp = plates_found(d(frame), truths)
            found[p] += sum(hits[p])
            fps[p] += fp
        assert all(b for a, b in zip(hits["fp32"], hits["int8"]) if a), name
    assert found["int8"] >= found["fp32"] >= 4 and fps["int8"] <= fps["fp32"]


def test_plates_stay_fp32_with_a_clear_line_without_the_sample_photographs(monkeypatch, tmp_path, caplog):
    import logging

    from engine.models.fetch import fetch

    plates = _real_model("plates.onnx")
    if plates is None:
        pytest.skip("needs `sladd models fetch plates`")
    models = tmp_path / "models"
    models.mkdir()
    (models / "plates.onnx").symlink_to(plates)
    monkeypatch.setenv("SLADD_MODELS_DIR", str(models))
    monkeypatch.setenv("SLADD_CACHE_DIR", str(tmp_path / "cache"))       # no samples there
    monkeypatch.delenv("SLADD_PLATE_SAMPLES", raising=False)
    with caplog.at_level(logging.INFO, logger="sladd"):
        assert fetch("plates", allow_pip=False) == models / "plates.onnx"
    assert "model plates: no INT8 build (no plate sample photographs in" in caplog.text
    assert "the fp32 model is used" in caplog.text and not (models / "plates.int8.onnx").exists()
