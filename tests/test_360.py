"""360° images: an object cut by the left/right seam is seen whole and masked on both sides."""
import numpy as np
from PIL import Image

from engine.cli import main
from engine.config import load_config
from engine.detect import Detector, build_models
from engine.demo import paste_portrait, road_scene
from kernels import tile_grid
from engine.models import create_adapter, load_card, resolve_model
from engine.runtimes import create_runtime
from engine.types import Frame, Job
from tests.conftest import jpeg_bytes


def _seam_image(portrait, h=600, w=1800):
    """A panorama with a person whose face is split by the seam (left half on the right edge)."""
    canvas = road_scene(h, w + 400, seed=7)
    paste_portrait(canvas, portrait, w - 170, 150, 400)    # portrait ~341 px wide across x = w
    img = canvas[:, :w].copy()
    img[:, :400] = canvas[:, w:w + 400]                   # what passed the seam comes in on the left
    return img


def _cfg(tmp_path, **extra):
    f = tmp_path / "360.yml"
    f.write_text('image_type: "360"\nremote_json: false\nremote_preview: false\nlocal_json: false\n'
                 "processing_error_email: false\nfinished_email: false\nuncaught_exception_email: false\n"
                 "email_attach_log_file: false\n" + "".join(f"{k}: {v}\n" for k, v in extra.items()))
    return f


