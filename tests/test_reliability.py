"""Faults inflicted on purpose: kill -9, interrupted deletes, missing shares, a full disk,
hostile files, failing models. Nothing may be lost, duplicated or published unmasked."""
import errno
import io
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.config import load_config
from engine.fsutil import is_partial
from engine.driver import ledger_path
from engine.run import run
from tests.conftest import jpeg_bytes, scene_with_faces


def _tree(root, portrait, n=10):
    for i in range(n):
        img, _ = scene_with_faces(portrait, h=240, w=320, faces=((40 + 5 * i, 20, 150),), seed=i)
        d = root / f"d{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img_{i:02d}.jpg").write_bytes(jpeg_bytes(img, quality=90))
    return root


def _cfg(tmp_path, text=""):
    f = tmp_path / "cfg.yml"
    f.write_text("file_access_retry_seconds: 0.1\nfile_access_timeout_seconds: 0.5\n" + text)
    return f


def _assert_complete(inp, out, ledger_rows=True):
    inputs = sorted(p.relative_to(inp) for p in inp.rglob("*.jpg"))
    outputs = sorted(p.relative_to(out) for p in out.rglob("*.jpg"))
    assert inputs == outputs, "every input exactly once in the output"
    assert not [p for p in out.rglob("*") if is_partial(p.name)], "no temporary files left"
    for rel in inputs:
        a = np.asarray(Image.open(inp / rel).convert("RGB")).astype(int)
        b = np.asarray(Image.open(out / rel).convert("RGB")).astype(int)
        assert np.abs(a - b).max() > 30, f"{rel} was published without its mask"
    if ledger_rows:
        with sqlite3.connect(ledger_path(out)) as db:
            rows = dict(db.execute("SELECT key, status FROM images"))
        assert rows == {str(r): "done" for r in inputs}


