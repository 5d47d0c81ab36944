"""CenterFace's large passes on OpenVINO, everything else on ONNX Runtime (CPU).

The face cascade's candidate pass over a whole frame (1248x1024 for a 5 MP image, most of a
faces-only run's time) runs ~40% faster on OpenVINO than on ONNX Runtime on the CPUs measured
here, from the same INT8 file; the crops are small, and there the two are even. So `engine.runtime:
auto` on the CPU keeps ONNX Runtime for every model and hands CenterFace's candidate passes of at
least `MIN_PIXELS` to OpenVINO where it timed them faster on this CPU (engine.runtimes.openvino.
large_passes_chosen, measured once and remembered).

One compiled model per input shape, shared by the detect threads: `NUM_STREAMS` is their number
and each thread has its own infer request (two requests on one stream wait for each other;
two compiled models of one thread each are pinned to the same core). A shape is compiled
from a graph fixed to it (OpenVINO's IR, kept in `<models>/derived/openvino/`), and OpenVINO's
model cache there keeps the compiled form: ~0.1 s to load instead of ~0.4 s to compile. The
shape compiled last is recorded (engine.ov_prefetch.record_file) and loaded again on the idle
core while the next run starts (engine.ov_prefetch, or `warm()` where no prefetch ran), so the
first image does not wait for it.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future
from pathlib import Path
from typing import Optional

__all__ = ["LargePasses", "MIN_PIXELS"]

LOG = logging.getLogger("sladd")

MIN_PIXELS = 512 * 512          # smaller inputs (the crops) stay on ONNX Runtime: no faster there
MAX_SHAPES = 8                  # compiled models kept per model file (a service sees many sizes)


class _Request:
    """One thread's infer request on a compiled model, with the session call the adapters use."""

    def __init__(self, compiled):
        self._request = compiled.create_infer_request()
        self._outputs = list(compiled.outputs)

    def run(self, names, feed: dict):
        if names is not None:
            raise ValueError("large passes return every output")
        (blob,) = feed.values()
        # share_inputs: the request reads the caller's array (made for this call) instead of
        # copying its 15 MB; it is not touched until infer returns.
        res = self._request.infer(blob, share_inputs=True)
        # Copies: the request's output buffers are reused by its next call.
        return [res[o].copy() for o in self._outputs]


class LargePasses:
    """OpenVINO sessions for one model file's large inputs: `session(h, w)` for a `1x3xhxw` input,
    or None where OpenVINO cannot run it (the caller then uses ONNX Runtime). `graph`: the model
    with a free input size (engine.models.centerface.dynamic_graph_path); `streams`: the detect
    threads; `threads`: inference threads of each."""

    def __init__(self, graph: Path, *, threads: int, streams: int, cache: Optional[Path] = None):
        from engine.runtimes.ov_import import openvino_module as _openvino

        from engine import ov_prefetch

        self.ov = _openvino()
        ov_prefetch.numpy_interface(self.ov)        # before any detect thread runs a request
        self.core = self.ov.Core()
        self.graph = Path(graph)
        self.key = self.graph.name.split(".any-size")[0]          # <stem>.<sha16>: this model file
        if cache is None:
            from engine.models.resolve import models_dir
            cache = models_dir() / "derived" / "openvino"
        self.cache: Optional[Path] = Path(cache)
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": str(self.cache)})
        except (OSError, RuntimeError) as exc:
            LOG.info("OpenVINO cannot keep compiled models in %s (%s): compiled in every run", cache, exc)
            self.cache = None
        self.config = {"INFERENCE_NUM_THREADS": max(1, threads) * max(1, streams), "NUM_STREAMS": max(1, streams),
                       "INFERENCE_PRECISION_HINT": "f32"}      # fp32 where the INT8 graph is not quantised
        self._lock = threading.Lock()
        self._compiled: OrderedDict[tuple[int, int], Future] = OrderedDict()
        self._tls = threading.local()
        self._model = None

    # --- shapes --------------------------------------------------------------------------------
    def session(self, h: int, w: int) -> Optional[_Request]:
        fut, mine = self._future(h, w)
        if mine:
            self._compile(h, w, fut, remember=True)
        compiled = fut.result()
        if compiled is None:
            return None
        reqs = self._tls.__dict__.setdefault("requests", {})
        if (h, w) not in reqs:
            for gone in [k for k in reqs if k not in self._compiled]:
                del reqs[gone]                       # its compiled model was dropped
            reqs[(h, w)] = _Request(compiled)
        return reqs[(h, w)]

    def warm(self) -> None:
        """Load the shape this model compiled last (background, at the run's start), unless the
        prefetch of engine.cli already did."""
        from engine import ov_prefetch

        rec = ov_prefetch.recorded() if self.cache is not None else {}
        xml = str(rec.get("xml", ""))
        if rec.get("config") != self.config or not Path(xml).name.startswith(self.key + "."):
            return
        try:
            h, w = (int(v) for v in Path(xml).name[len(self.key) + 1:].split(".")[0].split("x"))
        except ValueError:
            return
        fut, mine = self._future(h, w)
        if mine:
            self._compile(h, w, fut, remember=False)

    def _future(self, h: int, w: int) -> tuple[Future, bool]:
        with self._lock:
            if (h, w) in self._compiled:
                self._compiled.move_to_end((h, w))
                return self._compiled[(h, w)], False
            fut = self._compiled[(h, w)] = Future()
            while len(self._compiled) > MAX_SHAPES:
                self._compiled.popitem(last=False)    # least recently used; its requests go with it
            return fut, True

    def _compile(self, h: int, w: int, fut: Future, remember: bool) -> None:
        try:
            from engine import ov_prefetch

            fixed = self._fixed(h, w)
            compiled = ov_prefetch.take(fixed, self.config) if isinstance(fixed, str) else None
            fut.set_result(compiled or self.core.compile_model(fixed, "CPU", self.config))
        except (RuntimeError, OSError, ValueError) as exc:
            LOG.warning("OpenVINO cannot run %s at %dx%d (%s): ONNX Runtime runs it", self.graph.name, w, h,
                        str(exc).splitlines()[-1] if str(exc) else type(exc).__name__)
            fut.set_result(None)
            return
        except BaseException as exc:  # noqa: BLE001 - waiters get it too
            fut.set_exception(exc)
            raise
        if remember and isinstance(fixed, str):
            self._remember(fixed)

    def _fixed(self, h: int, w: int):
        """The graph fixed to 1x3xhxw: an IR file in the cache (compiled from its path, which the
        model cache then answers without reading it), else a model in memory."""
        xml = self.cache / f"{self.key}.{h}x{w}.xml" if self.cache is not None else None
        if xml is not None and xml.is_file():
            return str(xml)
        with self._lock:
            if self._model is None:
                self._model = self.core.read_model(str(self.graph))
            model = self._model.clone()
        model.reshape([1, 3, h, w])
        if xml is None:
            return model
        tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.{threading.get_ident()}.partial.xml")
        self.ov.save_model(model, str(tmp), compress_to_fp16=False)     # fp16 would change the weights
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
        return str(xml)

    def _remember(self, xml: str) -> None:
        from engine import ov_prefetch

        ov_prefetch.remember(xml, self.config)
