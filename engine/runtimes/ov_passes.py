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
        from engine.models.resolve import models_dir, sha256_file

        self.graph = Path(graph)
        # The graph's own content names what is made from it: a graph made anew differently
        # (another version of sladd) never meets an earlier one's files.
        self.key = f"{self.graph.stem}.{sha256_file(self.graph)[:16]}"
        self.cache: Optional[Path] = Path(cache) if cache is not None else models_dir() / "derived" / "openvino"
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
            if not os.access(self.cache, os.W_OK):
                raise OSError("not writable")
            self.core.set_property({"CACHE_DIR": str(self.cache)})
        except (OSError, RuntimeError) as exc:
            LOG.info("OpenVINO cannot keep compiled models in %s (%s): compiled in every run", self.cache, exc)
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
        """Load the shape this model compiled last (background, at the run's start), taking what
        engine.ov_prefetch loaded ahead where it is that; what it loaded is dropped otherwise."""
        from engine import ov_prefetch

        try:
            rec = ov_prefetch.recorded() if self.cache is not None else {}
            xml = Path(str(rec.get("xml", "")))
            if rec.get("config") != self.config or not xml.name.startswith(self.key + "."):
                return
            try:
                h, w = (int(v) for v in xml.name[len(self.key) + 1:].split(".")[0].split("x"))
            except ValueError:
                return
            fut, mine = self._future(h, w)
            if mine:
                self._compile(h, w, fut, remember=False)
        finally:
            ov_prefetch.release()

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
        from engine import ov_prefetch

        fixed = None
        try:
            fixed = self._fixed(h, w)
            compiled = ov_prefetch.take(fixed, self.config) if isinstance(fixed, str) else None
            if compiled is None and isinstance(fixed, str):
                try:
                    compiled = self.core.compile_model(fixed, "CPU", self.config)
                except RuntimeError:
                    # A damaged IR file (a crash while it was written): made again, in memory.
                    for f in (Path(fixed), Path(fixed).with_suffix(".bin")):
                        f.unlink(missing_ok=True)
                    fixed = self._model_for(h, w)
            if compiled is None:
                compiled = self.core.compile_model(fixed, "CPU", self.config)
            fut.set_result(compiled)
        except Exception as exc:  # noqa: BLE001 - OpenVINO is an optimisation: ONNX Runtime runs this shape
            LOG.warning("OpenVINO cannot run %s at %dx%d (%s): ONNX Runtime runs it", self.graph.name, w, h,
                        str(exc).splitlines()[-1] if str(exc) else type(exc).__name__)
            fut.set_result(None)
            return
        except BaseException as exc:  # noqa: BLE001 - an interrupt: waiters get it, a later call retries
            with self._lock:
                if self._compiled.get((h, w)) is fut:
                    del self._compiled[(h, w)]
            fut.set_exception(exc)
            raise
        if remember and isinstance(fixed, str):
            self._remember(fixed)

    def _model_for(self, h: int, w: int):
        with self._lock:
            if self._model is None:
                self._model = self.core.read_model(str(self.graph))
            model = self._model.clone()
        model.reshape([1, 3, h, w])
        return model

    def _fixed(self, h: int, w: int):
        """The graph fixed to 1x3xhxw: an IR file in the cache (compiled from its path, which the
        model cache then answers without reading it), else a model in memory (a cache that
        cannot take the file)."""
        xml = self.cache / f"{self.key}.{h}x{w}.xml" if self.cache is not None else None
        if xml is not None and xml.is_file():
            return str(xml)
        model = self._model_for(h, w)
        if xml is None:
            return model
        tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.{threading.get_ident()}.partial.xml")
        try:
            self.ov.save_model(model, str(tmp), compress_to_fp16=False)     # fp16 would change the weights
            os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
            os.replace(tmp, xml)
        except (OSError, RuntimeError) as exc:
            LOG.info("cannot keep %s (%s): compiled from memory", xml.name, exc)
            for f in (tmp, tmp.with_suffix(".bin")):
                f.unlink(missing_ok=True)
            return model
        _prune(self.cache)
        return str(xml)

    def _remember(self, xml: str) -> None:
        from engine import ov_prefetch

        ov_prefetch.remember(xml, self.config)


def _prune(folder: Path, keep_graphs: int = 24, keep_blobs: int = 48) -> None:
    """Keep the cache folder bounded (a service sees many frame sizes, ~6 MB each): the most
    recently written fixed graphs and compiled blobs stay, the older ones are removed."""
    def oldest_first(pattern: str):
        found = []
        for f in folder.glob(pattern):
            try:
                found.append((f.stat().st_mtime, f))
            except OSError:
                continue
        return [f for _, f in sorted(found)]
    try:
        for xml in oldest_first("*.xml")[:-keep_graphs]:
            xml.with_suffix(".bin").unlink(missing_ok=True)
            xml.unlink(missing_ok=True)
        for blob in oldest_first("*.blob")[:-keep_blobs]:
            blob.unlink(missing_ok=True)
    except OSError:
        pass
