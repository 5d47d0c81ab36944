"""Guards around a whole run: outputs that would overwrite the inputs, two runs on one output,
SIGTERM from a container runtime, a read-only output folder."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from engine.lock import RunLock, lock_path
from engine.driver import ledger_path
from tests.conftest import jpeg_bytes, scene_with_faces
from tests.test_reliability import _assert_complete, _cfg

SLADD = [sys.executable, "-m", "engine.cli"]


def _tree(root, portrait, n):
    """n small images with one face each, in three folders."""
    for i in range(n):
        img, _ = scene_with_faces(portrait, h=240, w=320, faces=((40 + 5 * (i % 25), 20, 150),), seed=i)
        d = root / f"d{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img_{i:02d}.jpg").write_bytes(jpeg_bytes(img, quality=90))
    return root


def _snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sladd(*args, **kw):
    return subprocess.run(SLADD + [str(a) for a in args], capture_output=True, text=True, **kw)


@pytest.mark.parametrize("where", ["same", "parent", "symlink-alias", "archive-is-input", "error-tree-is-input"])
def test_outputs_that_would_overwrite_inputs_are_refused(tmp_path, portrait, where):
    inp = _tree(tmp_path / "data" / "in", portrait, 3)
    before = _snapshot(tmp_path)
    args = ["run", "-i", inp, "-q"]
    if where == "same":
        args += ["-o", inp]
    elif where == "parent":
        args += ["-o", inp.parent]
    elif where == "symlink-alias":
        (tmp_path / "alias").symlink_to(inp, target_is_directory=True)
        args += ["-o", tmp_path / "alias"]
    elif where == "archive-is-input":
        args += ["-o", tmp_path / "out", "-a", inp]
    else:                                       # OUTPUT_error would be the input folder
        inp2 = tmp_path / "x_error"
        inp.rename(inp2)
        before = _snapshot(tmp_path)
        args = ["run", "-i", inp2, "-o", tmp_path / "x", "-q"]
    r = _sladd(*args)
    assert r.returncode == 2, r.stderr
    assert "overwrite the originals" in r.stderr
    assert "Traceback" not in r.stderr
    assert _snapshot(tmp_path) == before, "nothing may be touched"
    assert not list(tmp_path.rglob(".sladd")), "no ledger may be created"


def test_output_inside_the_input_is_allowed(tmp_path, portrait):
    inp = _tree(tmp_path / "in", portrait, 2)
    r = _sladd("run", "-i", inp, "-o", inp / "anonymised", "-q", "-k", _cfg(tmp_path))
    assert r.returncode == 0, r.stderr
    assert len(list((inp / "anonymised").rglob("*.jpg"))) == 2


def _wait_for(pred, timeout=120.0, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if proc is not None and proc.poll() is not None:
            return pred()
        time.sleep(0.05)
    return False


def _done_rows(out):
    try:
        with sqlite3.connect(ledger_path(out), timeout=5) as db:
            return dict(db.execute("SELECT status, COUNT(*) FROM images GROUP BY status")).get("done", 0)
    except sqlite3.Error:
        return 0


def test_sigterm_stops_cleanly_with_a_summary_and_rerun_finishes(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 60), tmp_path / "out"
    cfg = _cfg(tmp_path)
    cmd = SLADD + ["run", "-i", str(inp), "-o", str(out), "-k", str(cfg), "-q"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: _done_rows(out) >= 3, proc=p), "the run must get going"
    assert p.poll() is None, "the test must interrupt a run in progress"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    assert "SIGTERM" in err and "Traceback" not in err
    assert "Identified images" in err and "Run stopped early: interrupted (SIGTERM)" in err
    with sqlite3.connect(ledger_path(out)) as db:
        status = dict(db.execute("SELECT status, COUNT(*) FROM images GROUP BY status"))
    assert 3 <= status.get("done", 0) < 60
    assert set(status) == {"done"}, f"a clean stop leaves no 'running' rows: {status}"
    assert not list(out.rglob("*partial*")), "no temporary file survives a clean stop"
    assert not lock_path(out).read_text(), "the lock record is cleared on a clean stop"
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "stale lock" not in r.stderr
    _assert_complete(inp, out)


def _hold_lock(out, seconds):
    """Another process holding the output's lock for `seconds` (as a run does)."""
    code = ("import sys, time; from engine.lock import RunLock; l = RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(float(sys.argv[2])); l.release()")
    p = subprocess.Popen([sys.executable, "-c", code, str(out), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_run_on_the_same_output_is_refused_naming_the_holder(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 4), tmp_path / "out"
    cmd = ["run", "-i", inp, "-o", out, "-k", _cfg(tmp_path), "-q"]
    holder = _hold_lock(out, 60)
    try:
        r = _sladd(*cmd)
        assert r.returncode == 2, r.stderr
        assert f"pid {holder.pid} on host {socket.gethostname()}, started 20" in r.stderr
        assert "--wait-lock" in r.stderr and "Traceback" not in r.stderr
        assert not (out / "d0").exists(), "nothing processed"
    finally:
        holder.kill()
        holder.wait()


def test_wait_lock_waits_for_the_holder_then_runs(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 4), tmp_path / "out"
    holder = _hold_lock(out, 3)
    t = time.monotonic()
    r = _sladd("run", "-i", inp, "-o", out, "-k", _cfg(tmp_path), "-q", "--wait-lock")
    assert holder.wait() == 0
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t >= 2.5
    assert f"waiting for the run holding {lock_path(out)}: pid {holder.pid}" in r.stderr
    assert "stale lock" not in r.stderr
    _assert_complete(inp, out)


def test_two_real_runs_at_once_one_is_refused(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 6), tmp_path / "out"
    cmd = SLADD + ["run", "-i", str(inp), "-o", str(out), "-k", str(_cfg(tmp_path)), "-q", "--force"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    errs = [p.stderr.read() for p in procs]
    assert codes in ([0, 0], [0, 2]), errs            # both ran one after the other, or one was refused
    if codes == [0, 2]:
        assert any("another sladd run is using" in e for e in errs)
    _assert_complete(inp, out)


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 2), tmp_path / "out"
    # A run killed with -9 leaves its record but not its kernel lock.
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lock_path(out).parent.mkdir(parents=True)
    lock_path(out).write_text(json.dumps({"pid": victim.pid, "host": socket.gethostname(),
                                          "started": "2026-11-30T01:02:03+00:00"}))
    victim.kill()
    victim.wait()
    r = _sladd("run", "-i", inp, "-o", out, "-q", "-k", _cfg(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "taking over a stale lock" in r.stderr and f"pid {victim.pid}" in r.stderr


def test_lock_without_flock_uses_the_record(tmp_path, monkeypatch):
    """On a share that refuses flock the record is the lock: held by a live pid it refuses, from a
    dead pid on this host it is taken over."""
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with RunLock(tmp_path) as held:
        assert json.loads(held.path.read_text())["pid"] == os.getpid()
        with pytest.raises(Exception, match=f"pid {os.getpid()} on host"):
            RunLock(tmp_path).acquire()
    assert not lock_path(tmp_path).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(tmp_path).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    with RunLock(tmp_path):
        assert json.loads(lock_path(tmp_path).read_text())["pid"] == os.getpid()


def _can_unshare() -> bool:
    try:
        r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    except FileNotFoundError:
        return False
    return r.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs user+mount namespaces (unshare) to mount a read-only folder")
def test_read_only_output_is_a_clear_error(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 2), tmp_path / "out"
    out.mkdir()
    script = (f"mount -t tmpfs -o size=1m tmpfs {out} && mount -o remount,ro {out} && "
              f"exec {sys.executable} -m engine.cli run -i {inp} -o {out} -q")
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                       capture_output=True, text=True, cwd=os.getcwd())
    assert r.returncode == 3, r.stderr
    assert "Read-only file system" in r.stderr and str(out) in r.stderr
    assert "Traceback" not in r.stderr


def test_the_program_exits_with_the_runs_code_and_everything_flushed(tmp_path, portrait):
    """engine.cli.entry leaves without the interpreter's teardown after a run: the exit code, the
    log file, the summary and the ledger must all be there as after a normal exit."""
    inp = _tree(tmp_path / "in", portrait, 2)
    (inp / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out, logs, mark = tmp_path / "out", tmp_path / "logs", tmp_path / "fast-exit"
    argv = ["sladd", "run", "-i", str(inp), "-o", str(out), "-l", str(logs), "-k", str(_cfg(tmp_path))]
    code = ("import os, sys\nreal = os._exit\n"
            f"def marked(c):\n    open({str(mark)!r}, 'w').write(str(c))\n    real(c)\n"
            f"os._exit = marked\nsys.argv = {argv!r}\nimport engine.cli\nengine.cli.entry()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr                   # one image failed
    assert mark.read_text() == "1"                       # it left through os._exit
    assert "Failed: 1" in r.stderr + r.stdout
    log = next(logs.glob("*.log")).read_text()
    assert "broken.jpg" in log and "Failed: 1" in log   # the last lines reached the file
    with sqlite3.connect(ledger_path(out)) as db:
        states = sorted(s for (s,) in db.execute("SELECT status FROM images"))
    assert states.count("failed") == 1 and len(states) == 3
    assert len(list(out.rglob("*.jpg"))) == 2


def test_the_host_name_is_the_socket_module_s_without_importing_it():
    """engine.fsutil.hostname (lock files, log names, mails) names the machine as
    socket.gethostname() does; a run's start no longer imports the socket module for it."""
    from pathlib import Path

    from engine.fsutil import hostname

    assert hostname() == socket.gethostname()
    code = ("import sys; import engine.lock, engine.logs, engine.notify, engine.fsutil as f; f.hostname(); "
            "print('socket' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1])).stdout
    assert out.strip() == "False"
