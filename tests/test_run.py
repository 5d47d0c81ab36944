"""End to end: `sladd run` over a tree with faces, odd names and broken files."""
import io
import os
import sqlite3
import threading
import time

import numpy as np
import pytest
from PIL import Image, ImageCms

from engine.cli import main
from engine.config import load_config
from engine.fsutil import is_partial
from engine.models import create_adapter, load_card, resolve_model
from engine.runtimes import create_runtime
from engine.driver import Driver, ledger_path
from engine.driver.stream import LocalExecutor
from engine.worker import Worker
from engine.worker.write import Prepared
from engine.run import run
from engine.types import Result
from engine.walk import Tree
from engine.ledger import Ledger
from tests.conftest import jpeg_bytes, scene_with_faces

VENDOR_XML = "\ufeff<?xml version=\"1.0\"?><ReflinkInfo><ReflinkId>42</ReflinkId></ReflinkInfo>".encode("utf-8")
PROPS_XML = "\ufeff<?xml version=\"1.0\"?><ImageProperties><ImageName>C:\\a\\b.jpg</ImageName></ImageProperties>".encode()
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>'


def _exif(orientation=None):
    e = Image.Exif()
    e[0x0110] = "TestCam"
    e[40055] = PROPS_XML
    e[40056] = VENDOR_XML
    if orientation:
        e[0x0112] = orientation
    return e.tobytes()


@pytest.fixture
def tree(tmp_path, portrait):
    inp = tmp_path / "in"
    faces = {}
    img, boxes = scene_with_faces(portrait, faces=((60, 100, 260), (400, 200, 150)))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (inp / "a").mkdir(parents=True)
    (inp / "a" / "face1.jpg").write_bytes(jpeg_bytes(img, quality=92, exif=_exif(), icc_profile=icc, xmp=XMP))
    faces["a/face1.jpg"] = boxes
    img2, boxes2 = scene_with_faces(portrait, faces=((200, 120, 220),), seed=3)
    odd = inp / "b c" / "åæø %#{} x.JPG"
    odd.parent.mkdir(parents=True)
    # Stored rotated 90° counter-clockwise with orientation 6: displays upright.
    odd.write_bytes(jpeg_bytes(np.ascontiguousarray(np.rot90(img2)), quality=90, exif=_exif(6)))
    faces["b c/åæø %#{} x.JPG"] = boxes2
    empty_img, _ = scene_with_faces(portrait, faces=(), seed=5)
    (inp / "empty").mkdir()
    (inp / "empty" / "nothing.jpeg").write_bytes(jpeg_bytes(empty_img, quality=90, exif=_exif()))
    bad = inp / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("not an image")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    (bad / "png.jpg").write_bytes(buf.getvalue())
    good = jpeg_bytes(img, quality=95)
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (inp / "notes.txt").write_text("ignored")
    (inp / "a" / "face1_preview.jpg").write_bytes(jpeg_bytes(img[:50, :50]))   # previews are not inputs
    return inp, faces


BAD = {"bad/zero.jpg": "empty file", "bad/text.jpg": "not a JPEG", "bad/png.jpg": "not a JPEG",
       "bad/truncated.jpg": ""}
GOOD = ["a/face1.jpg", "b c/åæø %#{} x.JPG", "empty/nothing.jpeg"]


def _rows(out):
    with sqlite3.connect(ledger_path(out)) as db:
        return {k: (s, e) for k, s, e in db.execute("SELECT key, status, error FROM images")}


def _psnr(a, b):
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean()
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def _upright(path):
    from PIL import ImageOps
    return np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))


def test_run_anonymises_tree_and_records_failures(tree, tmp_path):
    inp, faces = tree
    out, arch, logs = tmp_path / "out", tmp_path / "arch", tmp_path / "logs"
    code = main(["run", "-i", str(inp), "-o", str(out), "-a", str(arch), "-l", str(logs), "-q"])
    assert code == 1                                            # some images failed
    rows = _rows(out)
    assert set(rows) == set(GOOD) | set(BAD)                    # previews and .txt not picked up
    for key in GOOD:
        assert rows[key][0] == "done", rows[key]
        assert (out / key).is_file() and (arch / key).read_bytes() == (inp / key).read_bytes()
    for key, reason in BAD.items():
        status, error = rows[key]
        assert status == "failed" and reason in error and error
        assert not (out / key).exists(), "a failed image must never appear in the output"
        err_dir = tmp_path / "out_error" / os.path.dirname(key)
        assert (err_dir / os.path.basename(key)).read_bytes() == (inp / key).read_bytes()
        assert reason in (err_dir / (os.path.splitext(os.path.basename(key))[0] + "_error.txt")).read_text()
    assert not [p for p in out.rglob("*") if is_partial(p.name)]
    assert len(list(logs.glob("*.log"))) == 1


