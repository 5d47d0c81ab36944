"""CenterFace's large passes on OpenVINO, everything else on ONNX Runtime (CPU).

The face cascade's candidate pass over a whole frame (1248x1024 for a 5 MP image, most of a
faces-only run's time) runs ~40% faster on OpenVINO than on ONNX Runtime on the CPUs measured
here, from the same INT8 file; the crops are small, and there the two are even. So `engine.runtime:
auto` on the CPU keeps ONNX Runtime for every model and hands CenterFace's candidate passes of at
least `MIN_PIXELS` to OpenVINO where it timed them faster on this CPU (engine.runtimes.openvino.
large_passes_chosen, measured once and remembered).

One compiled model for every input size (the graph of free height and width), shared by the
detect threads: `NUM_STREAMS` is their number and each thread has its own infer request (two
requests on one stream wait for each other; two compiled models of one thread each are pinned to
the same core). OpenVINO's model cache in `<models>/derived/openvino/` keeps the compiled form:
~60 ms to load instead of ~0.3 s to compile, and `sladd models fetch` makes it, so even a first
run loads it. A new input size costs its first inference ~70 ms more (measured: the same
outputs, bit for bit, as a model compiled for that size, which would cost ~0.4 s to compile the
first time and one compiled model per size). The model and settings are recorded per command
(engine.ov_prefetch) and loaded on the idle core while the next run starts.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Optional

from engine import first_pass
from engine.runtimes.ov_import import Session

__all__ = ["LargePasses", "MIN_PIXELS", "default_config"]

LOG = logging.getLogger("sladd")

MIN_PIXELS = 512 * 512          # smaller inputs (the crops) stay on ONNX Runtime: no faster there


def default_config(threads: int, streams: int) -> dict:
    """OpenVINO's settings for `streams` detect threads of `threads` inference threads each."""
    return {"INFERENCE_NUM_THREADS": max(1, threads) * max(1, streams), "NUM_STREAMS": max(1, streams),
            "INFERENCE_PRECISION_HINT": "f32"}        # fp32 where the INT8 graph is not quantised


class LargePasses:
    """OpenVINO sessions for one model file's large inputs: `session()`, or None where
    OpenVINO cannot run the model (the caller then uses ONNX Runtime). `graph`: the model with a
    free input size (engine.models.centerface.dynamic_graph_path); `streams`: the detect threads;
    `threads`: inference threads of each."""

    def __init__(self, graph: Path, *, threads: int, streams: int, cache: Optional[Path] = None,
                 view: Optional[dict] = None):
        from engine import ov_prefetch
        from engine.models.resolve import models_dir
        from engine.runtimes.ov_import import openvino_module

        self.ov = openvino_module()
        ov_prefetch.numpy_interface(self.ov)        # before any detect thread runs a request
        self.core = self.ov.Core()
        self.graph = Path(graph)
        self.cache: Optional[Path] = Path(cache) if cache is not None else models_dir() / "derived" / "openvino"
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
            if not os.access(self.cache, os.W_OK):
                raise OSError("not writable")
            self.core.set_property({"CACHE_DIR": str(self.cache)})
        except (OSError, RuntimeError) as exc:
            LOG.info("OpenVINO cannot keep compiled models in %s (%s): compiled in every run", self.cache, exc)
            self.cache = None
        self.config = default_config(threads, streams)
        self.made_by = ov_prefetch.made_by(str(self.graph), self.config)     # what its passes' outputs carry
        self.view = view                        # recorded for the next start (engine.first_pass)
        self._lock = threading.Lock()
        self._compiled: Optional[Future] = None
        self._free: list = []                   # sessions made with the model, not yet a thread's
        self._tls = threading.local()

    def session(self):
        """The calling thread's session (one infer request; every input size), or None where
        OpenVINO cannot run the model."""
        compiled = self._load().result()
        if compiled is None:
            return None
        sess = getattr(self._tls, "session", None)
        if sess is None:
            with self._lock:
                sess = self._free.pop() if self._free else None
            if sess is None:                                # more threads than streams
                sess = _Session(compiled, first_run=self._first_run, made_by=self.made_by)
            self._tls.session = sess
        return sess

    def _first_run(self, shape) -> None:
        """Record the shape a session first runs (engine.ov_prefetch warms it up in the next run)."""
        if self.cache is not None:
            from engine import ov_prefetch

            ov_prefetch.remember(str(self.graph), self.config, tuple(shape))

    def warm(self) -> None:
        """Load the compiled model in the background at the run's start (taking what
        engine.ov_prefetch loaded ahead where it is this one; what it loaded is dropped
        otherwise)."""
        from engine import ov_prefetch

        try:
            self._load()
        finally:
            ov_prefetch.release()

    def _load(self) -> Future:
        with self._lock:
            if self._compiled is not None:
                return self._compiled
            fut = self._compiled = Future()
        from engine import ov_prefetch

        try:
            taken = ov_prefetch.take(str(self.graph), self.config)
            if taken is None:
                first_pass.clear()             # what the start ran, it ran with another model
            compiled, requests = taken if taken is not None else (
                self.core.compile_model(str(self.graph), "CPU", self.config), [])
            # A request per stream made now: one made while another inference of the model runs
            # waits for it (a detect thread's first pass held up ~0.1 s).
            requests += [compiled.create_infer_request()
                         for _ in range(int(self.config["NUM_STREAMS"]) - len(requests))]
            self._free = [_Session(compiled, r, first_run=self._first_run, made_by=self.made_by) for r in requests]
            fut.set_result(compiled)
        except Exception as exc:  # noqa: BLE001 - OpenVINO is an optimisation: ONNX Runtime runs it
            LOG.warning("OpenVINO cannot run %s (%s): ONNX Runtime runs its large passes", self.graph.name,
                        str(exc).splitlines()[-1] if str(exc) else type(exc).__name__)
            fut.set_result(None)
            return fut
        except BaseException as exc:  # noqa: BLE001 - an interrupt: waiters get it, a later call retries
            with self._lock:
                self._compiled = None
            fut.set_exception(exc)
            raise
        if self.cache is not None:
            ov_prefetch.remember(str(self.graph), self.config, view=self.view)   # None too: no frame-sized guess
        return fut


class _Session(Session):
    """A large-pass session that takes the first image's pass where the start ran it already
    (engine.first_pass: only for an input equal to the one it ran, on the same model file with
    the same settings, `made_by`)."""

    def __init__(self, compiled, request=None, first_run=None, made_by: tuple = ()):
        super().__init__(compiled, request, first_run)
        self._made_by = made_by

    def run(self, names, feed: dict):
        if first_pass.waiting() and len(feed) == 1:
            x = next(iter(feed.values()))
            outputs = first_pass.take(x, self._made_by)
            if outputs is not None:
                LOG.debug("the first image's candidate pass ran during the start: taken")
                self._note_first(feed)
                return [outputs[n].copy() for n in (names or [o.name for o in self.get_outputs()])]
        return super().run(names, feed)
