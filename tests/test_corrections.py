"""Static camera masks, the detections record of every image, and `sladd correct`."""
import json
import sqlite3

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.driver import ledger_path
from tests.conftest import jpeg_bytes, scene_with_faces


def _img(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


@pytest.fixture
def run_tree(tmp_path, portrait):
    """cam1/ and cam2/, each a 480x640 road scene with two faces, and a static mask for cam1."""
    inp = tmp_path / "in"
    faces = {}
    for cam, seed in (("cam1", 1), ("cam2", 2)):
        img, boxes = scene_with_faces(portrait, faces=((40, 60, 200), (380, 80, 180)), seed=seed)
        (inp / cam).mkdir(parents=True)
        (inp / cam / "a.jpg").write_bytes(jpeg_bytes(img, quality=92))
        faces[f"{cam}/a.jpg"] = boxes
    mask = np.zeros((480, 640), np.uint8)
    mask[420:, :] = 255                                   # the survey car's bonnet
    Image.fromarray(mask).save(tmp_path / "bonnet.png")
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"static_masks: [{{mask: {tmp_path / 'bonnet.png'}, where: 'cam1/**'}}]\n")
    return inp, cfg, faces


def test_static_mask_is_drawn_on_its_folder_only_and_recorded(run_tree, tmp_path):
    inp, cfg, _ = run_tree
    out = tmp_path / "out"
    assert main(["run", "-i", str(inp), "-o", str(out), "-k", str(cfg), "-q"]) == 0
    a, b = _img(inp / "cam1/a.jpg"), _img(out / "cam1/a.jpg")
    assert np.abs(a[425:470] - b[425:470]).mean() > 10, "the band under the static mask is anonymised"
    c, d = _img(inp / "cam2/a.jpg"), _img(out / "cam2/a.jpg")
    assert np.abs(c[425:470] - d[425:470]).mean() < 3, "cam2 does not match the glob"
    rec = json.loads((out / ".sladd/detections/cam1/a.jpg.json").read_text())
    static = [r for r in rec["regions"] if r["source"]["kind"] == "static"]
    assert len(static) == 1 and static[0]["box"] == [0.0, 420.0, 640.0, 480.0]
    assert static[0]["source"]["mask"].endswith("bonnet.png")
    assert not any(r["source"]["kind"] == "static" for r in
                   json.loads((out / ".sladd/detections/cam2/a.jpg.json").read_text())["regions"])
    # Static regions are drawn, not counted as objects in the metadata JSON.
    meta = json.loads((out / "cam1/a.json").read_text())
    assert "static" not in meta["detekterte_objekter"]


def test_a_static_mask_of_another_size_fails_the_image_naming_both_sizes(run_tree, tmp_path):
    inp, _, _ = run_tree
    Image.fromarray(np.zeros((100, 200), np.uint8)).save(tmp_path / "small.png")
    cfg = tmp_path / "c2.yml"
    cfg.write_text(f"static_masks: [{{mask: {tmp_path / 'small.png'}, where: 'cam2/*.jpg'}}]\n")
    out = tmp_path / "out"
    assert main(["run", "-i", str(inp), "-o", str(out), "-k", str(cfg), "-q"]) == 1
    with sqlite3.connect(ledger_path(out)) as db:
        rows = dict(db.execute("SELECT key, status || ' ' || coalesce(error, '') FROM images"))
    assert rows["cam1/a.jpg"].startswith("done")
    assert rows["cam2/a.jpg"].startswith("failed") and "200x100" in rows["cam2/a.jpg"] and "640x480" in rows["cam2/a.jpg"]
    assert not (out / "cam2/a.jpg").exists()


def test_detections_record_lists_every_face_with_its_source(run_tree, tmp_path):
    inp, _, faces = run_tree
    out = tmp_path / "out"
    assert main(["run", "-i", str(inp), "-o", str(out), "-q"]) == 0
    rec = json.loads((out / ".sladd/detections/cam2/a.jpg.json").read_text())
    assert rec["image"] == "cam2/a.jpg" and (rec["width"], rec["height"]) == (640, 480)
    found = [r for r in rec["regions"] if r["class"] == "face"]
    for x0, y0, x1, y1 in faces["cam2/a.jpg"]:
        assert any(r["box"][0] < x1 and r["box"][2] > x0 and r["box"][1] < y1 and r["box"][3] > y0 for r in found)
    src = found[0]["source"]
    assert src["kind"] == "model" and src["card"].startswith("centerface") and len(src["sha256"]) == 64
    assert found[0]["drawn"]["mode"] == "normalized_gray_blur" and found[0]["drawn"]["kernel"] >= 3
    # ... and, asked for, beside the image.
    cfg = tmp_path / "b.yml"
    cfg.write_text("output: {detections_beside: true}\n")
    assert main(["run", "-i", str(inp), "-o", str(tmp_path / "o2"), "-k", str(cfg), "-q"]) == 0
    assert json.loads((tmp_path / "o2/cam2/a.detections.json").read_text())["regions"]


