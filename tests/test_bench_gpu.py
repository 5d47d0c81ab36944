"""benchmarks/bench_gpu.py runs its GPU code paths in DALI's CPU-only mode here (the figures
are not GPU figures; the script's plumbing and its report are what is checked)."""
import json

import pytest

from benchmarks import bench_gpu
from kernels._xp import cupy_or_none

pytest.importorskip("nvidia.dali", reason="needs NVIDIA DALI (the dali extra)")


def test_bench_gpu_in_cpu_mode_measures_every_stage(tmp_path, capsys):
    assert bench_gpu.main(["--device", "cpu", "--sizes", "1024x768", "--count", "3", "--runs", "1",
                           "--batch", "2", "--results", str(tmp_path)]) == 0
    (row,) = [json.loads(x) for x in (tmp_path / "gpu.jsonl").read_text().splitlines()]
    assert row["image"] == "1024x768" and row["images"] == 3 and row["runtime"] == "onnxruntime"
    for stage in (row["decode"]["dali"], row["detect"], row["mask+copy+encode"], row["end_to_end"]):
        assert stage["images_per_s"] > 0
    assert row["faces_found"] == row["faces_total"] == 9
    assert 0 < row["end_to_end_vs_decode"] < 1
    assert "| 1024x768 | onnxruntime fp32 |" in (tmp_path / "gpu-latest.md").read_text()


def test_bench_gpu_on_cuda_without_a_gpu_says_what_is_missing(tmp_path, capsys):
    if cupy_or_none() is not None:
        pytest.skip("this machine has a GPU")
    assert bench_gpu.main(["--device", "cuda", "--results", str(tmp_path)]) == 2
    assert "--device cuda: missing" in capsys.readouterr().err


def test_bench_kernels_device_column_with_the_cupy_stand_in(monkeypatch, capsys, tmp_path):
    """The kernel benchmark's CuPy column, run with the strict stand-in: the device path draws
    what NumPy draws (difference 0) and the report carries the column."""
    from benchmarks import bench_kernels
    from tests import cupy_sim

    sim = cupy_sim.install(monkeypatch)
    monkeypatch.setattr(bench_kernels, "cupy_or_none", lambda: sim)
    monkeypatch.setattr(bench_kernels, "RESULTS", tmp_path / "kernels.jsonl")
    bench_kernels.main(["--sizes", "640x480", "--masks", "3", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "CuPy region-only" in out
    rows = [json.loads(x) for x in (tmp_path / "kernels.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["device_max_diff_vs_numpy"] == 0 and r["device_mp_s"] > 0 for r in rows)
