"""TensorRT plans executed on a CuPy stream, behind the same small `session.run(names, feed)`
surface as ONNX Runtime's sessions, so every model family runs unchanged on either.

Plans are built from the ONNX graphs the adapters hand in and cached per GPU, TensorRT version,
precision and profiles (engine.runtimes.trt_plan). Outputs live where the inputs did: device
inputs give CuPy outputs, host inputs NumPy ones. Written against the TensorRT 10 API; tested
only where a GPU and TensorRT are present (tests marked `gpu` / `trt`).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from engine.device import cupy_module
from engine.models.resolve import plans_dir
from engine.runtimes.onnxruntime import onnx_module
from engine.runtimes.trt_plan import Profile, build_plan, calibration_batches, make_calibrator, tensorrt_module
from kernels._xp import on_device as on_device_array

__all__ = ["TrtRuntime", "TrtSession", "graph_inputs"]

LOG = logging.getLogger("sladd")


class TrtSession:
    """One deserialized TensorRT engine + execution context, run on its own CuPy stream."""

    def __init__(self, plan: Path):
        trt = self.trt = tensorrt_module()
        self.cp = cupy_module()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)             # outlives the engine it deserialises
        self.engine = self.runtime.deserialize_cuda_engine(Path(plan).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load {plan} (built for another GPU or TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.stream = self.cp.cuda.Stream(non_blocking=True)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _io(self, names):
        return [SimpleNamespace(name=n, shape=tuple(self.engine.get_tensor_shape(n))) for n in names]

    def get_inputs(self):
        return self._io(self.inputs)

    def get_outputs(self):
        return self._io(self.outputs)

    def run(self, names, feed: dict):
        cp, trt, ctx = self.cp, self.trt, self.context
        on_device = any(on_device_array(a) for a in feed.values())
        keep = []
        # Device inputs may still be being written on the caller's stream: order our
        # (non-blocking) stream after it instead of synchronising the host.
        self.stream.wait_event(cp.cuda.get_current_stream().record())
        with self.stream:
            for n in self.inputs:
                dtype = trt.nptype(self.engine.get_tensor_dtype(n))
                d = cp.ascontiguousarray(cp.asarray(feed[n], dtype=dtype))
                keep.append(d)
                ctx.set_input_shape(n, tuple(d.shape))
                ctx.set_tensor_address(n, d.data.ptr)
            outs = {}
            for n in self.outputs:
                buf = cp.empty(tuple(ctx.get_tensor_shape(n)), dtype=trt.nptype(self.engine.get_tensor_dtype(n)))
                outs[n] = buf
                ctx.set_tensor_address(n, buf.data.ptr)
            if not ctx.execute_async_v3(self.stream.ptr):
                raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return [outs[n] if on_device else outs[n].get() for n in (names or self.outputs)]


class TrtRuntime:
    """Sessions from TensorRT plans built (and cached) from the ONNX graphs adapters hand in."""

    name = "tensorrt"
    dynamic_batch = True          # adapters may hand in graphs with a dynamic batch (one plan per size)

    def __init__(self, *, device: str = "cuda", threads: Optional[int] = None, precision: str = "fp16",
                 cache: Optional[Path] = None, calibration_images: Optional[Path] = None, max_batch: int = 8):
        if device != "cuda":
            raise ValueError("the tensorrt runtime needs device cuda")
        if precision == "int8" and calibration_images is None:
            raise ValueError("engine.precision int8 needs engine.calibration_images (a folder of sample JPEGs)")
        self.precision = precision
        self.calibration_images = Path(calibration_images) if calibration_images else None
        self.cache = Path(cache) if cache else plans_dir()
        self.max_batch = max(1, int(max_batch))

    def profiles(self, onnx_path: Path) -> list:
        """Optimisation profiles for a graph with a dynamic batch dimension: 1..max_batch (opt =
        max_batch). Fixed graphs need none; other dynamic dimensions need a fixed-size export."""
        out = []
        for name, dims in graph_inputs(onnx_path):
            if all(d > 0 for d in dims):
                continue
            if any(d <= 0 for d in dims[1:]):
                raise ValueError(f"{onnx_path.name}: input {name} has dynamic dimensions {dims} besides the batch; "
                                 "TensorRT needs them fixed: export the model with a fixed input size")
            rest = tuple(dims[1:])
            out.append(Profile(name, (1,) + rest, (self.max_batch,) + rest, (self.max_batch,) + rest))
        return out

    def _calibrator(self, onnx_path: Path, family: Optional[str]):
        """INT8: an entropy calibrator over the sample images, preprocessed as `family`'s adapter
        feeds the graph's (fixed) input shape; its cache sits beside the plans."""
        if family is None:
            raise ValueError("int8 calibration needs the model family")
        _, dims = graph_inputs(onnx_path)[0]
        shape = tuple(self.max_batch if k == 0 and v <= 0 else v for k, v in enumerate(dims))
        if not shape or any(v <= 0 for v in shape):
            raise ValueError(f"int8 calibration needs a fixed input shape; {onnx_path.name} has {shape}")
        return make_calibrator(calibration_batches(self.calibration_images, family, shape),
                               self.cache / f"{onnx_path.stem}.{family}.calib")

    def session(self, model: Any, family: Optional[str] = None):
        if isinstance(model, (bytes, bytearray)):
            path = self.cache / "onnx" / f"{hashlib.sha256(model).hexdigest()[:16]}.onnx"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(model)
        else:
            path = Path(model)
        LOG.debug("TensorRT session for %s (%s, plans cached in %s)", path.name, self.precision, self.cache)
        calibrator = self._calibrator(path, family) if self.precision == "int8" else None
        return TrtSession(build_plan(path, self.cache, precision=self.precision, profiles=self.profiles(path),
                                     calibrator=calibrator))


def graph_inputs(onnx_path: Path) -> list[tuple[str, list[int]]]:
    """The graph's real inputs (not weights listed as inputs): name and dims, -1 where dynamic."""
    graph = onnx_module().load(str(onnx_path), load_external_data=False).graph
    inits = {t.name for t in graph.initializer}
    return [(i.name, [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                      for d in i.type.tensor_type.shape.dim])
            for i in graph.input if i.name not in inits]