def test_faces_gone_metadata_kept_rest_untouched(tree, tmp_path):
    inp, faces = tree
    out = tmp_path / "out"
    main(["run", "-i", str(inp), "-o", str(out), "-q"])
    card = load_card("centerface")
    detector = create_adapter(card, resolve_model(card), create_runtime("onnxruntime", device="cpu"))
    for key, boxes in faces.items():
        before, after = _upright(inp / key), _upright(out / key)
        assert len(detector(before, 1.0).boxes) == len(boxes), "fixture faces must be detectable before"
        assert len(detector(after, 1.0).boxes) == 0, f"a face is still detectable in {key}"
        outside = np.ones(before.shape[:2], bool)
        for x0, y0, x1, y1 in boxes:
            outside[max(0, y0 - 8):y1 + 8, max(0, x0 - 8):x1 + 8] = False
        assert _psnr(before[outside], after[outside]) >= 42.0
        im = Image.open(out / key)
        assert im.getexif()[40056] == VENDOR_XML and im.getexif()[40055] == PROPS_XML
        assert im.getexif()[0x0110] == "TestCam"
        assert im.getexif().get(0x0112, 1) == 1                 # pixels are upright now
    face1 = (out / "a/face1.jpg").read_bytes()
    assert XMP in face1 and Image.open(out / "a/face1.jpg").info["icc_profile"]
    # Nothing to mask: the input is copied byte for byte.
    assert (out / "empty/nothing.jpeg").read_bytes() == (inp / "empty/nothing.jpeg").read_bytes()


def test_output_quality_matches_input(tree, tmp_path):
    from engine.jpeg import estimate_quality, parse_jpeg
    inp, _ = tree
    out = tmp_path / "out"
    main(["run", "-i", str(inp), "-o", str(out), "-q"])
    for key, q in (("a/face1.jpg", 92), ("b c/åæø %#{} x.JPG", 90)):
        assert estimate_quality(parse_jpeg((out / key).read_bytes()).luma_table) == q


def test_rerun_processes_nothing_force_redoes_changed_input_redone(tree, tmp_path):
    inp, _ = tree
    out = tmp_path / "out"
    cfg, _ = load_config()
    first = run(cfg, inp, out)
    assert (first.anonymised, first.unchanged, first.failed) == (2, 1, 4)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.jp*g")}
    second = run(cfg, inp, out)
    assert second.processed == 0 and second.skipped_done == 3 and second.skipped_failed == 4
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jp*g")} == mtimes
    retry = run(cfg, inp, out, retry_failed=True)
    assert retry.processed == 4 and retry.failed == 4
    (inp / "empty" / "nothing.jpeg").write_bytes((inp / "a" / "face1.jpg").read_bytes())
    changed = run(cfg, inp, out)
    assert changed.processed == 1 and changed.anonymised == 1
    forced = run(cfg, inp, out, force=True)
    assert forced.processed == 7


def test_interrupted_run_leftovers_are_removed(tree, tmp_path):
    inp, _ = tree
    out = tmp_path / "out"
    cfg, _ = load_config()
    run(cfg, inp, out)
    # Simulate a crash mid-write: a temporary file and a ledger row left 'running'.
    leftover = out / "a" / ".face1.jpg.sladd-partial"
    leftover.write_bytes(b"half")
    with sqlite3.connect(ledger_path(out)) as db:
        db.execute("UPDATE images SET status='running' WHERE key='a/face1.jpg'")
    again = run(cfg, inp, out)
    assert not leftover.exists()
    assert again.processed == 1 and _rows(out)["a/face1.jpg"][0] == "done"


def test_device_cuda_without_gpu_is_an_error(tree, tmp_path, capsys):
    from kernels._xp import cupy_or_none
    if cupy_or_none() is not None:
        pytest.skip("this machine has a GPU")
    inp, _ = tree
    code = main(["run", "-i", str(inp), "-o", str(tmp_path / "out"), "--device", "cuda", "-q"])
    assert code == 3
    assert "--device cuda" in capsys.readouterr().err
    assert not (tmp_path / "out" / "a" / "face1.jpg").exists()


def test_bad_config_exits_2_with_message(tree, tmp_path, capsys):
    inp, _ = tree
    cfg = tmp_path / "c.yml"
    cfg.write_text("blur: 0\n")
    assert main(["run", "-i", str(inp), "-o", str(tmp_path / "o"), "-k", str(cfg)]) == 2
    assert "`blur`" in capsys.readouterr().err


