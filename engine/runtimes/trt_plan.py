"""TensorRT plans: building (TensorRT 10 and 11 Python APIs) and the plan cache.

A plan is specific to the GPU, the TensorRT version, the precision, the optimisation profiles
and the ONNX file; a JSON sidecar beside each plan records all five, and a plan is reused only
when every one matches (otherwise it is rebuilt). The cache logic is plain Python and tested
everywhere; building needs TensorRT and a GPU (tests marked `trt`). INT8 calibration feeds
the sample images through the model family's own preprocessing (`Adapter.calibration_blob`).

TensorRT 11 builds strongly typed networks only: its builder has no FP16/INT8 flags and no
calibrators, so a plan's precision is the ONNX graph's. There, `fp32` plans are built from the
(FP32) graphs as they are, and `fp16`/`int8` are refused with the fix (`check_precision`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from engine.models.resolve import sha256_file

__all__ = ["Profile", "Sidecar", "plan_paths", "find_plan", "build_plan", "tensorrt_module", "gpu_name",
           "parse_shape", "calibration_batches", "make_calibrator", "check_precision", "trt_major"]

LOG = logging.getLogger("sladd")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Profile:
    """One optimisation profile for input `name`: min / opt / max shapes."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass
class Sidecar:
    onnx_sha256: str
    gpu: str
    tensorrt: str
    precision: str
    profiles: list = field(default_factory=list)

    def matches(self, other: "Sidecar") -> bool:
        return asdict(self) == asdict(other)


def parse_shape(text: str) -> tuple[int, ...]:
    """"1x3x416x416" -> (1, 3, 416, 416)."""
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"shape {text!r} must look like 1x3x416x416") from None
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"shape {text!r}: every dimension must be >= 1")
    return dims


def tensorrt_module():
    from engine.optional import require
    return require("tensorrt", "TensorRT is not installed: use NVIDIA's TensorRT container (Dockerfile.gpu), or "
                               "pip install 'tensorrt-cu12>=10,<11' (PyPI wheels whose install fetches TensorRT's "
                               "libraries from NVIDIA's package index; TensorRT 11 builds fp32 plans only here)")


def trt_major(version: str) -> int:
    """10 for "10.3.0.26"; ValueError for a version string that does not start with a number."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise ValueError(f"unrecognised TensorRT version {version!r}") from None


def check_precision(trt_version: str, precision: str) -> None:
    """ValueError when this TensorRT cannot build `precision` plans: TensorRT 11 removed the
    weak-typing builder flags (BuilderFlag.FP16/INT8) and INT8 calibration."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if trt_major(trt_version) >= 11 and precision != "fp32":
        raise ValueError(f"TensorRT {trt_version} builds strongly typed networks only (no BuilderFlag.FP16/INT8, no "
                         f"INT8 calibration), so engine.precision {precision} cannot be built: set engine.precision: "
                         "fp32 (or --precision fp32), or use TensorRT 10.x (Dockerfile.gpu's image, or "
                         "pip install 'tensorrt-cu12>=10,<11'); an FP16 or Q/DQ-quantised ONNX graph would be the "
                         "TensorRT 11 way")