def test_face_across_the_seam_is_masked_on_both_sides(tmp_path, portrait):
    img = _seam_image(portrait)
    h, w = img.shape[:2]
    card = load_card("centerface")
    detector = create_adapter(card, resolve_model(card), create_runtime("onnxruntime", device="cpu"))
    rolled = np.roll(img, w // 2, axis=1)                  # seam in the middle: the face is whole
    assert len(detector(rolled, 1.0).boxes) == 1
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    (inp / "pano.jpg").write_bytes(jpeg_bytes(img, quality=92))
    assert main(["run", "-i", str(inp), "-o", str(out), "-k", str(_cfg(tmp_path)), "-q"]) == 0
    res = np.asarray(Image.open(out / "pano.jpg").convert("RGB")).astype(int)
    src = np.asarray(Image.open(inp / "pano.jpg").convert("RGB")).astype(int)
    changed = np.abs(res - src).max(-1) > 30
    assert changed[:, w - 120:].any() and changed[:, :120].any(), "both sides of the seam must be masked"
    assert len(detector(np.roll(res.astype(np.uint8), w // 2, axis=1), 1.0).boxes) == 0


def test_360_cutouts_see_the_seam_face_whole(tmp_path, portrait):
    img = _seam_image(portrait)
    cfg, _ = load_config(_cfg(tmp_path))
    assert cfg.use_cutouts                                  # the 360 profile's reference default
    rt = create_runtime("onnxruntime", device="cpu")
    det = Detector(cfg, *build_models(cfg, rt))
    job = Job(path=None, key="k", output=None, archive=None, error_dir=None, size=0, mtime_ns=0)
    frame = Frame(job=job, data=b"", pixels=img, scale=1.0, full_size=img.shape[:2], orientation=1, segments=[],
                  quality=92, subsampling=2)
    assert any(v.x + v.w > img.shape[1] for v in det.views(*img.shape[:2]) if not v.full)
    d = det(frame)
    w = img.shape[1]
    whole = [b for b in d.boxes if b[0] < w < b[2] and b[2] - b[0] > 80]   # kept whole, unwrapped x
    assert whole, d.boxes


def test_mirrored_pass_agrees_with_the_plain_pass(tmp_path, portrait):
    from engine.config import Config, ModelSpec
    px = np.asarray(portrait)
    rt = create_runtime("onnxruntime", device="cpu")
    job = Job(path=None, key="k", output=None, archive=None, error_dir=None, size=0, mtime_ns=0)
    frame = Frame(job=job, data=b"", pixels=px, scale=1.0, full_size=px.shape[:2], orientation=1, segments=[],
                  quality=92, subsampling=2)
    plain = Config(models=[ModelSpec(card="centerface")])
    tta = Config(models=[ModelSpec(card="centerface", tta_flip=True)])
    a = Detector(plain, *build_models(plain, rt))(frame)
    b = Detector(tta, *build_models(tta, rt))(frame)
    assert len(a) == 1 and len(b) == 2 and b.counts() == {"face": 1}
    assert np.abs(b.boxes[0] - b.boxes[1]).max() < 12      # the mirrored box maps back onto the face


def test_mirrored_pass_with_envelope_merge_draws_one_enclosing_box(portrait):
    from engine.config import Config, ModelSpec
    px = np.asarray(portrait)
    rt = create_runtime("onnxruntime", device="cpu")
    job = Job(path=None, key="k", output=None, archive=None, error_dir=None, size=0, mtime_ns=0)
    frame = Frame(job=job, data=b"", pixels=px, scale=1.0, full_size=px.shape[:2], orientation=1, segments=[],
                  quality=92, subsampling=2)
    raw_cfg = Config(models=[ModelSpec(card="centerface", tta_flip=True)])
    env_cfg = Config(models=[ModelSpec(card="centerface", tta_flip=True, merge="envelope")])
    raw = Detector(raw_cfg, *build_models(raw_cfg, rt))(frame)
    env = Detector(env_cfg, *build_models(env_cfg, rt))(frame)
    assert len(env) == 1 and env.counts() == {"face": 1}
    assert np.allclose(env.boxes[0, :2], raw.boxes[:, :2].min(0), atol=1e-3)
    assert np.allclose(env.boxes[0, 2:], raw.boxes[:, 2:].max(0), atol=1e-3)


# --- the tiled cascade, the model-shaped windows and the frame budget (issue 19) -------------------

def _frame(img):
    job = Job(path=None, key="k", output=None, archive=None, error_dir=None, size=0, mtime_ns=0)
    return Frame(job=job, data=b"", pixels=img, scale=1.0, full_size=img.shape[:2], orientation=1, segments=[],
                 quality=92, subsampling=2)


def _faces(d, w):
    """Face centres (x in [0, W)) of the counted detections."""
    b = d.boxes[d.counted]
    return sorted((float(((x0 + x1) / 2) % w), float((y0 + y1) / 2)) for x0, y0, x1, y1 in b)


def test_tile_grid_covers_the_circle_with_the_overlap_and_bounded_tiles():
    from kernels import tile_grid
    for h, w, o, area in ((2000, 4000, 64, 600_000), (300, 900, 64, 60_000), (517, 1331, 40, 90_000)):
        tiles = tile_grid(h, w, o, area, wrap=True)
        assert len({t[2:] for t in tiles}) == 1                  # one shape: one session, batchable
        th, tw = tiles[0][2:]
        assert th * tw <= area and tw % 32 == 0
        seen = np.zeros((h, w), np.int32)
        for y, x, th, tw in tiles:
            cols = np.arange(x, x + tw) % w
            seen[y:y + th][:, cols] += 1
        assert seen.min() >= 1                                   # every pixel, the seam included
        # Any o x o square (round the seam too) lies whole inside some tile.
        for cy, cx in ((0, w - o // 2), (h - o, w - 1), (h // 2, w // 3)):
            assert any(y <= cy and cy + o <= y + th and (cx - x) % w + o <= tw for y, x, th, tw in tiles)


def test_tiled_coarse_pass_finds_the_faces_of_the_untiled_pass(tmp_path, portrait, monkeypatch):
    """Small tiles (many edges, faces cut by some) find what one untiled coarse pass finds, the
    face across the seam included, once each."""
    import engine.cascade as cascade
    wide = road_scene(900, 2800, seed=3)
    for x, y, hh in ((600, 300, 120), (1100, 420, 60), (1700, 250, 260), (2340, 350, 140)):   # last: across x = W
        paste_portrait(wide, portrait, x, y, hh)
    img = wide[:, :2400].copy()
    img[:, :400] = wide[:, 2400:]                          # what passed the seam comes in on the left
    cfg, _ = load_config(_cfg(tmp_path))
    det = Detector(cfg, *build_models(cfg, create_runtime("onnxruntime", device="cpu")))
    monkeypatch.setattr(cascade, "COARSE_TILE_PIXELS", 10 ** 9)
    whole = _faces(det(_frame(img)), 2400)
    monkeypatch.setattr(cascade, "COARSE_TILE_PIXELS", 40_000)
    tiles = tile_grid(450, 1200, cascade.TILE_OVERLAP, 40_000, wrap=True)
    assert len(tiles) >= 12
    d = det(_frame(img))
    tiled = _faces(d, 2400)
    assert any(x0 < 2400 < x1 and x1 - x0 > 40 for x0, _, x1, _ in d.boxes), d.boxes    # the seam face, whole
    assert len(whole) == len(tiled) == 4, (whole, tiled)
    for (x, y), (tx, ty) in zip(whole, tiled):
        assert min(abs(x - tx), 2400 - abs(x - tx)) < 12 and abs(y - ty) < 12


def test_model_windows_see_as_finely_as_the_cutouts_with_far_fewer_calls(tmp_path):
    """360°: a model whose scale follows the view (NanoDet: 416 px a side) gets square windows of
    the full height, round the seam, at the finest scale the reference's cutouts had."""
    cfg, _ = load_config(_cfg(tmp_path))

    class Adapter:
        def view_scale(self, h, w):
            return min(1.0, 416 / h, 416 / w)

    slot = type("Slot", (), {"adapter": Adapter(), "card": type("Card", (), {"tta_flip": False})()})()
    det = Detector.__new__(Detector)
    det.cfg, det.slots, det.wrap = cfg, [], True
    h, w = 4000, 8000
    ref = [v for v in det.views(h, w) if not v.full]
    got = [v for v in det.views(h, w, slot) if not v.full]
    finest = max(det._model_scale(slot, v, h, w) for v in ref)
    assert len(ref) == 28 and len(got) == 3
    assert all(abs(det._model_scale(slot, v, h, w) - finest) < 1e-9 for v in got)
    seen = np.zeros(w, bool)
    for v in got:
        assert v.h == h
        seen[np.arange(v.x, v.x + v.w) % w] = True
    assert seen.all() and any(v.x + v.w > w for v in got)


def test_decoded_frames_in_flight_are_bounded_by_bytes(tmp_path):
    """A slow writer holds the decoder back once the frames between decode and write reach the
    budget: here two frames of 1 MB (plus the one the decoder holds), not the queues' 20."""
    import threading
    import time
    from engine.driver import Driver
    from engine.driver.stream import LocalExecutor
    from engine.ledger import Ledger
    from engine.types import Result
    from engine.walk import Tree
    from engine.worker import Worker
    from engine.worker.write import Prepared

    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(12):
        (inp / f"{i:03d}.jpg").write_bytes(b"\xff\xd8")
    alive, peak, lock = [0], [0], threading.Lock()

    class Dec:
        def decode(self, job, data):
            with lock:
                alive[0] += 1
                peak[0] = max(peak[0], alive[0])
            return type("F", (), {"job": job, "timings": {}, "pixels": np.zeros(1 << 20, np.uint8)})()

    class Wr:
        def prepare(self, frame, dets):
            time.sleep(0.02)
            with lock:
                alive[0] -= 1
            return Prepared(frame.job, [], Result(job=frame.job, outputs=[], detections={}, masked=False, timings={}))

    (tmp_path / "out").mkdir()
    worker = Worker(make_decoder=Dec, detector=lambda f: None, make_writer=Wr)
    executor = LocalExecutor(worker, queue_size=8, decoders=1, writers=1, frame_bytes=2 << 20)
    stats = Driver(tree=Tree(inp, tmp_path / "out", None, [".jpg"]), ledger=Ledger(tmp_path / "l.sqlite"),
                   executor=executor, queue_size=8).run()
    assert stats.unchanged == 12 and stats.failed == 0
    assert peak[0] <= 3 and executor.budget.used == 0
