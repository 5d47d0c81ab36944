"""Metadata outputs of `sladd run` (JSON, previews) and the json / preview / check commands."""
import json

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.meta.outputs import preview_box
from tests.conftest import jpeg_bytes, scene_with_faces


@pytest.fixture
def small_tree(tmp_path, portrait):
    inp = tmp_path / "in" / "tilSladding" / "2022" / "EV00006"
    inp.mkdir(parents=True)
    img, _ = scene_with_faces(portrait, faces=((60, 100, 260),))
    e = Image.Exif()
    e[0x0110] = "Cam"
    e.get_ifd(0x8769)[0x9003] = "2022:06:01 12:00:00"
    (inp / "EV00006_S1D1_m00010_f1.jpg").write_bytes(jpeg_bytes(img, quality=90, exif=e.tobytes()))
    (inp / "EV00006_S1D1_m00020_f1.jpg").write_bytes(jpeg_bytes(img[::-1].copy(), quality=90, exif=e.tobytes()))
    return tmp_path / "in"


def _cfg(tmp_path, text):
    f = tmp_path / "cfg.yml"
    f.write_text(text)
    return f


def test_run_writes_json_and_previews_everywhere_asked(small_tree, tmp_path):
    sep = tmp_path / "previews"
    cfg = _cfg(tmp_path, "remote_json: true\nlocal_json: true\narchive_json: true\nremote_preview: true\n"
                         f"local_preview: true\narchive_preview: true\nseparate_preview_directory: {sep}\n"
                         "preview_dim: [200, 100]\n")
    out, arch = tmp_path / "out", tmp_path / "arch"
    assert main(["run", "-i", str(small_tree), "-o", str(out), "-a", str(arch), "-k", str(cfg), "-q"]) == 0
    rel = "tilSladding/2022/EV00006/EV00006_S1D1_m00010_f1"
    for root in (out, small_tree, arch):
        d = json.loads((root / f"{rel}.json").read_text(encoding="utf-8"))
        assert d["detekterte_objekter"] == {"face": "1"} and d["exif_preview_filnavn"] == "EV00006_S1D1_m00010_f1_preview.jpg"
        assert d["mappenavn"] == "Vegbilder/2022/EV00006" and d["exif_camera"] == "Cam"
        assert Image.open(root / f"{rel}_preview.jpg").size == (200, 100)
    # separate_preview_directory mirrors the folders below exif_top_dir (tilSladding).
    assert (sep / "2022" / "EV00006" / "EV00006_S1D1_m00010_f1_preview.jpg").is_file()
    # The previews show the anonymised pixels: the output's preview equals a crop of the output.
    outimg = np.asarray(Image.open(out / f"{rel}.jpg").convert("RGB")).astype(int)
    prev = np.asarray(Image.open(out / f"{rel}_preview.jpg").convert("RGB")).astype(int)
    x0, y0, x1, y1 = preview_box(480, 640, (200, 100), (0.45, 0.5))
    assert np.abs(prev - outimg[y0:y1, x0:x1]).mean() < 3
    # check: everything there -> 0; a missing JSON is reported and makes the rerun redo the image.
    assert main(["check", "-i", str(small_tree), "-o", str(out), "-a", str(arch), "-k", str(cfg)]) == 0
    (out / f"{rel}.json").unlink()
    assert main(["check", "-i", str(small_tree), "-o", str(out), "-a", str(arch), "-k", str(cfg)]) == 1
    assert main(["run", "-i", str(small_tree), "-o", str(out), "-a", str(arch), "-k", str(cfg), "-q"]) == 0
    assert (out / f"{rel}.json").is_file()


def test_archive_outputs_need_an_archive(small_tree, tmp_path, capsys):
    cfg = _cfg(tmp_path, "archive_json: true\n")
    assert main(["run", "-i", str(small_tree), "-o", str(tmp_path / "o"), "-k", str(cfg), "-q"]) == 2
    assert "archive_json" in capsys.readouterr().err


@pytest.mark.parametrize("h,w,dim,center,box", [
    (2048, 2448, (2520, 1400), (0.45, 0.5), (0, 221, 2448, 1621)),    # wider than the image: shrunk to it
    (100, 200, (50, 40), (0.0, 1.0), (150, 0, 200, 40)),              # corner centre: shifted inside
    (100, 200, (50, 40), (0.5, 0.5), (75, 30, 125, 70)),
])
def test_preview_box_stays_inside(h, w, dim, center, box):
    assert preview_box(h, w, dim, center) == box


def test_check_reports_per_image_and_totals(small_tree, tmp_path, capsys):
    out = tmp_path / "out"
    main(["run", "-i", str(small_tree), "-o", str(out), "-q"])
    capsys.readouterr()
    (out / "tilSladding/2022/EV00006/EV00006_S1D1_m00020_f1.jpg").unlink()
    assert main(["check", "-i", str(small_tree), "-o", str(out)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {l.split("\t")[0]: l.split("\t")[1:] for l in lines}
    assert rows["tilSladding/2022/EV00006/EV00006_S1D1_m00010_f1.jpg"][:3] == ["OK", "OK", "None"]
    assert rows["tilSladding/2022/EV00006/EV00006_S1D1_m00020_f1.jpg"][:2] == ["Missing", "OK"]
    assert rows["totals"][0] == "OK 1 / Missing 1 / None 0"


def test_json_command_writes_metadata_without_a_model(small_tree, tmp_path):
    out = tmp_path / "meta"
    assert main(["json", "-i", str(small_tree), "-o", str(out)]) == 0
    d = json.loads((out / "tilSladding/2022/EV00006/EV00006_S1D1_m00010_f1.json").read_text(encoding="utf-8"))
    assert d["detekterte_objekter"] is None and d["bildeid"] == "2022-06-01T12.00.00_EV00006_S1D1_m00010_Planar_1"
    assert not list(out.rglob("*.jpg"))                     # no images, only metadata


def test_preview_command_crops_the_unmasked_input(small_tree, tmp_path):
    cfg = _cfg(tmp_path, "remote_preview: true\npreview_dim: [320, 240]\npreview_center: [0.5, 0.25]\n")
    out = tmp_path / "prev"
    assert main(["preview", "-i", str(small_tree), "-o", str(out), "-k", str(cfg)]) == 0
    src = np.asarray(Image.open(small_tree / "tilSladding/2022/EV00006/EV00006_S1D1_m00010_f1.jpg")).astype(int)
    prev = np.asarray(Image.open(out / "tilSladding/2022/EV00006/EV00006_S1D1_m00010_f1_preview.jpg")).astype(int)
    assert prev.shape == (240, 320, 3) and np.abs(prev - src[120:360, 0:320]).mean() < 3
    assert main(["preview", "-i", str(small_tree), "-o", str(out)]) == 2       # no preview output enabled
