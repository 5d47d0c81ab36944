"""OpenVINO (Intel's CPU runtime) behind the session interface the adapters use
(`get_inputs()`, `get_outputs()`, `run(names, feed)`): `engine.runtime: openvino` runs every model
on it. `engine.runtime: auto` on the CPU instead hands it only CenterFace's large passes where it
ran them faster on this CPU (`large_passes_chosen`, engine.runtimes.ov_passes)."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from engine.runtimes.ov_import import Session as _Session
from engine.runtimes.ov_import import openvino_module as _openvino

__all__ = ["OpenVinoRuntime", "time_large_pass", "large_passes_chosen"]

LOG = logging.getLogger("sladd")


class OpenVinoRuntime:
    """OpenVINO's CPU plugin, latency hint, `threads` inference threads. Takes the keyword
    arguments every runtime takes; the TensorRT plan settings do not apply to it."""

    name = "openvino"

    def __init__(self, *, device: str = "cpu", threads: Optional[int] = None, precision: str = "fp16",
                 cache: Optional[Path] = None, calibration_images: Optional[Path] = None,
                 max_batch: Optional[int] = None):
        if device != "cpu":
            raise ValueError(f"engine.runtime openvino runs on the CPU (device cpu), got device {device!r}")
        self.ov = _openvino()
        self.core = self.ov.Core()
        self.device = device
        self.threads = threads or os.cpu_count() or 1
        # fp32 inference: OpenVINO would otherwise run bf16 on CPUs that have it (recall unmeasured).
        self.config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_PRECISION_HINT": "f32"}

    def session(self, model: Any, family: Optional[str] = None) -> _Session:
        """`model`: a path or serialized ONNX bytes; `family` is not used."""
        what = "a graph in memory" if isinstance(model, (bytes, bytearray)) else str(model)
        try:
            if isinstance(model, (bytes, bytearray)):
                m = self.core.read_model(bytes(model), b"")       # ONNX bytes, no weights file
            else:
                m = self.core.read_model(str(model))
            return _Session(self.core.compile_model(m, "CPU", self.config))
        except RuntimeError as exc:
            # NanoDet's TF-converted graph (ScatterND with scalar indices) is one OpenVINO refuses.
            raise RuntimeError(f"OpenVINO cannot load {what} ({family or 'model'}): set engine.runtime "
                               f"onnxruntime. {str(exc).splitlines()[-1]}") from exc


def _median_ms(session, feed: dict, runs: int = 5) -> float:
    session.run(None, feed)                                   # warm-up (first run allocates)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feed)
        ts.append(time.perf_counter() - t)
    return 1000 * float(np.median(ts))


def time_large_pass(threads: Optional[int], model: Path, size_hw=(1024, 1248)) -> tuple[str, dict]:
    """('openvino' or 'onnxruntime', {runtime: ms}): which runs CenterFace's candidate pass over a
    5 MP image (1248x1024) faster on this CPU, both from `model` (the file the run uses: its
    INT8 build where engine.precision picks it), one request on `threads` threads; OpenVINO must
    win by 10%. About a second."""
    from engine.models.centerface import dynamic_graph_path
    from engine.runtimes.onnxruntime import OrtRuntime

    graph = dynamic_graph_path(Path(model))
    feed = np.random.default_rng(0).random((1, 3, *size_hw), np.float32) * 255
    s = OrtRuntime(threads=threads).session(graph, family="centerface")
    ms = {"onnxruntime": round(_median_ms(s, {s.get_inputs()[0].name: feed}, runs=3), 2)}
    core = _openvino().Core()
    m = core.read_model(str(graph))
    m.reshape([1, 3, *size_hw])
    cfg = {"INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": "f32"}
    s = _Session(core.compile_model(m, "CPU", cfg))
    ms["openvino"] = round(_median_ms(s, {s.get_inputs()[0].name: feed}, runs=3), 2)
    return ("openvino" if ms["openvino"] < 0.9 * ms["onnxruntime"] else "onnxruntime"), ms


def large_passes_chosen(threads: Optional[int], model: Optional[Path]) -> bool:
    """engine.runtime auto on the CPU: whether CenterFace's large passes go to OpenVINO
    (engine.runtimes.ov_passes), i.e. OpenVINO is installed and ran them at least 10% faster
    than ONNX Runtime on this CPU from `model`. Timed once per CPU model, thread count, model
    file and runtime versions, kept in `<cache>/runtime_choice.json` (`sladd models fetch` times
    it, so a run's start does not); the choice and its figures are logged. Where the choice
    cannot be kept (a read-only cache), ONNX Runtime: a choice timed anew in every run could
    differ from run to run."""
    import importlib.util

    spec = importlib.util.find_spec("openvino")
    if model is None or spec is None:
        return False
    import onnxruntime

    from engine.cachedirs import cache_root, read_note, write_note
    from engine.runtimes.cpuinfo import cpu_model

    n = threads or os.cpu_count() or 1
    key = (f"{cpu_model()}|threads={n}|{Path(model).name}|large pass|onnxruntime={onnxruntime.__version__}"
           f"|openvino={_installed_version('openvino', spec)}")
    store = cache_root() / "runtime_choice.json"
    known = read_note(store)
    hit = known.get(key)
    if isinstance(hit, dict) and hit.get("choice") in ("openvino", "onnxruntime"):
        LOG.info("CenterFace's large passes -> %s (this CPU, measured earlier: %s ms)", hit["choice"], hit.get("ms"))
        return hit["choice"] == "openvino"
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        writable = os.access(store.parent, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        LOG.info("CenterFace's large passes -> onnxruntime (%s cannot keep the timing)", store)
        return False
    try:
        choice, ms = time_large_pass(n, Path(model))
    except Exception as exc:  # noqa: BLE001 - any failure to time it: ONNX Runtime runs it
        LOG.info("CenterFace's large passes -> onnxruntime (could not time OpenVINO: %s)", exc)
        return False
    LOG.info("CenterFace's large passes -> %s (1248x1024 on this CPU, %d threads: %s ms)", choice, n, ms)
    known[key] = {"choice": choice, "ms": ms}
    if not write_note(store, known):
        return False                                   # not kept: see the docstring
    return choice == "openvino"


def _installed_version(name: str, spec) -> str:
    """The installed distribution's version, from its `.dist-info` folder's name beside the
    package (importlib.metadata costs ~12 ms of imports at every start; importing the package
    itself ~25 ms); importlib.metadata where there is no such folder."""
    for loc in spec.submodule_search_locations or ():
        found = sorted(Path(loc).parent.glob(f"{name}-*.dist-info"))
        if len(found) == 1:
            return found[0].name[len(name) + 1:-len(".dist-info")]
    from importlib.metadata import version

    return version(name)
