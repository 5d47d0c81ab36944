"""The walk never stops or skips silently (issue 13, parts 2, 4, 5): names that are not UTF-8 or
hold a newline, 240-byte names, folders that cannot be listed, symbolic links and FIFOs, a full
disk under the outputs or under the ledger, an input or output share that goes away mid-run."""
import json
import os
import shlex
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.fsutil import is_partial, partial_name
from engine.ledger import Ledger
from engine.driver import ledger_path
from engine.walk import Tree
from tests.conftest import jpeg_bytes, scene_with_faces
from tests.test_reliability import _cfg

SLADD = [sys.executable, "-m", "engine.cli"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LATIN1 = b"caf\xe9.jpg"                     # a name written by another system, not UTF-8


def _face(portrait, seed=0):
    img, _ = scene_with_faces(portrait, h=240, w=320, faces=((40 + seed, 20, 150),), seed=seed)
    return img, jpeg_bytes(img, quality=90)


def _tree(root, portrait, n, folders=3):
    for i in range(n):
        d = root / f"d{i % folders}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img_{i:02d}.jpg").write_bytes(_face(portrait, i)[1])
    return root


def _sladd(*args, timeout=240):
    return subprocess.run(SLADD + [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args],
                          capture_output=True, timeout=timeout, cwd=REPO)


def _rows(out):
    """{key: (status, error)}; a key that is not UTF-8 by its exact bytes."""
    with sqlite3.connect(ledger_path(out)) as db:
        db.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
        has_bytes = "key_bytes" in {r[1] for r in db.execute("PRAGMA table_info(images)")}
        rows = db.execute(f"SELECT key, status, error, {'key_bytes' if has_bytes else 'NULL'} FROM images").fetchall()
    return {(bytes(b) if b is not None else k): (s, e) for k, s, e, b in rows}


def _masked(src_pixels, out_file):
    res = np.asarray(Image.open(out_file).convert("RGB")).astype(int)
    return np.abs(res - src_pixels.astype(int)).max() > 30


def _no_partials(*roots):
    return [os.path.join(d, f) for r in roots if os.path.isdir(r)
            for d, _, fs in os.walk(r) for f in fs if is_partial(f)]


# --- names --------------------------------------------------------------------------------------

def test_non_utf8_name_is_processed_and_the_walk_goes_on(tmp_path, portrait):
    inp, out = tmp_path / "in", tmp_path / "out"
    (inp / "a").mkdir(parents=True)
    (inp / "z").mkdir()
    img, data = _face(portrait)
    (inp / "a" / "good.jpg").write_bytes(data)
    with open(os.path.join(os.fsencode(inp / "a"), LATIN1), "wb") as fh:
        fh.write(data)
    (inp / "z" / "late.jpg").write_bytes(data)              # after the odd name: must still be seen
    cfg = _cfg(tmp_path, "remote_json: false\n")
    r = _sladd("run", "-i", inp, "-o", out, "-k", cfg, "-q")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    # Same byte name in the output, anonymised.
    assert LATIN1 in os.listdir(os.fsencode(out / "a"))
    assert _masked(img, os.path.join(os.fsencode(out / "a"), LATIN1))
    assert (out / "z" / "late.jpg").is_file()
    rows = _rows(out)
    assert rows[b"a/" + LATIN1] == ("done", None)
    assert rows["a/good.jpg"][0] == rows["z/late.jpg"][0] == "done"
    with sqlite3.connect(ledger_path(out)) as db:               # readable key, exact bytes beside it
        assert db.execute("SELECT key FROM images WHERE key_bytes IS NOT NULL").fetchall() == [("a/caf\\xe9.jpg",)]
    again = _sladd("run", "-i", inp, "-o", out, "-k", cfg, "-q")
    assert again.returncode == 0 and b"Skipped, done earlier: 3" in again.stderr


