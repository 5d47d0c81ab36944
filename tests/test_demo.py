"""`sladd demo`: the README's first command, end to end on the bundled photographs."""
import sqlite3

from engine.cli import main
from engine.pipeline import ledger_path


def test_demo_builds_and_anonymises(tmp_path):
    root = tmp_path / "demo"
    assert main(["demo", "--dir", str(root), "-q"]) == 0
    inputs = sorted(p.relative_to(root / "input") for p in (root / "input").rglob("*") if p.is_file())
    outputs = sorted(p.relative_to(root / "output") for p in (root / "output").rglob("*.*")
                     if p.is_file() and ".sladd" not in p.parts)
    assert inputs == outputs and len(inputs) == 4
    with sqlite3.connect(ledger_path(root / "output")) as db:
        rows = dict(db.execute("SELECT key, detections FROM images WHERE status='done'"))
    assert len(rows) == 4
    road = "2022/EV00006/S1/D1/F1_2022_06_01/EV00006_S1D1_m01234_f1.jpg"
    assert rows[road] == '{"face": 3}'                 # three people pasted at three distances
    assert rows["2022/EV00006/S1/D1/F1_2022_06_01/EV00006_S1D1_m01244_f1.jpg"] == "{}"
    assert list((root / "logs").glob("*.log"))
