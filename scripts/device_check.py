#!/usr/bin/env python3
"""The GPU check: every device path that CuPy alone can run, timed, in one JSON file.

    python scripts/device_check.py --out DIR [--deadline EPOCH | --budget SECONDS] [--rehearse]

`bash scripts/device_check.sh run` calls this on the device machine (after installing the
carried wheels); `bash scripts/device_check.sh rehearse` calls it here with `--rehearse`. The
schema of DIR/device_check.json is documented in docs/device_check.md. The checks themselves
are in benchmarks/device_figures.py (kernels, nvJPEG, CenterFace) and benchmarks/device_paths.py
(the machine record, the device path, batched detection, `sladd run --device cuda`); this file
holds their list, the budget, the child processes, the pytest run and the JSON.

Each check runs in its own child process with its own timeout (the smaller of its cap and
what is left of the budget), so a hung CUDA call, a slow kernel compile or a crash costs that
check only; the JSON is rewritten after every check and once more at the end, and it is
written even when the budget runs out or the process is told to stop (SIGTERM/SIGINT).

Without a usable CUDA device (and always with --rehearse) every check still runs its code,
on small inputs, with the strict CuPy stand-in (tests/cupy_sim.py) as the device module and
nvImageCodec's CPU-only backend where the GPU one would be used, and is recorded as
`skipped` with the reason: the rehearsal catches a broken script before it meets a GPU.
Figures measured that way stay inside their check; the top-level `figures` holds only what
was measured on a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCHEMA = "sladd-device-check/1"
JSON_NAME = "device_check.json"
BUDGET_S = 450            # the whole check, wheel install included, stays under 8 minutes
RESERVE_S = 6             # kept back to write the JSON after the last check
MIN_STEP_S = 8            # a check is not started with less than this left

# (name, what it covers, cap in seconds on a GPU). The order is the order they run in; the
# pytest run comes last but one so that the figures come first when time is short.
CHECKS = [
    ("kernels", "CuPy mask kernels vs NumPy (benchmarks.bench_kernels' region-only drawing)", 90),
    ("nvjpeg_decode", "nvImageCodec (nvJPEG) decode into GPU memory vs TurboJPEG on the host", 40),
    ("nvjpeg_encode", "nvImageCodec (nvJPEG) encode of device frames vs TurboJPEG", 40),
    ("centerface_decode", "CenterFace's output decoding and input blob on the device vs the host", 30),
    ("device_path", "the device path with real CuPy: upload, detection (ONNX Runtime CPU behind the "
                    "GPU sessions' contract), device masks, device encode; vs the host path", 75),
    ("batched_detection", "the service's batching on the device: detect_batch over device frames vs one by one", 45),
    ("gpu_tests", "pytest -m gpu over every test file with a gpu test (CuPy-only ones run, "
                  "DALI/TensorRT/ONNX Runtime CUDA ones skip with their reason)", 200),
    ("sladd_run_cuda", "`sladd run --device cuda` end to end vs --device cpu (needs a GPU model runtime)", 90),
]
TEST_ONLY = {"selftest_sleep": ("sleeps (tests the per-check timeout)", 60)}


def child(step: str, result: Path, workdir: Path, rehearse: bool) -> int:
    """One check in this process: its result lines go to `result` (read by the parent)."""
    import traceback

    from benchmarks import device_figures, device_paths

    ctx = device_figures.Ctx(result, workdir, rehearse)
    fn = getattr(device_figures, f"check_{step}", None) or getattr(device_paths, f"check_{step}")
    try:
        detail = fn(ctx)
        if step == "environment":
            ctx.emit(status="passed", reason="")
        elif rehearse:
            ctx.emit(status="skipped", reason=f"rehearsed: {detail}" if detail else "rehearsed")
        else:
            ctx.emit(status="passed", reason=detail or "")
    except device_figures.Skip as exc:
        ctx.emit(status="skipped", reason=str(exc))
    except BaseException as exc:  # noqa: BLE001 - every failure is the check's result
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        ctx.emit(status="failed", reason=f"{type(exc).__name__}: {str(exc)[:800]}", traceback=tb[-3000:])
        return 1
    return 0


def _jsonable(o):
    from benchmarks.device_figures import _jsonable as j
    return j(o)


_PLUGIN = '''
import json, os

def _write(rec):
    with open(os.environ["SLADD_DEVICE_CHECK_TESTS"], "a") as fh:
        fh.write(json.dumps(rec) + "\\n")

def _reason(report):
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).replace("Skipped: ", "", 1)
    text = getattr(report, "longreprtext", "") or str(report.longrepr or "")
    lines = [l for l in text.strip().splitlines() if l.strip()]
    err = [l for l in lines if l.startswith("E ")]
    return ((err[-1] if err else lines[-1]) if lines else "")[:500]

def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and not report.passed) or (report.when == "teardown" and report.failed):
        _write({"id": report.nodeid, "status": report.outcome, "reason": "" if report.passed else _reason(report),
                "duration_s": round(report.duration, 3), "when": report.when})

def pytest_collectreport(report):
    if report.failed:
        _write({"id": report.nodeid, "status": "failed", "reason": "collection error: " + _reason(report),
                "duration_s": 0.0, "when": "collect"})
'''


def gpu_test_files() -> list[str]:
    """Every test file with a `gpu` test: marked ones and those using the `xp` fixture (whose
    cupy case carries the mark). New GPU tests join the check without editing this script."""
    out = []
    for p in sorted((ROOT / "tests").glob("test_*.py")):
        text = p.read_text(errors="replace")
        if "mark.gpu" in text or re.search(r"def test_\w+\([^)]*\bxp\b", text):
            out.append(str(p.relative_to(ROOT)))
    return out


def _tail(path: Path, n=2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _run_child(argv, log: Path, timeout: float, env: dict) -> tuple[int | None, float]:
    """(return code or None on timeout, seconds). The child gets its own process group, which
    is what a timeout ends (the child and whatever it started, e.g. pytest's workers)."""
    t = time.perf_counter()
    with open(log, "w") as fh:
        p = subprocess.Popen(argv, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(p)
            rc = None
        except BaseException:
            _kill_group(p)
            raise
    return rc, time.perf_counter() - t


def _kill_group(p):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def _read_result(path: Path) -> dict:
    out = {"figures": {}}
    if not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        for k, v in rec.items():
            if k == "figures":
                out["figures"].update(v)
            else:
                out[k] = v
    return out


class Parent:
    def __init__(self, args):
        self.args = args
        self.t0 = time.time()
        self.deadline = args.deadline if args.deadline else self.t0 + args.budget
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs = self.out / "device_check_logs"
        self.logs.mkdir(exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="sladd-device-check-"))
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.env.setdefault("SLADD_MODELS_DIR", str(self.work / "models"))
        if args.install_log:
            self.env["SLADD_DEVICE_CHECK_INSTALL_LOG"] = args.install_log
        self.doc = {"schema": SCHEMA, "mode": "rehearse" if args.rehearse else "run", "complete": False,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.t0)),
                    "finished": None, "budget_s": round(self.deadline - self.t0, 1), "wall_s": None,
                    "gpu": None, "machine": {}, "summary": {}, "checks": [], "tests": [], "figures": {}}
        self.rehearse = args.rehearse
        self.no_gpu_reason = "rehearsal (--rehearse): the GPU is not used" if args.rehearse else None

    def left(self) -> float:
        return self.deadline - time.time() - RESERVE_S

    def write(self):
        d = self.doc
        d["wall_s"] = round(time.time() - self.t0, 2)
        counts = {s: sum(c["status"] == s for c in d["checks"]) for s in ("passed", "failed", "skipped")}
        tcounts = {s: sum(t["status"] == s for t in d["tests"]) for s in ("passed", "failed", "skipped")}
        d["summary"] = {**counts, "tests": tcounts, "ok": counts["failed"] == 0}
        tmp = self.out / (JSON_NAME + ".tmp")
        tmp.write_text(json.dumps(d, indent=2, default=_jsonable) + "\n")
        os.replace(tmp, self.out / JSON_NAME)

    def child_argv(self, name, result):
        argv = [sys.executable, str(Path(__file__).resolve()), "--step", name, "--result", str(result),
                "--workdir", str(self.work / name)]
        if self.rehearse and name != "environment":
            argv.append("--rehearse")
        return argv

    def environment(self):
        result = self.work / "environment.jsonl"
        rc, dt = _run_child(self.child_argv("environment", result), self.logs / "environment.log",
                            max(5.0, min(60.0, self.left())), self.env)
        r = _read_result(result)
        m = r.get("machine") or {"error": "the environment probe did not finish" if rc is None else
                                 f"the environment probe failed: {_tail(self.logs / 'environment.log', 800)}"}
        m["probe_s"] = round(dt, 2)
        self.doc["machine"] = m
        cp = m.get("cupy") or {}
        self.doc["gpu"] = cp.get("gpu")
        if not self.rehearse and not cp.get("usable"):
            self.rehearse = True
            self.no_gpu_reason = f"no usable CUDA device ({cp.get('reason') or 'the probe failed'})"

    def run_check(self, name, title, cap):
        rec = {"name": name, "title": title, "status": "skipped", "reason": "", "duration_s": 0.0,
               "timeout_s": None, "figures": {}, "log": ""}
        self.doc["checks"].append(rec)
        left = self.left()
        if left < MIN_STEP_S:
            rec["reason"] = f"not started: {max(0.0, left):.0f} s of the budget left (the check stops before 8 minutes)"
            return
        timeout = round(min(cap, left), 1)
        rec["timeout_s"] = timeout
        log = self.logs / f"{name}.log"
        (self.work / name).mkdir(parents=True, exist_ok=True)
        if name == "gpu_tests":
            self._gpu_tests(rec, timeout, log)
        else:
            result = self.work / f"{name}.jsonl"
            rc, dt = _run_child(self.child_argv(name, result), log, timeout, self.env)
            r = _read_result(result)
            rec["duration_s"] = round(dt, 2)
            rec["figures"] = r["figures"]
            if rc is None:
                rec["status"], rec["reason"] = "failed", f"timed out after {timeout:.0f} s (figures so far kept)"
            elif "status" in r:
                rec["status"], rec["reason"] = r["status"], r.get("reason", "")
                if r.get("traceback"):
                    rec["traceback"] = r["traceback"]
            else:
                rec["status"], rec["reason"] = "failed", f"the check exited {rc} without a result"
        rec["log"] = _tail(log)
        if self.rehearse and rec["status"] != "failed":
            rec["status"] = "skipped"
            rec["reason"] = f"{self.no_gpu_reason}; {rec['reason'] or 'rehearsed'}"

    def _gpu_tests(self, rec, timeout, log):
        files = gpu_test_files()
        rec["figures"]["files"] = files
        plugin_dir = self.work / "plugin"
        plugin_dir.mkdir(exist_ok=True)
        (plugin_dir / "sladd_device_check_plugin.py").write_text(_PLUGIN)
        tests_jsonl = self.work / "gpu_tests.jsonl"
        env = dict(self.env, SLADD_DEVICE_CHECK_TESTS=str(tests_jsonl))
        env["PYTHONPATH"] = os.pathsep.join([str(plugin_dir), env["PYTHONPATH"]])
        env.pop("SLADD_MODELS_DIR", None)                         # the tests' conftest makes its own
        argv = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu", "-p", "no:cacheprovider", "--continue-on-collection-errors",
                "-p", "sladd_device_check_plugin", *files]
        rc, dt = _run_child(argv, log, timeout, env)
        rec["duration_s"] = round(dt, 2)
        tests = []
        if tests_jsonl.is_file():
            for line in tests_jsonl.read_text(errors="replace").splitlines():
                try:
                    tests.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        self.doc["tests"] = tests
        n = {s: sum(t["status"] == s for t in tests) for s in ("passed", "failed", "skipped")}
        rec["figures"]["counts"] = n
        reasons = sorted({t["reason"] for t in tests if t["status"] == "skipped"})
        if rc is None:
            rec["status"], rec["reason"] = "failed", f"timed out after {timeout:.0f} s ({n} so far)"
        elif n["failed"] or rc not in (0, 5):
            first = next((t for t in tests if t["status"] == "failed"), None)
            rec["status"] = "failed"
            rec["reason"] = (f"{n['failed']} failed, {n['passed']} passed, {n['skipped']} skipped"
                             + (f"; first: {first['id']}: {first['reason']}" if first else f"; pytest exited {rc}"))
        elif n["passed"]:
            rec["status"] = "passed"
            rec["reason"] = f"{n['passed']} passed, {n['skipped']} skipped" + (
                f" ({'; '.join(reasons)[:600]})" if reasons else "")
        else:
            rec["status"] = "skipped"
            rec["reason"] = f"all {n['skipped']} gpu tests skipped: " + "; ".join(reasons)[:800] if tests else \
                "no gpu test collected"

    def main(self) -> int:
        def stop(signum, _frame):
            raise KeyboardInterrupt(f"signal {signum}")
        signal.signal(signal.SIGTERM, stop)
        interrupted = None
        try:
            self.write()
            self.environment()
            self.write()
            for name, title, cap in self.args.checks:
                self.run_check(name, title, cap)
                self.write()
        except KeyboardInterrupt as exc:
            interrupted = str(exc) or "interrupted"
        finally:
            self.doc["figures"] = {} if self.rehearse else {
                c["name"]: c["figures"] for c in self.doc["checks"] if c["status"] != "skipped" and c["figures"]}
            self.doc["complete"] = interrupted is None
            if interrupted:
                self.doc["interrupted"] = interrupted
            self.doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self.write()
            shutil.rmtree(self.work, ignore_errors=True)
        s = self.doc["summary"]
        print(f"[device_check] {self.doc['mode']}: {s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped "
              f"in {self.doc['wall_s']:.0f} s; GPU: {self.doc['gpu'] or 'none'}; {self.out / JSON_NAME}")
        for c in self.doc["checks"]:
            print(f"  {c['status']:8} {c['name']:18} {c['duration_s']:6.1f} s  {c['reason'][:150]}")
        return 0 if s["failed"] == 0 and interrupted is None else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="sladd GPU check (CuPy-only device paths) -> one JSON file")
    ap.add_argument("--out", default=None, help=f"folder for {JSON_NAME} and the per-check logs")
    ap.add_argument("--deadline", type=float, default=None, help="stop by this Unix time (the shell script's start + budget)")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds from now, when --deadline is not given")
    ap.add_argument("--rehearse", action="store_true", help="do not use a GPU: run every check's code on the stand-in")
    ap.add_argument("--checks", default=None, help="comma-separated subset of the checks, in this order")
    ap.add_argument("--cap", action="append", default=[], metavar="NAME=SECONDS", help="override a check's cap")
    ap.add_argument("--install-log", default=None, help="the wheel install's log (recorded in the machine record)")
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:
        wd = Path(args.workdir or tempfile.mkdtemp())
        wd.mkdir(parents=True, exist_ok=True)
        return child(args.step, Path(args.result), wd, args.rehearse)
    if not args.out:
        ap.error("--out is required")
    known = {n: (n, t, c) for n, t, c in CHECKS}
    known.update({n: (n, t, c) for n, (t, c) in TEST_ONLY.items()})
    names = args.checks.split(",") if args.checks else [n for n, _, _ in CHECKS]
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown checks {unknown}; valid: {', '.join(known)}")
    caps = dict(kv.split("=", 1) for kv in args.cap)
    args.checks = [(n, known[n][1], float(caps.get(n, known[n][2]))) for n in names]
    return Parent(args).main()


if __name__ == "__main__":
    sys.exit(main())
