"""OpenVINO (Intel's CPU runtime) behind the session interface the adapters use
(`get_inputs()`, `get_outputs()`, `run(names, feed)`), and the start-up measurement that lets
`engine.runtime: auto` pick it on a CPU only where it is faster than ONNX Runtime."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np

__all__ = ["OpenVinoRuntime", "faster_cpu_runtime", "auto_cpu_runtime"]

LOG = logging.getLogger("sladd")


def _openvino():
    try:
        import openvino as ov
    except ImportError as exc:
        raise ImportError("engine.runtime openvino needs OpenVINO: pip install 'sladd[openvino]'") from exc
    return ov


class _Arg(NamedTuple):
    """An input or output as ONNX Runtime describes it: name and shape (a str for a free dim)."""

    name: str
    shape: list


def _args(ports) -> list[_Arg]:
    out = []
    for p in ports:
        dims = [d.get_length() if d.is_static else f"d{k}" for k, d in enumerate(p.get_partial_shape())]
        out.append(_Arg(p.get_any_name(), dims))
    return out


class _Session:
    """A compiled model with ONNX Runtime's session calls. Not thread-safe (one infer request):
    one per detector worker, as the adapters hold them."""

    def __init__(self, compiled):
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._inputs, self._outputs = _args(compiled.inputs), _args(compiled.outputs)

    def get_inputs(self) -> list[_Arg]:
        return self._inputs

    def get_outputs(self) -> list[_Arg]:
        return self._outputs

    def run(self, names, feed: dict) -> list[np.ndarray]:
        res = self._request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
        by_name = {o.get_any_name(): res[o] for o in self._compiled.outputs}
        return [np.array(by_name[n]) for n in (names or [o.name for o in self._outputs])]


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


def faster_cpu_runtime(threads: Optional[int], model: Optional[Path] = None, size_hw=(480, 640),
                       ort_model: Optional[Path] = None) -> tuple[str, dict]:
    """('openvino' or 'onnxruntime', {runtime: ms}): which runs CenterFace (the model every
    profile runs, fixed to `size_hw` as its adapter fixes it) faster on this CPU, timed once
    (about a second); OpenVINO must win by 10%. `ort_model`: the file ONNX Runtime would run
    (the INT8 build where engine.precision picks it), default `model`."""
    from engine.models.card import load_card
    from engine.models.centerface import fix_centerface_graph
    from engine.models.resolve import resolve_model
    from engine.runtimes.onnxruntime import OrtRuntime, onnx_module

    model = Path(model or resolve_model(load_card("centerface"), allow_download=False))
    ms = {}
    for name, rt, path in (("onnxruntime", OrtRuntime(threads=threads), Path(ort_model or model)),
                           ("openvino", OpenVinoRuntime(threads=threads), model)):
        graph = fix_centerface_graph(onnx_module().load(str(path)), *size_hw, 1).SerializeToString()
        s = rt.session(graph)
        inp = s.get_inputs()[0]
        ms[name] = round(_median_ms(s, {inp.name: np.random.default_rng(0).random((1, 3, *size_hw), np.float32) * 255}), 2)
    choice = "openvino" if ms["openvino"] < 0.9 * ms["onnxruntime"] else "onnxruntime"
    return choice, ms


OPENVINO_FAMILIES = {"centerface"}      # graphs checked to load and match ONNX Runtime (NanoDet's does not load)


def auto_cpu_runtime(families: list[str], threads: Optional[int], ort_int8: bool) -> str:
    """engine.runtime auto on the CPU: OpenVINO where it runs every configured model and ran
    CenterFace at least 10% faster than ONNX Runtime on this CPU. The timing is taken once per
    CPU model, thread count and runtime versions, and kept in `<cache>/runtime_choice.json`;
    the choice and its figures are logged."""
    import importlib.util
    import json

    if importlib.util.find_spec("openvino") is None:
        return "onnxruntime"
    others = sorted(set(families) - OPENVINO_FAMILIES)
    if others:
        LOG.info("runtime auto -> onnxruntime (OpenVINO is not used for %s)", ", ".join(others))
        return "onnxruntime"
    import onnxruntime

    from engine.models.resolve import cache_root, models_dir

    from engine.runtimes.cpuinfo import cpu_model

    cpu = cpu_model()
    n = threads or os.cpu_count() or 1
    from importlib.metadata import version                # importing openvino costs 60 ms

    key = f"{cpu}|threads={n}|onnxruntime={onnxruntime.__version__}{'-int8' if ort_int8 else ''}|openvino={version('openvino')}"
    store = cache_root() / "runtime_choice.json"
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        hit = known[key]
        LOG.info("runtime auto -> %s (CenterFace on this CPU, measured earlier: %s)", hit["choice"], hit["ms"])
        return hit["choice"]
    try:
        int8 = models_dir() / "centerface.int8.onnx"
        choice, ms = faster_cpu_runtime(n, ort_model=int8 if ort_int8 and int8.is_file() else None)
    except (RuntimeError, OSError, ImportError, ValueError) as exc:
        LOG.info("runtime auto -> onnxruntime (could not time OpenVINO: %s)", exc)
        return "onnxruntime"
    LOG.info("runtime auto -> %s (CenterFace 640x480 on this CPU, %d threads: %s ms)", choice, n, ms)
    known[key] = {"choice": choice, "ms": ms}
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f".{store.name}.{os.getpid()}.partial")
        tmp.write_text(json.dumps(known, indent=2))
        os.replace(tmp, store)
    except OSError:
        pass
    return choice