def gpu_name() -> str:
    from engine.device import cupy_or_none

    cp = cupy_or_none()
    if cp is None:
        raise RuntimeError("no usable CUDA GPU (CuPy found none): TensorRT plans are built on the GPU they run on")
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def plan_paths(cache_dir: Path, onnx: Path, precision: str, profiles: list[Profile], gpu: str,
               trt_version: str) -> tuple[Path, Sidecar]:
    """Where the plan for these settings lives, and the sidecar it must carry."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    side = Sidecar(onnx_sha256=sha256_file(Path(onnx)), gpu=gpu, tensorrt=trt_version, precision=precision,
                   profiles=[asdict(p) | {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)}
                             for p in profiles])
    key = hashlib.sha256(json.dumps(asdict(side), sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{Path(onnx).stem}.{precision}.{key}.plan", side


def find_plan(plan: Path, want: Sidecar) -> Optional[Path]:
    """The plan if it exists and its sidecar matches `want` exactly, else None (rebuild)."""
    meta = plan.with_suffix(".json")
    if not (plan.is_file() and meta.is_file()):
        return None
    try:
        have = Sidecar(**json.loads(meta.read_text()))
    except (ValueError, TypeError):
        LOG.warning("unreadable plan sidecar %s: rebuilding", meta)
        return None
    if not have.matches(want):
        LOG.info("plan %s was built for %s/TensorRT %s/%s: rebuilding", plan, have.gpu, have.tensorrt, have.precision)
        return None
    return plan


def build_plan(onnx: Path, cache_dir: Path, *, precision: str = "fp16", profiles: list[Profile] = (),
               timing_cache: Optional[Path] = None, workspace_gb: float = 4.0, calibrator=None,
               force: bool = False) -> Path:
    """ONNX -> serialized TensorRT plan (+ sidecar), reusing a matching cached plan."""
    trt = tensorrt_module()
    check_precision(trt.__version__, precision)           # before a GPU is touched
    plan, side = plan_paths(cache_dir, onnx, precision, list(profiles), gpu_name(), trt.__version__)
    if not force and find_plan(plan, side):
        LOG.debug("TensorRT plan %s reused", plan)
        return plan
    LOG.info("building a TensorRT %s plan for %s on %s (once per GPU model and TensorRT version; this can take "
             "minutes) -> %s", precision, Path(onnx).name, side.gpu, plan)
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Flags 0: explicit batch (the only mode since TensorRT 10); weakly typed on 10 (the FP16/INT8
    # flags below pick kernels), strongly typed on 11 (always; only fp32 gets this far there).
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        if calibrator is None:
            raise ValueError("int8 needs a calibrator (a folder of sample images)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
    for k, p in enumerate(profiles):
        prof = builder.create_optimization_profile()
        prof.set_shape(p.name, p.min, p.opt, p.max)
        config.add_optimization_profile(prof)
        if precision == "int8" and k == 0:
            config.set_calibration_profile(prof)    # dynamic shapes: calibrate at the opt shape
    cache = None
    if timing_cache is not None:
        blob = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build a plan for {onnx} (see the messages above)")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = plan.with_name(plan.name + ".partial")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, plan)
    plan.with_suffix(".json").write_text(json.dumps(asdict(side), indent=2))
    if cache is not None:
        Path(timing_cache).write_bytes(bytes(cache.serialize()))
    LOG.info("TensorRT plan built in %.0f s: %s", time.perf_counter() - t0, plan)
    return plan


# --- INT8 calibration ----------------------------------------------------------------------------
def calibration_batches(folder: Path, family: str, input_shape: tuple[int, ...], limit: int = 256):
    """Yield float32 NCHW batches of `input_shape` from the JPEGs in `folder`, preprocessed by
    the model family's adapter (`calibration_blob`), as it feeds the graph. Host arrays; no
    TensorRT needed. ValueError for an unknown family or a folder without JPEGs."""
    import numpy as np

    from engine.codecs.turbo import TurboDecoder
    from engine.decode import read_bytes
    from engine.models import MODEL_FAMILIES
    from engine.types import Job

    blob = MODEL_FAMILIES.get(family).calibration_blob
    n, _, h, w = input_shape
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:limit]
    if not files:
        raise ValueError(f"no JPEG images in the calibration folder {folder}")
    dec = TurboDecoder()
    batch = []
    for p in files:
        px = dec.decode(Job(p, p.name, p, None, p.parent, 0, 0), read_bytes(p)).pixels
        batch.append(blob(px, (h, w)))
        if len(batch) == n:
            yield np.stack(batch)
            batch = []


def make_calibrator(batches, cache: Path):
    """A TensorRT IInt8EntropyCalibrator2 over `batches` (host float32 NCHW arrays, one shape),
    reading/writing the calibration cache. TensorRT 10 only (ValueError on 11, where INT8
    calibration is gone)."""
    import numpy as np

    from engine.device import cupy_module

    trt = tensorrt_module()
    check_precision(trt.__version__, "int8")
    cp = cupy_module()

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.it = iter(batches)
            self.first = next(self.it, None)
            # TensorRT may ask again after the first batch was handed out: remember the size.
            self.n = 0 if self.first is None else int(self.first.shape[0])
            self.buf = None                 # one device buffer, alive as long as the calibrator

        def get_batch_size(self):
            return self.n

        def get_batch(self, names):
            b = self.first if self.first is not None else next(self.it, None)
            self.first = None
            if b is None:
                return None
            host = np.ascontiguousarray(b, dtype=np.float32)
            if self.buf is None:
                self.buf = cp.empty(host.shape, dtype=cp.float32)
            elif self.buf.shape != host.shape:
                raise ValueError(f"calibration batches must share one shape: {self.buf.shape} then {host.shape}")
            # A blocking copy: TensorRT reads the pointer on its own stream as soon as it is
            # returned, and an upload queued on CuPy's stream (cp.asarray) may not have landed.
            self.buf.set(host)
            cp.cuda.get_current_stream().synchronize()
            return [int(self.buf.data.ptr)]

        def read_calibration_cache(self):
            return Path(cache).read_bytes() if Path(cache).is_file() else None

        def write_calibration_cache(self, data):
            Path(cache).write_bytes(bytes(data))

    return _Calibrator()
