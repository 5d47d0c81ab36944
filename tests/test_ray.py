"""The Ray executor on a real local Ray cluster (127.0.0.1 only): the same outputs as the local
stream, byte for byte; an actor killed, a node removed, the driver killed: nothing lost, nothing
twice, nothing left running."""
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from engine.config import load_config
from engine.driver import ledger_path
from engine.driver.reaper import descendants, ray_actors
from engine.fsutil import is_partial
from engine.run import run
from tests.test_reliability import _cfg
from tests.test_run_guards import _tree

ray = pytest.importorskip("ray", reason="needs Ray (pip install 'sladd[ray]'; scripts/setup.sh installs it)")

pytestmark = pytest.mark.ray


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".sladd" not in p.parts}


def _status(out):
    with sqlite3.connect(ledger_path(out)) as db:
        return dict(db.execute("SELECT key, status FROM images"))


def _exactly_once(inp, out):
    keys = {p.relative_to(inp).as_posix() for p in inp.rglob("*.jpg")}
    assert _status(out) == {k: "done" for k in keys}
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.jpg")} == keys
    assert not [p for p in out.rglob("*") if is_partial(p.name)], "no temporary files"


def _ray_cfg(tmp_path, extra=""):
    return load_config(_cfg(tmp_path, "engine: {executor: ray, workers: 2, ray_batch: 2}\n" + extra))[0]


def test_ray_run_equals_the_local_run_byte_for_byte(tmp_path, portrait):
    inp = _tree(tmp_path / "in", portrait, 12)
    local, _ = load_config(_cfg(tmp_path))
    st_local = run(local, inp, tmp_path / "local")
    st_ray = run(_ray_cfg(tmp_path), inp, tmp_path / "ray")
    assert st_local.anonymised == st_ray.anonymised == 12 and st_ray.failed == 0
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")
    assert st_ray.detections == st_local.detections
    _exactly_once(inp, tmp_path / "ray")
    assert not ray.is_initialized(), "the embedded cluster is shut down after the run"


def _actors():
    return ray_actors(os.getpid())


def _done(out):
    try:
        return list(_status(out).values()).count("done")
    except sqlite3.Error:
        return 0


def test_an_actor_killed_mid_run_loses_nothing(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 60), tmp_path / "out"
    killed = []

    def killer():
        end = time.monotonic() + 120
        while time.monotonic() < end and _done(out) < 6:
            time.sleep(0.05)
        actors = _actors()
        if actors and _done(out) < 60:
            os.kill(actors[0], signal.SIGKILL)
            killed.append(actors[0])
    t = threading.Thread(target=killer)
    t.start()
    st = run(_ray_cfg(tmp_path), inp, out)
    t.join()
    assert killed, "the test must kill an actor while the run is going"
    assert st.failed == 0 and not st.fatal
    _exactly_once(inp, out)


def test_a_node_removed_mid_run_loses_nothing(tmp_path, portrait):
    from ray.cluster_utils import Cluster

    from engine.driver.ray_executor import import_ray

    import_ray(embedded=True)                       # the simulated nodes stay on 127.0.0.1
    inp, out = _tree(tmp_path / "in", portrait, 60), tmp_path / "out"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(3)]    # two actors and a spare node
        cluster.wait_for_nodes()
        removed = []

        def remove_a_busy_node():
            end = time.monotonic() + 120
            while time.monotonic() < end and _done(out) < 6:
                time.sleep(0.05)
            busy = [n for n in nodes if n.all_processes and any(
                pid in _actors() for pid in descendants(n.all_processes["raylet"][0].process.pid))]
            if busy and _done(out) < 60:
                cluster.remove_node(busy[0])
                removed.append(busy[0])
        t = threading.Thread(target=remove_a_busy_node)
        t.start()
        cfg = _ray_cfg(tmp_path, "")
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"ray_address": cluster.address})})
        st = run(cfg, inp, out)
        t.join()
        assert removed, "the test must remove a node that holds an actor while the run is going"
        assert st.failed == 0 and not st.fatal
        _exactly_once(inp, out)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def test_driver_killed_three_times_then_rerun_gives_every_image_once(tmp_path, portrait):
    inp, out = _tree(tmp_path / "in", portrait, 80), tmp_path / "out"
    cmd = [sys.executable, "-m", "engine.cli", "run", "-i", str(inp), "-o", str(out), "-k", str(_cfg(tmp_path)),
           "-q", "--executor", "ray", "--workers", "2"]
    for k in range(3):
        before = _done(out)
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + 120
        while time.monotonic() < end and _done(out) < before + 5 and p.poll() is None:
            time.sleep(0.05)
        if k == 0:
            # The driver alone: Ray's processes and the actors must go with it (no orphans).
            kids = descendants(p.pid)
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(_alive(q) for q in kids):
                time.sleep(0.2)
            left = {q: _cmdline(q) for q in kids if _alive(q)}
            assert not left, f"no Ray process outlives a driver killed with -9: {left}"
        else:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _exactly_once(inp, out)


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        return "?"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
