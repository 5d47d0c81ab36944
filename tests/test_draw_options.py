"""Drawing options: feathered edges, inpainting, PNG inputs written as PNG."""
import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.models import create_adapter, load_card, resolve_model
from engine.runtimes import create_runtime
from kernels.draw import draw_regions
from tests.conftest import scene_with_faces


@pytest.fixture(scope="module")
def faces():
    card = load_card("centerface")
    det = create_adapter(card, resolve_model(card), create_runtime("onnxruntime", device="cpu"))
    return lambda rgb: len(det(np.ascontiguousarray(rgb), 1.0).boxes)


def _case():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    m = np.zeros((90, 70), bool)
    m[5:85, 5:65] = True
    return img, [(100, 150, m)]


def test_feather_fades_outside_the_mask_and_keeps_the_mask_fully_drawn():
    img, regions = _case()
    hard = draw_regions(img, regions, mode="normalized_gray_blur", ksize=21)
    soft = draw_regions(img, regions, mode="normalized_gray_blur", ksize=21, feather=10)
    inside = (slice(105, 185), slice(155, 215))
    assert np.array_equal(soft[inside], hard[inside]), "inside the mask nothing is weakened"
    diff = np.abs(soft.astype(int) - img).mean(axis=2)
    near = diff[110:180, 216:218].mean()          # 1-2 px outside the mask's right edge
    far = diff[110:180, 222:224].mean()           # 7-8 px outside
    assert near > far > 0, "the drawing fades with the distance"
    assert diff[110:180, 226:].max() == 0 and diff[:90].max() == 0, "nothing beyond the feather changes"


def test_inpaint_fills_from_the_surroundings(portrait, faces, tmp_path):
    img, _ = scene_with_faces(portrait, faces=((60, 60, 260),))
    assert faces(img) >= 1
    (tmp_path / "in").mkdir()
    Image.fromarray(img).save(tmp_path / "in" / "a.jpg", quality=95)
    cfg = tmp_path / "c.yml"
    cfg.write_text("mask: {mode: inpaint}\n")
    assert main(["run", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-k", str(cfg), "-q"]) == 0
    out = np.asarray(Image.open(tmp_path / "out" / "a.jpg").convert("RGB"))
    assert faces(out) == 0
    assert np.abs(out.astype(int) - img).mean() > 1


def test_png_inputs_are_anonymised_and_written_as_png(portrait, faces, tmp_path):
    img, _ = scene_with_faces(portrait, faces=((60, 60, 260),))
    (tmp_path / "in").mkdir()
    Image.fromarray(img).save(tmp_path / "in" / "a.png")
    Image.fromarray(img[:, ::-1].copy()).save(tmp_path / "in" / "b.jpg", quality=95)
    cfg = tmp_path / "c.yml"
    cfg.write_text('output: {extensions: [".jpg", ".png"]}\n')
    assert main(["run", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-k", str(cfg), "-q"]) == 0
    with Image.open(tmp_path / "out" / "a.png") as im:
        assert im.format == "PNG" and im.size == (img.shape[1], img.shape[0])
        out = np.asarray(im.convert("RGB"))
    assert faces(out) == 0
    far = np.abs(out[:, 400:].astype(int) - img[:, 400:])
    assert far.max() == 0, "PNG is lossless outside the masks"
    assert (tmp_path / "out" / "b.jpg").is_file()
