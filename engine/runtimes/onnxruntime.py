"""ONNX Runtime: its CPU provider, or its CUDA provider with CuPy-bound inputs
(engine.runtimes.cuda)."""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Optional

__all__ = ["OrtRuntime", "onnx_module", "require_cuda_provider"]

LOG = logging.getLogger("sladd")


def onnx_module():
    from engine.optional import require
    return require("onnx", "the onnx package is missing: pip install 'sladd[cpu]'")


class OrtRuntime:
    """Creates ONNX Runtime sessions for one device. One object per detector worker.

    `cache`, `calibration_images` and `max_batch` are the TensorRT plan settings every runtime
    accepts (engine.runtimes.RUNTIMES); ONNX Runtime builds no plans. `precision` int8 or auto
    on the CPU selects a card's INT8 build where there is one (engine.slots)."""

    name = "onnxruntime"

    def __init__(self, *, device: str = "cpu", threads: Optional[int] = None, precision: str = "auto",
                 cache: Optional[Path] = None, calibration_images: Optional[Path] = None,
                 max_batch: Optional[int] = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("onnxruntime is missing: pip install 'sladd[cpu]' (or 'sladd[gpu]')") from exc
        self.ort = ort
        self.device = device
        self.threads = threads or os.cpu_count() or 1
        # On the CPU, int8 / auto pick a card's INT8 build (engine.slots); other values run fp32.
        self.precision = precision
        available = ort.get_available_providers()
        if device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise RuntimeError("device cuda requested but ONNX Runtime has no CUDAExecutionProvider "
                                   f"(available: {available}); install 'sladd[gpu]' on a machine with an NVIDIA GPU")
            self.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            self.providers = ["CPUExecutionProvider"]
        # One session runs a graph of free height and width at every size, as fast as a graph of
        # fixed size (CenterFace at 1248x1024 and its crop sizes, CPU provider): adapters keep
        # one session per model instead of one per size. Not claimed on CUDA (unmeasured there).
        self.any_size = device == "cpu"
        ort.set_default_logger_severity(3)

    def session(self, model: Any, family: Optional[str] = None):
        """`model`: a path or serialized ONNX bytes; `family` matters to TensorRT INT8 only."""
        if isinstance(model, (bytes, bytearray)) or self.device != "cpu":
            session = self.ort.InferenceSession(model if isinstance(model, (bytes, bytearray)) else str(model),
                                                sess_options=self._options(), providers=self.providers)
        else:
            session = self._cpu_session(Path(model))
        if self.device == "cuda":
            require_cuda_provider(session)
            from engine.runtimes.cuda import CupyBoundSession
            return CupyBoundSession(session)              # inputs bound to CuPy device buffers
        return session

    def _options(self, optimise: bool = True, save_to: Optional[Path] = None):
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = (self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                       else self.ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        # Memory-pattern planning made the first two CenterFace runs at 2464x2048 take 1.6 s and
        # 2.5 s (then 0.55 s) and peak RSS 1.8 GB; without it: 0.84 s, then 0.55 s, 1.1 GB.
        so.enable_mem_pattern = False
        # ONNX Runtime's idle intra-op threads spin, burning the cores that decode, masking and
        # encoding threads need at the same time: 40 images 2448x2048 ran at 5.2-5.5 img/s with
        # spinning off against 3.9-4.0 with it on (2 cores).
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if save_to is not None:
            so.optimized_model_filepath = str(save_to)
        return so

    def _cpu_session(self, path: Path):
        """A session of the model file, from ONNX Runtime's own optimised copy of it where an
        earlier run left one: graph optimisation (fusions, layouts for this CPU's vector width)
        is most of a session's creation, 40 of 45 ms for NanoDet. The copy is keyed by the
        file's SHA-256, the ONNX Runtime version and the CPU (engine.runtimes.cpuinfo); a copy
        that does not load is dropped and the model optimised again; where none can be written
        (a read-only or full cache) the model is optimised at every start, as before."""
        import uuid

        from engine.models.resolve import drop_other_versions
        from engine.runtimes.cpuinfo import cpu_key

        ort = self.ort
        copy = _optimised_copy_path(path, ort.__version__)
        if copy is not None and copy.is_file():
            try:
                return ort.InferenceSession(str(copy), sess_options=self._options(optimise=False),
                                            providers=self.providers)
            except Exception as exc:  # noqa: BLE001 - a damaged or foreign copy: optimise the original again
                LOG.info("optimised copy %s does not load (%s): optimising %s again", copy.name, exc, path.name)
                copy.unlink(missing_ok=True)
        if copy is not None:
            tmp = copy.with_name(f".{uuid.uuid4().hex}.partial")          # one per writer
            try:
                copy.parent.mkdir(parents=True, exist_ok=True)
                session = ort.InferenceSession(str(path), sess_options=self._options(save_to=tmp),
                                               providers=self.providers)
                os.replace(tmp, copy)                                      # whole or not at all
                drop_other_versions(copy, path.stem, f"ort{ort.__version__}.{cpu_key()}.onnx")
                return session
            except Exception as exc:  # noqa: BLE001 - the copy is an optimisation: never fail the model for it
                LOG.info("cannot keep an optimised copy of %s (%s)", path.name, exc)
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
        return ort.InferenceSession(str(path), sess_options=self._options(), providers=self.providers)


def _optimised_copy_path(path: Path, version: str) -> Optional[Path]:
    """`<models>/derived/ort/<stem>.<sha16>.ort<version>.<cpu key>.onnx` (None when the file
    cannot be read to hash it)."""
    import hashlib

    from engine.models.resolve import models_dir, sha256_file
    from engine.runtimes.cpuinfo import cpu_key

    derived = models_dir() / "derived"
    try:
        # A derived file's name already holds its source's SHA-256 (resolve.derived_file).
        digest = hashlib.sha256(path.name.encode()).hexdigest() if path.parent == derived else sha256_file(path)
    except OSError:
        return None
    return derived / "ort" / f"{path.stem}.{digest[:16]}.ort{version}.{cpu_key()}.onnx"


def require_cuda_provider(session) -> None:
    """RuntimeError unless the session really runs on ONNX Runtime's CUDA provider.

    `get_available_providers()` lists what the wheel was built with, not what loads: when the
    CUDA provider's libraries (CUDA 12, cuDNN 9) fail to load, ONNX Runtime only logs a warning
    (hidden at the severity set above) and the session runs on the CPU provider, with CuPy
    device buffers then bound to a CPU session. No silent fallback: fail here."""
    providers = list(session.get_providers())
    if "CUDAExecutionProvider" not in providers:
        raise RuntimeError("device cuda: ONNX Runtime could not start its CUDA provider and the session fell back "
                           f"to {providers}; onnxruntime-gpu >= 1.19 needs the CUDA 12 and cuDNN 9 libraries "
                           "on the loader path (pip install 'sladd[gpu]', or NVIDIA's image: Dockerfile.gpu), "
                           "and onnxruntime (CPU) must not be installed beside onnxruntime-gpu")