def test_failed_non_utf8_name_reports_in_utf8(tmp_path, portrait):
    inp, out, logs = tmp_path / "in", tmp_path / "out", tmp_path / "logs"
    inp.mkdir()
    bad = os.path.join(os.fsencode(inp), b"bad\xff.jpg")
    with open(bad, "wb") as fh:
        fh.write(b"not a jpeg")
    (inp / "zz.jpg").write_bytes(_face(portrait)[1])
    r = _sladd("run", "-i", inp, "-o", out, "-k", _cfg(tmp_path), "-l", logs, "-q")
    assert r.returncode == 1, r.stderr.decode(errors="replace")
    assert _rows(out)["zz.jpg"][0] == "done"
    status, error = _rows(out)[b"bad\xff.jpg"]
    assert status == "failed" and "not a JPEG" in error
    err = tmp_path / "out_error"
    assert open(os.path.join(os.fsencode(err), b"bad\xff.jpg"), "rb").read() == b"not a jpeg"
    report = open(os.path.join(os.fsencode(err), b"bad\xff_error.txt"), "rb").read().decode("utf-8")
    assert report.splitlines()[0] == f"{inp}/bad\\xff.jpg" and "not a JPEG" in report
    (log,) = logs.glob("*.log")
    assert f"FAILED {inp}/bad\\xff.jpg" in log.read_bytes().decode("utf-8")


def test_non_utf8_name_gets_valid_utf8_json(tmp_path, portrait):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    with open(os.path.join(os.fsencode(inp), LATIN1), "wb") as fh:
        fh.write(_face(portrait)[1])
    r = _sladd("run", "-i", inp, "-o", out, "-k", _cfg(tmp_path), "-q")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    record = json.loads(open(os.path.join(os.fsencode(out), b"caf\xe9.json"), "rb").read().decode("utf-8"))
    assert record["exif_filnavn"] == "caf\\xe9.jpg"             # the byte shown, the file valid UTF-8
    assert _rows(out)[LATIN1] == ("done", None)


def test_check_prints_one_line_per_image_with_escaped_names(tmp_path, portrait):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    data = _face(portrait)[1]
    (inp / "new\nline.jpg").write_bytes(data)
    (inp / "back\\slash.jpg").write_bytes(data)
    with open(os.path.join(os.fsencode(inp), LATIN1), "wb") as fh:
        fh.write(data)
    cfg = _cfg(tmp_path, "remote_json: false\n")
    assert _sladd("run", "-i", inp, "-o", out, "-k", cfg, "-q").returncode == 0
    r = _sladd("check", "-i", inp, "-o", out, "-k", cfg)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    lines = r.stdout.decode("utf-8").splitlines()
    assert len(lines) == 1 + 3 + 1                              # header, one per image, totals
    keys = sorted(line.split("\t")[0] for line in lines[1:-1])
    assert keys == ["back\\\\slash.jpg", "caf\\xe9.jpg", "new\\nline.jpg"]
    assert all(line.split("\t")[1] == "OK" for line in lines[1:-1])


def test_240_byte_name_and_short_temporary_names(tmp_path, portrait):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    name = "x" * 236 + ".jpg"
    assert len(name.encode()) == 240
    img, data = _face(portrait)
    (inp / name).write_bytes(data)
    assert len(os.fsencode(partial_name(out / name).name)) <= 32
    r = _sladd("run", "-i", inp, "-o", out, "-k", _cfg(tmp_path), "-q")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert _masked(img, out / name) and (out / ("x" * 236 + ".json")).is_file()
    assert not _no_partials(out, inp)


