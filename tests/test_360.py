"""360° images: an object cut by the left/right seam is seen whole and masked on both sides."""
import numpy as np
from PIL import Image

from engine.cli import main
from engine.config import load_config
from engine.detect import Detector, build_models
from engine.demo import paste_portrait, road_scene
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