def _face_regions(out, key):
    rec = json.loads((out / ".sladd/detections" / f"{key}.json").read_text())
    return [r["box"] for r in rec["regions"] if r["class"] == "face"]


def test_correct_adds_a_box_restores_a_removed_face_and_a_rerun_keeps_it(run_tree, tmp_path):
    inp, cfg, faces = run_tree
    out, arch = tmp_path / "out", tmp_path / "arch"
    assert main(["run", "-i", str(inp), "-o", str(out), "-a", str(arch), "-k", str(cfg), "-q"]) == 0
    key = "cam1/a.jpg"
    json_before = (out / "cam1/a.json").read_bytes()
    (fx0, fy0, fx1, fy1), (gx0, gy0, gx1, gy1) = faces[key]
    removed = [b for b in _face_regions(out, key) if b[0] < fx1 and b[2] > fx0][0]
    added = [300, 20, 360, 60]                              # a sign the model missed
    corr = tmp_path / "corr.json"
    corr.write_text(json.dumps({"images": [{"image": key, "add": [added], "remove": [removed]}]}))
    assert main(["correct", "-o", str(out), "-a", str(arch), "-k", str(cfg), "--file", str(corr)]) == 0
    orig, now = _img(inp / key), _img(out / key)
    assert np.abs(orig[fy0 + 20:fy1 - 20, fx0 + 10:fx1 - 10] - now[fy0 + 20:fy1 - 20, fx0 + 10:fx1 - 10]).mean() < 4, \
        "the removed face is back as in the original"
    assert np.abs(orig[gy0 + 20:gy1 - 20, gx0 + 10:gx1 - 10] - now[gy0 + 20:gy1 - 20, gx0 + 10:gx1 - 10]).mean() > 10, \
        "the other face stays masked"
    assert np.abs(orig[22:58, 302:358] - now[22:58, 302:358]).mean() > 5, "the added box is masked"
    assert np.abs(orig[425:470] - now[425:470]).mean() > 10, "the static mask stays"
    assert (out / "cam1/a.json").read_bytes() == json_before, "the metadata JSON is left as it is"
    rec = json.loads((out / ".sladd/detections" / f"{key}.json").read_text())
    assert [r["box"] for r in rec["regions"] if r["source"]["kind"] == "correction"] == [[300.0, 20.0, 360.0, 60.0]]
    assert json.loads((out / ".sladd/corrections" / f"{key}.json").read_text())["remove"] == [removed]
    # A forced rerun (a new model, say) applies the kept corrections again.
    assert main(["run", "-i", str(inp), "-o", str(out), "-a", str(arch), "-k", str(cfg), "-q", "--force"]) == 0
    again = _img(out / key)
    assert np.abs(again - now).max() <= 2


def test_correct_without_an_original_or_with_a_bad_box_is_a_clear_error(run_tree, tmp_path, capsys):
    inp, _, _ = run_tree
    out = tmp_path / "out"
    assert main(["run", "-i", str(inp), "-o", str(out), "-q"]) == 0
    corr = tmp_path / "corr.json"
    corr.write_text(json.dumps({"images": [{"image": "cam1/a.jpg", "add": [[1, 1, 9, 9]]}]}))
    assert main(["correct", "-o", str(out), "-a", str(tmp_path / "nope"), "--file", str(corr)]) == 2
    assert "no original to start from" in capsys.readouterr().err
    corr.write_text(json.dumps({"images": [{"image": "cam1/a.jpg", "add": [[9, 9, 1, 1]]}]}))
    assert main(["correct", "-o", str(out), "-i", str(inp), "--file", str(corr)]) == 2
    assert "empty" in capsys.readouterr().err
    corr.write_text(json.dumps({"images": [{"image": "../x.jpg", "add": []}]}))
    assert main(["correct", "-o", str(out), "-i", str(inp), "--file", str(corr)]) == 2
    assert not (out / ".sladd/corrections").exists(), "nothing is kept from a file that was refused"