def test_leftovers_of_an_interrupted_run_are_removed_new_and_old_names(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 2, folders=1), tmp_path / "out"
    cfg = _cfg(tmp_path)
    assert _sladd("run", "-i", inp, "-o", out, "-k", cfg, "-q").returncode == 0
    new = out / "d0" / ".sladd-00112233445566ff.partial"           # as partial_name() makes them
    assert is_partial(partial_name(out / "d0" / "img_00.jpg").name)
    old = out / "d0" / ".img_00.jpg.sladd-partial"                # sladd before short names
    beside = partial_name(inp / "d0" / "img_00.json")              # local_json's temporary file
    for p in (new, old, beside):
        p.write_bytes(b"half")
    with sqlite3.connect(ledger_path(out)) as db:
        db.execute("UPDATE images SET status='running' WHERE key='d0/img_00.jpg'")
    r = _sladd("run", "-i", inp, "-o", out, "-k", cfg, "-q")
    assert r.returncode == 0 and b"Identified images: 2" in r.stderr       # temporary files are not inputs
    assert not new.exists() and not old.exists() and not beside.exists()
    assert _rows(out)["d0/img_00.jpg"][0] == "done"


def test_ledger_key_round_trips_and_never_confuses_two_names(tmp_path):
    from engine.types import Job
    led = Ledger(tmp_path / "l.sqlite")
    odd = os.fsdecode(b"caf\xe9.jpg")
    lookalike = "caf\\xe9.jpg"                      # a UTF-8 name that reads the same when escaped

    def job(key):
        return Job(tmp_path / key, key, tmp_path, None, tmp_path, 1, 2)
    led.mark_done(job(odd), [str(tmp_path / odd)], {}, {})
    assert led.get(odd)["outputs"] == [str(tmp_path / odd)]        # exact path back, surrogates and all
    assert led.get(lookalike) is None
    led.mark_failed(job(odd), "decode", f"cannot read {odd}")
    assert led.get(odd)["error"] == "cannot read caf\\xe9.jpg"
    led.mark_running(job(odd))
    assert led.interrupted() == [odd]
    led.close()


# --- folders that cannot be listed ----------------------------------------------------------------

def test_unlisted_folder_is_recorded_with_its_reason(tmp_path, portrait, monkeypatch):
    """The listing error is injected (Tree's scandir): a real OSError from the OS."""
    inp = _tree(tmp_path / "in", portrait, 3)

    def scandir(d):
        return os.scandir(tmp_path / "no-such-folder" if d.name == "d1" else d)
    unlisted = []
    tree = Tree(inp, tmp_path / "out", None, [".jpg"], scandir=scandir)
    names = [p.name for p in tree.paths(unlisted=unlisted)]
    assert names == ["img_00.jpg", "img_02.jpg"]
    assert unlisted == [(str(inp / "d1"), "No such file or directory")]


def _denies_in_user_namespace(folder) -> bool:
    """Root reads a chmod 000 folder; in a user namespace without a mapping it cannot."""
    try:
        r = subprocess.run(["unshare", "--user", "ls", str(folder)], capture_output=True)
    except FileNotFoundError:
        return False
    return r.returncode != 0 and b"Permission denied" in r.stderr


def test_unreadable_folder_is_reported_and_the_run_is_incomplete(tmp_path, portrait):
    inp, out, logs = _tree(tmp_path / "in", portrait, 6), tmp_path / "out", tmp_path / "logs"
    locked = inp / "d1"
    locked.chmod(0)
    try:
        cmd = SLADD + ["run", "-i", str(inp), "-o", str(out), "-k", str(_cfg(tmp_path)), "-l", str(logs), "-q"]
        if os.geteuid() == 0:
            if not _denies_in_user_namespace(locked):
                pytest.skip("running as root without user namespaces (unshare --user): chmod 000 denies nothing")
            cmd = ["unshare", "--user"] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=240)
        check = [c for c in cmd if c not in ("-q", "-l", str(logs))]
        check[check.index("run")] = "check"
        c = subprocess.run(check, capture_output=True, text=True, cwd=REPO, timeout=240)
    finally:
        locked.chmod(0o755)
    assert c.returncode == 1 and "1 folder(s) could not be listed; the check is incomplete" in c.stderr, c.stderr
    assert len(c.stdout.splitlines()) == 1 + 4 + 1
    line = f"cannot list folder {locked}: Permission denied"
    assert r.returncode == 1, r.stderr
    assert line in r.stderr and "Run incomplete: 1 folder(s) could not be listed" in r.stderr
    (log,) = logs.glob("*.log")
    assert line in log.read_text(encoding="utf-8")
    rows = _rows(out)
    assert sorted(rows) == ["d0/img_00.jpg", "d0/img_03.jpg", "d2/img_02.jpg", "d2/img_05.jpg"]
    assert {s for s, _ in rows.values()} == {"done"}


