"""The GPU check (scripts/device_check.sh, scripts/device_check.py) rehearsed without a GPU: it
must run every check's code, skip each with its reason, write one valid JSON file and stay
within its budget; what `prepare` leaves for a device call must stay under 64 MiB."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "device_check.py"
sys.path.insert(0, str(SCRIPT.parent))
import device_check  # noqa: E402

LIMIT = 64 * 1024 * 1024


def _load(out: Path) -> dict:
    doc = json.loads((out / device_check.JSON_NAME).read_text())
    assert doc["schema"] == device_check.SCHEMA
    for key in ("mode", "complete", "started", "finished", "budget_s", "wall_s", "gpu", "machine", "summary",
                "checks", "tests", "figures"):
        assert key in doc, key
    for c in doc["checks"]:
        assert set(c) >= {"name", "title", "status", "reason", "duration_s", "timeout_s", "figures", "log"}, c
        assert c["status"] in ("passed", "failed", "skipped"), c
    return doc


def test_rehearsal_skips_every_check_with_a_reason_and_writes_the_json(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    p = subprocess.run(["bash", str(ROOT / "scripts" / "device_check.sh"), "rehearse"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=170)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = _load(tmp_path)
    assert doc["mode"] == "rehearse" and doc["complete"] and doc["gpu"] is None
    assert [c["name"] for c in doc["checks"]] == [n for n, _, _ in device_check.CHECKS]
    for c in doc["checks"]:
        assert c["status"] == "skipped", (c["name"], c["reason"], c.get("traceback"), c["log"])
        assert c["reason"].startswith("rehearsal (--rehearse): the GPU is not used; ") and len(c["reason"]) > 50, c
    assert doc["summary"] == {"passed": 0, "failed": 0, "skipped": len(device_check.CHECKS),
                              "tests": doc["summary"]["tests"], "ok": True}
    assert doc["figures"] == {}, "rehearsal figures must not pass for GPU figures"
    # Each check's code ran (on the stand-in / the CPU-only backend) and left its figures.
    figs = {c["name"]: c["figures"] for c in doc["checks"]}
    assert figs["kernels"]["rows"] and all(r["max_diff_vs_numpy"] == 0 for r in figs["kernels"]["rows"])
    reasons = {c["name"]: c["reason"] for c in doc["checks"]}
    for name in ("nvjpeg_decode", "nvjpeg_encode"):          # nvImageCodec's CPU-only backend, where installed
        assert figs[name].get("count") or "nvImageCodec is not importable" in reasons[name], reasons[name]
    assert figs["centerface_decode"]["boxes"] > 0
    assert "device_ms_per_image" in figs["device_path"] and "batched_ms_per_image" in figs["batched_detection"]
    # The gpu tests were collected and all skipped, each with its reason.
    assert doc["tests"] and all(t["status"] == "skipped" and t["reason"] for t in doc["tests"])
    assert figs["gpu_tests"]["files"] == device_check.gpu_test_files()
    m = doc["machine"]
    assert m["python"] and "cupy" in m and m["cupy"]["usable"] is False and m["cupy"]["reason"]
    assert doc["wall_s"] < 60


def test_a_check_past_its_timeout_fails_alone_and_keeps_its_figures(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--rehearse", "--out", str(tmp_path), "--checks",
                        "selftest_sleep,centerface_decode", "--cap", "selftest_sleep=2"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    doc = _load(tmp_path)
    sleep, cf = doc["checks"]
    assert sleep["status"] == "failed" and "timed out after 2 s" in sleep["reason"]
    assert sleep["figures"] == {"started": True} and sleep["duration_s"] < 15
    assert cf["status"] == "skipped" and cf["figures"]["boxes"] > 0
    assert doc["complete"] and doc["summary"]["failed"] == 1 and not doc["summary"]["ok"]


def test_checks_past_the_budget_are_not_started_and_the_json_is_still_written(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--rehearse", "--out", str(tmp_path), "--budget", "3"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = _load(tmp_path)
    assert len(doc["checks"]) == len(device_check.CHECKS)
    assert all(c["status"] == "skipped" and "budget" in c["reason"] for c in doc["checks"])


def test_the_gpu_test_files_are_found_by_their_marks():
    files = device_check.gpu_test_files()
    for f in ("tests/test_kernels.py", "tests/test_device_path.py", "tests/test_gpu_path.py",
              "tests/test_nvimgcodec.py", "tests/test_gpu_review.py", "tests/test_gpu_runtime.py"):
        assert f in files
    assert "tests/test_device_check.py" not in files


def test_the_budget_keeps_the_whole_check_under_eight_minutes():
    assert device_check.BUDGET_S + device_check.RESERVE_S <= 8 * 60 - 20
    text = (ROOT / "scripts" / "device_check.sh").read_text()
    assert "DEVICE_CHECK_BUDGET_S:-450" in text and "--deadline" in text


def test_the_carried_folder_fits_a_device_call():
    d = ROOT / ".device"
    if not (d / "whl").is_dir():
        pytest.skip("not prepared here (bash scripts/device_check.sh prepare)")
    size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file() and p.relative_to(d).parts[0] != "out")
    assert size <= LIMIT, f".device holds {size / 2**20:.1f} MiB, over the 64 MiB a device call carries"