def test_kill_9_at_random_points_then_rerun(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 30), tmp_path / "out"
    cfg = _cfg(tmp_path, 'write_exif_to_db: true\ndata_eier: "SVV"\ndatabase: {table_definition: '
                         f'{tmp_path / "t.yml"}}}\n')
    (tmp_path / "t.yml").write_text("pk_column: ID\ncolumns:\n  - {name: ID, dtype: VARCHAR(256), formatter: "
                                    "text:exif_filnavn, extra: PRIMARY KEY}\n  - {name: Tid, dtype: VARCHAR(64), "
                                    "formatter: text:exif_tid}\n")
    cmd = [sys.executable, "-m", "engine.cli", "run", "-i", str(inp), "-o", str(out), "-k", str(cfg), "-q"]
    rng = random.Random(1234)
    kills = 0
    t = time.perf_counter()
    subprocess.run(cmd + ["--force"], capture_output=True)           # how long a whole run takes here
    span = time.perf_counter() - t
    for _ in range(6):
        # --force: every killed run is in the middle of real work (writing, ledger, spool).
        p = subprocess.Popen(cmd + ["--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        time.sleep(rng.uniform(0.3, 0.95) * span)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 1, "the test must actually interrupt runs"
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    _assert_complete(inp, out)
    with sqlite3.connect(out / ".sladd" / "VEGBILDER.sqlite") as db:
        ids = [r[0] for r in db.execute('SELECT "ID" FROM "VEGBILDER"')]
    assert sorted(ids) == sorted(p.name for p in inp.rglob("*.jpg")), "one database row per image, no duplicates"


def test_model_failure_fails_the_image_and_writes_nothing(tmp_path, portrait, monkeypatch):
    from engine.models.centerface import CenterFaceAdapter
    inp, out = _tree(tmp_path / "in", portrait, 3), tmp_path / "out"
    real = CenterFaceAdapter.batch

    def flaky(self, views, scale, threshold=None):
        if not any(v.any() for v in views):           # the start-up warm-up (blank crops)
            return real(self, views, scale, threshold)
        flaky.calls += 1
        if flaky.calls == 1:                          # the first model call on an image fails
            raise RuntimeError("injected inference failure")
        return real(self, views, scale, threshold)
    flaky.calls = 0
    monkeypatch.setattr(CenterFaceAdapter, "batch", flaky)
    cfg, _ = load_config(_cfg(tmp_path))
    st = run(cfg, inp, out)
    assert st.failed == 1 and st.anonymised == 2
    with sqlite3.connect(ledger_path(out)) as db:
        failed = db.execute("SELECT key, error FROM images WHERE status='failed'").fetchall()
    assert len(failed) == 1 and "injected inference failure" in failed[0][1]
    assert not (out / failed[0][0]).exists()


def test_masking_failure_fails_the_image(tmp_path, portrait, monkeypatch):
    from engine.mask import Masker
    inp, out = _tree(tmp_path / "in", portrait, 2), tmp_path / "out"
    monkeypatch.setattr(Masker, "__call__", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    cfg, _ = load_config(_cfg(tmp_path))
    st = run(cfg, inp, out)
    assert st.failed == 2 and not list(out.rglob("*.jpg"))


def test_delete_input_after_outputs_and_after_an_interruption(tmp_path, portrait, monkeypatch):
    inp, out, arch = _tree(tmp_path / "in", portrait, 4), tmp_path / "out", tmp_path / "arch"
    originals = {p.relative_to(inp): p.read_bytes() for p in inp.rglob("*.jpg")}
    cfg, _ = load_config(_cfg(tmp_path, "delete_input: true\n"))
    from engine.driver import Driver
    real = Driver._delete_input

    def crash_once(self, job, outputs):
        if not crash_once.done:
            crash_once.done = True
            raise KeyboardInterrupt                   # the run dies between write and delete
        return real(self, job, outputs)
    crash_once.done = False
    monkeypatch.setattr(Driver, "_delete_input", crash_once)
    stats = run(cfg, inp, out, arch)                  # an interrupted run reports, it does not raise
    assert stats.fatal and "interrupted" in stats.fatal
    assert any(inp.rglob("*.jpg"))                    # nothing deleted yet for the interrupted image
    run(cfg, inp, out, arch)
    assert not list(inp.rglob("*.jpg")) and not [p for p in inp.iterdir()], "inputs and emptied folders removed"
    assert inp.is_dir()                               # never the input root itself
    for rel, data in originals.items():
        assert (arch / rel).read_bytes() == data and (out / rel).is_file()


def test_delete_input_needs_an_archive(tmp_path, portrait, capsys):
    inp = _tree(tmp_path / "in", portrait, 1)
    cfg = _cfg(tmp_path, "delete_input: true\n")
    assert main(["run", "-i", str(inp), "-o", str(tmp_path / "out"), "-k", str(cfg), "-q"]) == 2   # usage
    assert "archive" in capsys.readouterr().err and list(inp.rglob("*.jpg"))


def test_input_share_that_appears_late(tmp_path, portrait):
    staging = _tree(tmp_path / "staging", portrait, 2)
    inp = tmp_path / "share"
    threading.Timer(0.6, lambda: staging.rename(inp)).start()
    cfg = _cfg(tmp_path, "file_access_timeout_seconds: 5\n")
    assert main(["run", "-i", str(inp), "-o", str(tmp_path / "out"), "-k", str(cfg), "-q"]) == 0
    _assert_complete(inp, tmp_path / "out")


def test_output_share_that_vanishes_stops_the_run_not_the_images(tmp_path, portrait, monkeypatch):
    inp, out = _tree(tmp_path / "in", portrait, 2), tmp_path / "out"
    from engine.worker import Worker
    real = Worker.publish

    def vanish(self, item):
        import shutil
        shutil.rmtree(out, ignore_errors=True)                  # the share went away
        return real(self, item)
    monkeypatch.setattr(Worker, "publish", vanish)
    cfg, _ = load_config(_cfg(tmp_path))
    st = run(cfg, inp, out)
    # One wait for the share (file_access_timeout_seconds), then a stop: no image is failed for it.
    assert st.failed == 0 and st.fatal and f"output folder {out} not reachable" in st.fatal


def test_full_disk_fails_images_cleanly_then_stops(tmp_path, portrait, monkeypatch):
    inp, out = _tree(tmp_path / "in", portrait, 6), tmp_path / "out"
    import engine.fsutil as fsutil
    real_open = open

    def enospc_open(path, mode="r", *a, **k):
        if "w" in mode and is_partial(os.path.basename(str(path))) and str(out) in str(path) and ".sladd/" not in str(path):
            fh = real_open(path, mode, *a, **k)
            fh.write(b"\xff\xd8 partial")
            fh.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr(fsutil, "open", enospc_open, raising=False)
    cfg, _ = load_config(_cfg(tmp_path, "engine: {writers: 1}\n"))
    st = run(cfg, inp, out)
    assert st.fatal and "no space left" in st.fatal
    assert 3 <= st.failed <= 6 and st.anonymised == 0
    assert not [p for p in out.rglob("*") if p.is_file() and ".sladd" not in p.parts], "no truncated file left"


@pytest.mark.parametrize("kind", ["webp", "tiff", "broken_exif", "changed", "permission", "symlink_loop"])
def test_hostile_inputs_fail_cleanly_or_work(tmp_path, portrait, kind, monkeypatch):
    inp, out = _tree(tmp_path / "in", portrait, 1), tmp_path / "out"
    img, _ = scene_with_faces(portrait, h=240, w=320, faces=((40, 20, 150),))
    bad = inp / "bad.jpg"
    expect_fail = True
    if kind in ("webp", "tiff"):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, kind.upper())
        bad.write_bytes(buf.getvalue())
    elif kind == "broken_exif":
        data = bytearray(jpeg_bytes(img, exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + b"\x00" * 20))
        bad.write_bytes(bytes(data))
        expect_fail = False                          # unreadable EXIF: still anonymised, metadata warns
    elif kind == "changed":
        bad.write_bytes(jpeg_bytes(img))
        import engine.worker.worker as pl
        real = pl.read_bytes
        monkeypatch.setattr(pl, "read_bytes", lambda p: real(p)[:-10] if p.name == "bad.jpg" else real(p))
    elif kind == "permission":
        bad.write_bytes(jpeg_bytes(img))
        import engine.worker.worker as pl
        real = pl.read_bytes

        def denied(p):
            if p.name == "bad.jpg":
                from engine.decode import read_bytes
                import builtins
                orig = builtins.open
                try:
                    builtins.open = lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied"))
                    return read_bytes(p)
                finally:
                    builtins.open = orig
            return real(p)
        monkeypatch.setattr(pl, "read_bytes", denied)
    elif kind == "symlink_loop":
        (inp / "loop").symlink_to(inp, target_is_directory=True)
        expect_fail = False
    cfg, _ = load_config(_cfg(tmp_path))
    st = run(cfg, inp, out)
    assert st.anonymised >= 1
    if kind == "symlink_loop":
        assert st.found == 1 and st.failed == 0      # the loop is not followed
        return
    with sqlite3.connect(ledger_path(out)) as db:
        status, error = db.execute("SELECT status, error FROM images WHERE key='bad.jpg'").fetchone()
    if expect_fail:
        assert status == "failed" and error and not (out / "bad.jpg").exists()
        reason = {"webp": "not a JPEG", "tiff": "not a JPEG", "changed": "changed while being read",
                  "permission": "permission denied"}[kind]
        assert reason in error
    else:
        assert status == "done"
        res = np.asarray(Image.open(out / "bad.jpg").convert("RGB")).astype(int)
        assert np.abs(res - img.astype(int)).max() > 30          # the face was masked


def test_12_bit_jpeg_is_refused_with_its_reason(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 1), tmp_path / "out"
    data = bytearray(jpeg_bytes(np.zeros((64, 64, 3), np.uint8) + 128))
    sof = data.index(b"\xff\xc0")
    data[sof + 4] = 12                                  # sample precision 12 bits
    (inp / "twelve.jpg").write_bytes(bytes(data))
    cfg, _ = load_config(_cfg(tmp_path))
    st = run(cfg, inp, out)
    assert st.failed == 1 and st.anonymised == 1
    with sqlite3.connect(ledger_path(out)) as db:
        (error,) = db.execute("SELECT error FROM images WHERE key='twelve.jpg'").fetchone()
    assert "precision" in error.lower() and not (out / "twelve.jpg").exists()


def test_log_file_has_config_errors_and_summary(tmp_path, portrait):
    inp = _tree(tmp_path / "in", portrait, 1)
    (inp / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    logs = tmp_path / "logs"
    main(["run", "-i", str(inp), "-o", str(tmp_path / "out"), "-k", str(_cfg(tmp_path)), "-l", str(logs), "-q"])
    (log,) = logs.glob("*.log")
    import re
    import socket
    assert re.fullmatch(rf"\d{{4}}-\d{{2}}-\d{{2}}_\d{{6}}_{re.escape(socket.gethostname())}\.log", log.name)
    text = log.read_text(encoding="utf-8")
    assert "#" * 40 + " CONFIG START " + "#" * 40 in text and "\n  dilation_pixels: 4\n" in text
    assert f"FAILED {inp / 'broken.jpg'}" in text and "Anonymisation finished" in text and "Failed: 1" in text


DATA = __import__("pathlib").Path(__file__).parent / "data"


def test_arithmetic_coded_jpeg_and_ycck_are_processed(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 1), tmp_path / "out"
    (inp / "arith.jpg").write_bytes((DATA / "arithmetic_96x128.jpg").read_bytes())
    (inp / "ycck.jpg").write_bytes((DATA / "ycck_96x128.jpg").read_bytes())
    cfg, _ = load_config(_cfg(tmp_path))
    st = run(cfg, inp, out)
    with sqlite3.connect(ledger_path(out)) as db:
        rows = {k: (s, e) for k, s, e in db.execute("SELECT key, status, error FROM images")}
    assert rows["arith.jpg"][0] == "done"
    # Nothing to mask: copied byte for byte, and it decodes as Pillow decodes it.
    assert (out / "arith.jpg").read_bytes() == (inp / "arith.jpg").read_bytes()
    from engine.codecs import TurboDecoder
    from engine.types import Job
    frame = TurboDecoder().decode(Job(inp / "arith.jpg", "a", out, None, out, 0, 0), (inp / "arith.jpg").read_bytes())
    ref = np.asarray(Image.open(inp / "arith.jpg").convert("RGB")).astype(int)
    assert np.abs(frame.pixels.astype(int) - ref).max() <= 3
    # YCCK is anonymised in its own colour space (tests/test_cmyk.py checks the pixels).
    assert rows["ycck.jpg"][0] == "done" and (out / "ycck.jpg").is_file()
    assert st.failed == 0


def test_tiny_and_extreme_aspect_images(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"one.jpg": (1, 1), "thin.jpg": (3, 2000), "tall.jpg": (1500, 7), "small.jpg": (31, 33)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(inp / name, quality=90)
    cfg, _ = load_config(_cfg(tmp_path))
    st = run(cfg, inp, tmp_path / "out")
    assert st.failed == 0 and st.unchanged == 4