# --- symbolic links and special files -------------------------------------------------------------

def test_symlinks_are_not_followed_and_never_copied_to_the_error_tree(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 1, folders=1), tmp_path / "out"
    (inp / "d0" / "inside.jpg").symlink_to("img_00.jpg")
    (inp / "d0" / "passwd.jpg").symlink_to("/etc/passwd")
    (inp / "d0" / "folder").symlink_to(inp / "d0", target_is_directory=True)
    os.mkfifo(inp / "d0" / "fifo.jpg")                          # a reader would block for ever
    r = _sladd("run", "-i", inp, "-o", out, "-k", _cfg(tmp_path), "-q", timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    err = r.stderr.decode()
    assert "Skipped, symbolic links or not regular files: 4" in err
    assert f"skipping {inp}/d0/passwd.jpg: symbolic link, not followed" in err
    assert f"skipping {inp}/d0/fifo.jpg: not a regular file" in err
    assert sorted(_rows(out)) == ["d0/img_00.jpg"]
    assert not (tmp_path / "out_error").exists()
    assert sorted(p.name for p in (out / "d0").iterdir()) == ["img_00.jpg", "img_00.json"]


def test_follow_symlinks_takes_links_inside_the_input_only(tmp_path, portrait):
    inp = _tree(tmp_path / "in", portrait, 1, folders=1)
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(_face(portrait)[1])
    d = inp / "d0"
    (d / "inside.jpg").symlink_to("img_00.jpg")
    (d / "outside.jpg").symlink_to(outside)
    (d / "passwd.jpg").symlink_to("/etc/passwd")
    skipped = []
    tree = Tree(inp, tmp_path / "out", None, [".jpg"], follow_symlinks=True)
    assert [p.name for p in tree.paths(skipped=skipped)] == ["img_00.jpg", "inside.jpg"]
    assert dict(skipped) == {
        str(d / "outside.jpg"): f"symbolic link to {outside}, outside the input folder (never followed)",
        str(d / "passwd.jpg"): "symbolic link to /etc/passwd, outside the input folder (never followed)"}
    default = Tree(inp, tmp_path / "out", None, [".jpg"])
    assert [p.name for p in default.paths()] == ["img_00.jpg"]
    assert default.refusal(d / "inside.jpg") == "symbolic link, not followed (input_follow_symlinks: false)"


# --- a full disk -------------------------------------------------------------------------------

def _mount_ns() -> list:
    """A private mount namespace where tmpfs can be mounted, or [] (then the test skips)."""
    for ns in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        try:
            # Over /tmp, inside the namespace only: nothing is written anywhere.
            r = subprocess.run(ns + ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", "/tmp"], capture_output=True)
        except FileNotFoundError:
            return []
        if r.returncode == 0:
            return ns
    return []


MOUNT_NS = _mount_ns()
needs_mounts = pytest.mark.skipif(not MOUNT_NS, reason="needs a mount namespace (unshare --mount, or user "
                                                       "namespaces) to fill a small tmpfs")


def _disk_full_script(tmp_path, inp, cfg, mounts: str):
    """Run sladd on tmpfs mounts (`mounts`), copy what it left, grow the disks, run it again."""
    out, snap, final = tmp_path / "disk" / "out", tmp_path / "after_full", tmp_path / "after_rerun"
    q = shlex.quote
    run = f"{q(sys.executable)} -m engine.cli run -i {q(str(inp))} -o {q(str(out))} -k {q(str(cfg))} -q"
    script = f"""set -u
mkdir -p {q(str(tmp_path / 'disk'))}
{mounts}
{run} > {q(str(tmp_path / 'run1.txt'))} 2>&1; echo $? > {q(str(tmp_path / 'rc1'))}
cp -a {q(str(tmp_path / 'disk'))} {q(str(snap))}
for m in $(grep -o " {q(str(tmp_path))}/disk[^ ]*" /proc/mounts); do mount -o remount,size=64m $m; done
{run} > {q(str(tmp_path / 'run2.txt'))} 2>&1; echo $? > {q(str(tmp_path / 'rc2'))}
cp -a {q(str(tmp_path / 'disk'))} {q(str(final))}
"""
    r = subprocess.run(MOUNT_NS + ["sh", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=400)
    assert r.returncode == 0, r.stderr
    text = [(tmp_path / f"run{i}.txt").read_text(encoding="utf-8") for i in (1, 2)]
    codes = [int((tmp_path / f"rc{i}").read_text()) for i in (1, 2)]
    return codes, text, snap / "out", final / "out"


def _all_complete_jpegs(root):
    for p in root.rglob("*.jpg"):
        Image.open(p).load()                        # raises on a truncated file
    return True


@needs_mounts
def test_full_output_disk_stops_cleanly_and_a_rerun_finishes(tmp_path, portrait):
    """Outputs on a 200 KiB tmpfs (30 images need ~900 KiB), the ledger on its own roomy tmpfs."""
    inp = _tree(tmp_path / "in", portrait, 30)
    out = tmp_path / "disk" / "out"
    mounts = (f"mount -t tmpfs -o size=200k tmpfs {tmp_path / 'disk'} && mkdir -p {out}/.sladd && "
              f"mount -t tmpfs -o size=8m tmpfs {out}/.sladd")
    (rc1, rc2), (t1, t2), snap, final = _disk_full_script(tmp_path, inp, _cfg(tmp_path), mounts)
    assert rc1 == 3, t1
    assert f"Run stopped early: no space left on {tmp_path / 'disk'}" in t1 and "Traceback" not in t1
    assert not _no_partials(snap) and _all_complete_jpegs(snap)
    assert not (snap.parent / "out_error").exists(), "no error copies of images that only found no space"
    statuses = {s for s, _ in _rows(snap).values()}
    assert "failed" in statuses and all(e.startswith("no space left") for s, e in _rows(snap).values() if s == "failed")
    # A plain rerun (no --retry-failed) on a bigger disk finishes everything.
    assert rc2 == 0, t2
    assert {s for s, _ in _rows(final).values()} == {"done"} and len(_rows(final)) == 30
    assert len(list(final.rglob("*.jpg"))) == 30 and _all_complete_jpegs(final)


@needs_mounts
def test_full_disk_under_the_ledger_stops_cleanly_and_a_rerun_finishes(tmp_path, portrait):
    """The ledger's folder on a tmpfs filled to the brim mid-run: SQLite says "database or disk is
    full" (the run used to abort with exit 134, rows left `running`)."""
    inp = _tree(tmp_path / "in", portrait, 30)
    out = tmp_path / "disk" / "out"
    mounts = (f"mount -t tmpfs -o size=8m tmpfs {tmp_path / 'disk'} && mkdir -p {out}/.sladd && "
              f"mount -t tmpfs -o size=96k tmpfs {out}/.sladd")
    (rc1, rc2), (t1, t2), snap, final = _disk_full_script(tmp_path, inp, _cfg(tmp_path, "output: {detections: false}\n"), mounts)  # the ledger alone
    assert rc1 == 3, t1
    assert f"Run stopped early: no space left on {out}/.sladd" in t1 and "Traceback" not in t1
    assert not _no_partials(snap) and _all_complete_jpegs(snap)
    rows = _rows(snap)
    assert "running" in {s for s, _ in rows.values()} and "failed" not in {s for s, _ in rows.values()}
    assert rc2 == 0, t2
    assert {s for s, _ in _rows(final).values()} == {"done"} and len(_rows(final)) == 30
    assert _all_complete_jpegs(final)


# --- shares that go away --------------------------------------------------------------------------

def _reads_then(monkeypatch, n, action) -> list:
    """After n reads of inputs, call action() once (the share goes away between two images).
    Returns the list of the keys whose read succeeded, filled as the run goes."""
    import engine.worker.worker as pl
    real, count, read = pl.read_bytes, [0], []

    def hooked(path):
        count[0] += 1
        if count[0] == n + 1:
            action()
        data = real(path)
        read.append(f"{path.parent.name}/{path.name}")
        return data
    monkeypatch.setattr(pl, "read_bytes", hooked)
    return read


def test_input_root_that_vanishes_stops_the_run_without_failing_images(tmp_path, portrait, monkeypatch, capsys):
    inp, out = _tree(tmp_path / "in", portrait, 12), tmp_path / "out"
    away = tmp_path / "unmounted"
    read = _reads_then(monkeypatch, 3, lambda: inp.rename(away))
    cfg = _cfg(tmp_path, "engine: {decoders: 1}\n")
    assert main(["run", "-i", str(inp), "-o", str(out), "-k", str(cfg), "-q"]) == 3
    err = capsys.readouterr().err
    assert f"input folder {inp} not reachable after" in err and "Traceback" not in err
    assert len(read) == 3
    rows = _rows(out)
    assert "failed" not in {s for s, _ in rows.values()}, "images are not failed for a missing share"
    assert not (tmp_path / "out_error").exists()
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.jpg")}
    assert written <= set(read), "no output for an image whose read failed"
    away.rename(inp)
    monkeypatch.undo()
    assert main(["run", "-i", str(inp), "-o", str(out), "-k", str(_cfg(tmp_path)), "-q"]) == 0
    assert {s for s, _ in _rows(out).values()} == {"done"} and len(_rows(out)) == 12


def test_input_root_that_comes_back_in_time_loses_nothing(tmp_path, portrait, monkeypatch):
    inp, out = _tree(tmp_path / "in", portrait, 6), tmp_path / "out"
    away = tmp_path / "unmounted"

    def blip():
        inp.rename(away)
        threading.Timer(0.5, lambda: away.rename(inp)).start()
    _reads_then(monkeypatch, 2, blip)
    cfg = _cfg(tmp_path, "file_access_timeout_seconds: 10\n")
    assert main(["run", "-i", str(inp), "-o", str(out), "-k", str(cfg), "-q"]) == 0
    assert {s for s, _ in _rows(out).values()} == {"done"} and len(_rows(out)) == 6


@needs_mounts
def test_unmounted_input_share_stops_the_run(tmp_path, portrait):
    """A real unmount: the mount point stays as an empty folder of the parent device."""
    staging = _tree(tmp_path / "staging", portrait, 12)
    share, out = tmp_path / "share", tmp_path / "out"
    share.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(f"""import subprocess, sys
import engine.worker.worker as pl
real, n = pl.read_bytes, [0]
def hooked(path):
    n[0] += 1
    if n[0] == 4:
        subprocess.run(["umount", "-l", {str(share)!r}], check=True)
    return real(path)
pl.read_bytes = hooked
from engine.cli import main
sys.exit(main(sys.argv[1:]))
""")
    q = shlex.quote
    script = (f"mount -t tmpfs -o size=8m tmpfs {q(str(share))} && cp -a {q(str(staging))}/. {q(str(share))} && "
              f"exec {q(sys.executable)} {q(str(driver))} run -i {q(str(share))} -o {q(str(out))} "
              f"-k {q(str(_cfg(tmp_path)))} -q")
    r = subprocess.run(MOUNT_NS + ["sh", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=240,
                       env={**os.environ, "PYTHONPATH": REPO})
    assert r.returncode == 3, r.stderr
    assert f"input folder {share} not reachable after" in r.stderr and "Traceback" not in r.stderr
    rows = _rows(out)
    assert rows and "failed" not in {s for s, _ in rows.values()}, "images are not failed for a missing share"


def test_output_root_that_vanishes_stops_the_run(tmp_path, portrait, monkeypatch, capsys):
    import shutil
    inp, out = _tree(tmp_path / "in", portrait, 6), tmp_path / "out"
    _reads_then(monkeypatch, 2, lambda: shutil.move(str(out), str(tmp_path / "gone")))
    cfg = _cfg(tmp_path, "engine: {writers: 1}\n")
    assert main(["run", "-i", str(inp), "-o", str(out), "-k", str(cfg), "-q"]) == 3
    err = capsys.readouterr().err
    assert f"output folder {out} not reachable after" in err and "Traceback" not in err
    assert "Failed: 0" in err


@needs_mounts
def test_output_that_turns_read_only_mid_run_stops_the_run(tmp_path, portrait):
    """ext4 remounts read-only on errors: the first write that meets it stops the run (exit 3);
    no image is failed for it, and a rerun on the writable disk finishes everything."""
    inp = _tree(tmp_path / "in", portrait, 12)
    disk = tmp_path / "disk"
    out = disk / "out"
    driver = tmp_path / "driver.py"
    driver.write_text(f"""import subprocess, sys
import engine.worker.worker as pl
real, n = pl.read_bytes, [0]
def hooked(path):
    n[0] += 1
    if n[0] == 4:
        subprocess.run(["mount", "-o", "remount,ro", {str(disk)!r}], check=True)
    return real(path)
pl.read_bytes = hooked
from engine.cli import main
sys.exit(main(sys.argv[1:]))
""")
    q = shlex.quote
    args = f"run -i {q(str(inp))} -o {q(str(out))} -k {q(str(_cfg(tmp_path)))} -q"
    script = f"""mkdir -p {q(str(disk))} && mount -t tmpfs -o size=16m tmpfs {q(str(disk))} &&
mkdir -p {q(str(out))}/.sladd && mount -t tmpfs -o size=8m tmpfs {q(str(out))}/.sladd || exit 99
{q(sys.executable)} {q(str(driver))} {args} > {q(str(tmp_path / 'run1.txt'))} 2>&1; echo $? > {q(str(tmp_path / 'rc1'))}
cp -a {q(str(out))}/.sladd {q(str(tmp_path / 'ledger1'))}
mount -o remount,rw {q(str(disk))}
{q(sys.executable)} -m engine.cli {args} > {q(str(tmp_path / 'run2.txt'))} 2>&1; echo $? > {q(str(tmp_path / 'rc2'))}
cp -a {q(str(disk))} {q(str(tmp_path / 'final'))}
"""
    r = subprocess.run(MOUNT_NS + ["sh", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=400,
                       env={**os.environ, "PYTHONPATH": REPO})
    assert r.returncode == 0, r.stderr
    t1 = (tmp_path / "run1.txt").read_text(encoding="utf-8")
    assert (tmp_path / "rc1").read_text().strip() == "3", t1
    assert f"Run stopped early: {disk} is read-only" in t1 and "Traceback" not in t1
    with sqlite3.connect(tmp_path / "ledger1" / "ledger.sqlite") as db:
        assert "failed" not in {s for (s,) in db.execute("SELECT status FROM images")}
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "run2.txt").read_text()
    final = tmp_path / "final" / "out"
    assert {s for s, _ in _rows(final).values()} == {"done"} and len(_rows(final)) == 12
    assert _all_complete_jpegs(final) and not _no_partials(final)


def test_a_name_swapped_for_a_fifo_after_the_walk_fails_that_image_without_hanging(tmp_path):
    """The walk refuses FIFOs, but a file can be replaced by one between the walk and the read."""
    from engine.decode import read_bytes
    from engine.types import ImageError

    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    t = time.monotonic()
    with pytest.raises(ImageError, match="not a regular file"):
        read_bytes(fifo)
    assert time.monotonic() - t < 5
