"""TensorRT plans executed on a CuPy stream, behind the same small `session.run(names, feed)`
surface as ONNX Runtime's sessions, so every model family runs unchanged on either.

Plans are built from the ONNX graphs the adapters hand in and cached per GPU, TensorRT version,
precision and profiles (engine.runtimes.trt_plan). Outputs live where the inputs did: device
inputs give CuPy outputs, host inputs NumPy ones. Written against the TensorRT 10 API (11 for
fp32 plans); tested only where a GPU and TensorRT are present (tests marked `gpu` / `trt`).

Plans per input size, the first-run trade-off: CenterFace's cascade asks for one graph per crop
size (up to 5x5 bucket sizes, typically ~7 of them) besides the full frame and the coarse pass,
and each plan takes TensorRT tens of seconds to build on first use (then it is cached per GPU
and TensorRT version). `hw_profile=(min, opt, max)` (or SLADD_TRT_HW_PROFILE="min,opt,max",
pixels per side) builds one plan with a dynamic height x width profile instead, shared by every
crop of a fully convolutional family (HW_DYNAMIC_FAMILIES) whose sides lie within min..max:
fewer builds, but kernels tuned for `opt` rather than for each size. The default (None) keeps
one plan per size until a GPU has measured what the shared plan costs per image.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from engine.device import cupy_module
from engine.models.resolve import plans_dir
from engine.runtimes.onnxruntime import onnx_module
from engine.runtimes.trt_plan import (Profile, build_plan, calibration_batches, check_precision, make_calibrator,
                                      tensorrt_module)
from kernels._xp import on_device as on_device_array

__all__ = ["TrtRuntime", "TrtSession", "graph_inputs", "parse_hw_profile", "dynamic_hw_graph",
           "HW_DYNAMIC_FAMILIES", "HW_PROFILE_ENV"]

LOG = logging.getLogger("sladd")
HW_PROFILE_ENV = "SLADD_TRT_HW_PROFILE"
# Families whose graphs hold no size-dependent constants (fully convolutional), so one plan can
# take any height x width; detectors with reshapes baked at export size are not listed.
HW_DYNAMIC_FAMILIES = frozenset({"centerface"})


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
                 cache: Optional[Path] = None, calibration_images: Optional[Path] = None, max_batch: int = 8,
                 hw_profile: Optional[tuple[int, int, int]] = None):
        if device != "cuda":
            raise ValueError("the tensorrt runtime needs device cuda")
        if precision == "int8" and calibration_images is None:
            raise ValueError("engine.precision int8 needs engine.calibration_images (a folder of sample JPEGs)")
        if importlib.util.find_spec("tensorrt") is not None:
            check_precision(tensorrt_module().__version__, precision)   # at start-up, not per image
        self.precision = precision
        self.calibration_images = Path(calibration_images) if calibration_images else None
        self.cache = Path(cache) if cache else plans_dir()
        self.max_batch = max(1, int(max_batch))
        env = os.environ.get(HW_PROFILE_ENV)
        self.hw_profile = parse_hw_profile(hw_profile if hw_profile is not None else env,
                                           HW_PROFILE_ENV if hw_profile is None else "hw_profile")
        self._shared: dict = {}                    # plan -> TrtSession (one engine for every crop size)

    def profiles(self, onnx_path: Path) -> list:
        """Optimisation profiles: a dynamic batch gets 1..max_batch (opt = max_batch); with
        `hw_profile`, dynamic height and width get its min/opt/max. Fixed graphs need none;
        other dynamic dimensions need a fixed-size export."""
        out = []
        for name, dims in graph_inputs(onnx_path):
            if all(d > 0 for d in dims):
                continue
            spatial = self.hw_profile is not None and len(dims) == 4 and dims[2] <= 0 and dims[3] <= 0
            if any(d <= 0 for d in (dims[1:2] if spatial else dims[1:])):
                raise ValueError(f"{onnx_path.name}: input {name} has dynamic dimensions {dims} besides the batch; "
                                 "TensorRT needs them fixed: export the model with a fixed input size")
            b0 = 1 if dims[0] <= 0 else dims[0]
            b1 = self.max_batch if dims[0] <= 0 else dims[0]
            if spatial:
                lo, opt, hi = self.hw_profile
                c = dims[1]
                out.append(Profile(name, (b0, c, lo, lo), (b1, c, opt, opt), (b1, c, hi, hi)))
            else:
                rest = tuple(dims[1:])
                out.append(Profile(name, (b0,) + rest, (b1,) + rest, (b1,) + rest))
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
            if self.hw_profile is not None and family in HW_DYNAMIC_FAMILIES:
                model = dynamic_hw_graph(bytes(model), self.hw_profile) or model
            path = self.cache / "onnx" / f"{hashlib.sha256(model).hexdigest()[:16]}.onnx"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(model)
        else:
            path = Path(model)
        LOG.debug("TensorRT session for %s (%s, plans cached in %s)", path.name, self.precision, self.cache)
        calibrator = self._calibrator(path, family) if self.precision == "int8" else None
        plan = build_plan(path, self.cache, precision=self.precision, profiles=self.profiles(path),
                          calibrator=calibrator)
        if plan not in self._shared:               # crops of every size share one engine and context
            self._shared[plan] = TrtSession(plan)
        return self._shared[plan]


def parse_hw_profile(value, where: str) -> Optional[tuple[int, int, int]]:
    """None (one plan per input size) or (min, opt, max) pixels per side from a tuple or a
    "min,opt,max" string; ValueError naming `where` otherwise."""
    if value is None or value == "":
        return None
    try:
        sides = tuple(int(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        sides = ()
    if len(sides) != 3 or not 1 <= sides[0] <= sides[1] <= sides[2]:
        raise ValueError(f"{where} must be three sides MIN,OPT,MAX in pixels with 1 <= MIN <= OPT <= MAX "
                         f"(e.g. 160,384,640), got {value!r}; unset means one plan per input size")
    return sides


def dynamic_hw_graph(model: bytes, hw_profile: tuple[int, int, int]) -> Optional[bytes]:
    """The graph with its single NCHW input's height and width (and every 4-D output's) made
    dynamic, when the input's fixed sides lie within the profile; else None (keep the graph and
    its own per-size plan, e.g. a full frame larger than the profile's max)."""
    onnx = onnx_module()
    m = onnx.load_from_string(model)
    inits = {t.name for t in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    if len(inputs) != 1:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    sides = [d.dim_value if d.HasField("dim_value") else 0 for d in dims[2:]]
    if len(dims) != 4 or not all(hw_profile[0] <= v <= hw_profile[2] for v in sides):
        return None
    for vi in [inputs[0], *m.graph.output]:
        vdims = vi.type.tensor_type.shape.dim
        if len(vdims) == 4:
            for k, name in ((2, "height"), (3, "width")):
                vdims[k].Clear()
                vdims[k].dim_param = f"{name}_{vi.name}" if vi is not inputs[0] else name
    del m.graph.value_info[:]                       # shapes inferred for one size no longer hold
    return m.SerializeToString()


def graph_inputs(onnx_path: Path) -> list[tuple[str, list[int]]]:
    """The graph's real inputs (not weights listed as inputs): name and dims, -1 where dynamic."""
    graph = onnx_module().load(str(onnx_path), load_external_data=False).graph
    inits = {t.name for t in graph.initializer}
    return [(i.name, [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                      for d in i.type.tensor_type.shape.dim])
            for i in graph.input if i.name not in inits]
