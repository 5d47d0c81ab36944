"""`sladd demo`: the README's first command, end to end on the bundled photographs."""
import json
import sqlite3

from engine.cli import main
from engine.driver import ledger_path


def test_demo_builds_and_anonymises(tmp_path):
    root = tmp_path / "demo"
    assert main(["demo", "--dir", str(root), "-q"]) == 0
    inputs = sorted(p.relative_to(root / "input") for p in (root / "input").rglob("*") if p.is_file())
    outputs = sorted(p.relative_to(root / "output") for p in (root / "output").rglob("*.*")
                     if p.is_file() and ".sladd" not in p.parts and p.suffix != ".json")
    assert inputs == outputs and len(inputs) == 4
    jsons = sorted(p.relative_to(root / "output") for p in (root / "output").rglob("*.json") if ".sladd" not in p.parts)
    assert jsons == sorted(p.with_suffix(".json") for p in inputs)      # remote_json is on by default
    with sqlite3.connect(ledger_path(root / "output")) as db:
        rows = dict(db.execute("SELECT key, detections FROM images WHERE status='done'"))
    assert len(rows) == 4
    road = "tilSladding/2022/EV00006/S1/D1/F1_2022_06_01/EV00006_S1D1_m01234_f1.jpg"
    assert rows[road] == '{"face": 3}'                 # three people pasted at three distances
    meta = json.loads((root / "output" / road).with_suffix(".json").read_text(encoding="utf-8"))
    assert len(meta) == 52 and meta["detekterte_objekter"] == {"face": "3"}
    assert meta["exif_reflinkid"] == "1234567" and meta["exif_kvalitet"] == "2"
    assert meta["bildeid"] == "2022-06-01T12.00.00_EV00006_S1D1_m01234_Planar_1"
    assert meta["mappenavn"] == "Vegbilder/2022/EV00006/S1/D1/F1_2022_06_01"
    assert rows["tilSladding/2022/EV00006/S1/D1/F1_2022_06_01/EV00006_S1D1_m01244_f1.jpg"] == "{}"
    assert list((root / "logs").glob("*.log"))