def test_missing_input_folder_aborts(tmp_path, capsys):
    cfg = tmp_path / "c.yml"
    cfg.write_text("file_access_retry_seconds: 0.1\nfile_access_timeout_seconds: 0.3\n")
    assert main(["run", "-i", str(tmp_path / "nope"), "-o", str(tmp_path / "o"), "-k", str(cfg), "-q"]) == 3
    assert "not reachable after" in capsys.readouterr().err


def test_stream_is_bounded(tmp_path):
    """With a slow writer, the walker never runs more than the queues' capacity ahead."""
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(40):
        (inp / f"{i:03d}.jpg").write_bytes(b"\xff\xd8")
    in_flight, peak, lock = set(), [0], threading.Lock()

    class Dec:
        def decode(self, job, data):
            with lock:
                in_flight.add(job.key)
                peak[0] = max(peak[0], len(in_flight))
            return type("F", (), {"job": job, "timings": {}})()

    class Wr:
        def prepare(self, frame, dets):
            time.sleep(0.01)
            with lock:
                in_flight.discard(frame.job.key)
            return Prepared(frame.job, [], Result(job=frame.job, outputs=[], detections={}, masked=False, timings={}))

    (tmp_path / "out").mkdir()
    tree = Tree(inp, tmp_path / "out", None, [".jpg"])
    worker = Worker(make_decoder=Dec, detector=lambda f: None, make_writer=Wr)
    executor = LocalExecutor(worker, queue_size=2, decoders=1, writers=1)
    pipe = Driver(tree=tree, ledger=Ledger(tmp_path / "l.sqlite"), executor=executor, queue_size=2)
    stats = pipe.run()
    assert stats.unchanged == 40 and stats.failed == 0
    # frame queue (2) + detect queue (2) + result queue (8) + one item held by each stage (3)
    assert peak[0] <= 2 + 2 + 8 + 3


def test_batched_detection_equals_one_by_one(tree, tmp_path):
    """engine.batch_size > 1: frames and tiles go through the model together, same results."""
    inp, _ = tree
    cfg1, _ = load_config()
    cfgb, _ = load_config(overrides={"engine": {"batch_size": 3}, "use_cutouts": True,
                                     "cutout_dim_downscale": [2, 2], "cutout_step_factor": [240, 320]})
    cfgc, _ = load_config(overrides={"use_cutouts": True, "cutout_dim_downscale": [2, 2],
                                     "cutout_step_factor": [240, 320]})
    for cfg, name in ((cfg1, "one"), (cfgb, "batched"), (cfgc, "cutouts")):
        stats = run(cfg, inp, tmp_path / name)
        assert stats.failed == 4 and stats.anonymised == 2
    a, b, c = (_detections(tmp_path / n) for n in ("one", "batched", "cutouts"))
    assert a == b == c and a["a/face1.jpg"] == {"face": 2}   # tiles' partial faces counted once
    for key in GOOD:
        assert (tmp_path / "batched" / key).read_bytes() == (tmp_path / "cutouts" / key).read_bytes()


def _detections(out):
    import json
    with sqlite3.connect(ledger_path(out)) as db:
        return {k: json.loads(d) for k, d in db.execute("SELECT key, detections FROM images WHERE status='done'")}


def test_two_detect_threads_share_the_models_and_write_what_one_writes(tree, tmp_path):
    """engine.detectors 2 (the CPU default): two detect threads, one model copy, every image
    once, outputs byte-identical to one detect thread (same inference threads per call)."""
    from engine.worker.build import build_worker

    inp, _ = tree
    outs = {}
    for n in (1, 2):
        cfg, _ = load_config(overrides={"engine": {"detectors": n, "inference_threads": 1}})
        stats = run(cfg, inp, tmp_path / f"d{n}")
        assert stats.failed == 4 and stats.anonymised == 2
        outs[n] = {k: (tmp_path / f"d{n}" / k).read_bytes() for k in GOOD}
    assert outs[1] == outs[2]
    cfg, _ = load_config(overrides={"engine": {"detectors": 2}})
    worker, filled = build_worker(cfg, Tree(inp, tmp_path / "x", None, [".jpg"]))
    assert filled.engine.detectors == 2 and worker.make_detector is not None
    got = []
    threads = [threading.Thread(target=lambda: got.append(worker.thread_detector())) for _ in range(3)]
    for t in threads:
        t.start()
        t.join()
    assert len({id(d) for d in got}) == 3 and got[0] is worker.detector
    assert all(d.slots is worker.detector.slots for d in got)       # the adapters (sessions) are shared
