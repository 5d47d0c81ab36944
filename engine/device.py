"""The one place the engine asks what GPU support this machine has, and picks its backends.

`kernels._xp.cupy_or_none` stays the low-level probe (kernels never import the engine); the
engine goes through this module: `cupy_module()` where CuPy is required, `gpu_components()`
for what the GPU path could use, and the `choose_*` functions that turn `auto` settings into
backend names. A requested backend that cannot work is an error naming what is missing,
never a silent fallback to the CPU.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Optional

from kernels._xp import cupy_or_none

__all__ = ["cupy_or_none", "cupy_module", "gpu_components", "choose_device", "choose_decoder", "choose_runtime",
           "choose_encoder"]

LOG = logging.getLogger("sladd")


def cupy_module():
    """The cupy module; RuntimeError naming the extra when CuPy or a usable GPU is missing."""
    cp = cupy_or_none()
    if cp is None:
        raise RuntimeError("the GPU runtimes need CuPy and a usable NVIDIA GPU: pip install 'sladd[gpu]'")
    return cp


def gpu_components() -> dict[str, bool]:
    """What the GPU path can use here: a CuPy-visible device, TensorRT, ONNX Runtime's CUDA
    provider, DALI. Nothing is initialised beyond what answering needs."""
    try:
        import onnxruntime as ort
        ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        ort_cuda = False

    def has(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    return {"cupy": cupy_or_none() is not None, "tensorrt": has("tensorrt"), "onnxruntime-cuda": ort_cuda,
            "dali": has("nvidia.dali"), "nvimagecodec": has("nvidia.nvimgcodec")}


def _describe(c: dict[str, bool]) -> str:
    return ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in c.items())


def choose_device(requested: str, components: Optional[dict[str, bool]] = None) -> str:
    """`cuda` needs CuPy with a usable device and a GPU runtime (TensorRT or ONNX Runtime's CUDA
    provider): an error naming what is missing otherwise, never a silent fallback. `auto` picks
    cuda when that holds and logs the choice and why, once per run."""
    if requested == "cpu":
        return "cpu"
    c = components if components is not None else gpu_components()
    usable = c["cupy"] and (c["tensorrt"] or c["onnxruntime-cuda"])
    if requested == "cuda":
        if not usable:
            missing = (["a usable NVIDIA GPU seen by CuPy (pip install 'sladd[gpu]'; check nvidia-smi)"]
                       if not c["cupy"] else [])
            if not (c["tensorrt"] or c["onnxruntime-cuda"]):
                missing.append("a GPU model runtime: TensorRT (NVIDIA's image, see Dockerfile.gpu) or "
                               "onnxruntime-gpu with its CUDA provider")
            raise RuntimeError(f"--device cuda: missing {' and '.join(missing)} ({_describe(c)}); "
                               "or run with --device cpu")
        LOG.info("device cuda (%s)", _describe(c))
        return "cuda"
    if requested != "auto":
        raise ValueError(f"unknown device {requested!r}; valid: auto, cpu, cuda")
    if usable:
        LOG.info("device auto -> cuda (%s)", _describe(c))
        return "cuda"
    LOG.info("device auto -> cpu (%s)", _describe(c))
    return "cpu"


def choose_decoder(requested: str, device: str, components: Optional[dict[str, bool]] = None) -> tuple[str, str]:
    """(decoder name, DALI device). `auto`: DALI decoding into GPU memory on cuda when DALI is
    installed, else TurboJPEG (faster than DALI's CPU mode on the host: 49 vs 31-35 img/s)."""
    if requested == "auto":
        c = components if components is not None else gpu_components()
        requested = "dali" if device == "cuda" and c["dali"] else "turbojpeg"
        LOG.info("decoder auto -> %s", "dali (nvJPEG, frames stay in GPU memory)" if requested == "dali"
                 else "turbojpeg (host)")
    return requested, ("mixed" if device == "cuda" else "cpu")


def choose_runtime(requested: str, device: str, components: Optional[dict[str, bool]] = None) -> str:
    """`tensorrt` needs cuda; `auto` takes TensorRT on cuda when it is installed, else ONNX Runtime
    (its CUDA provider on cuda; on the CPU, CenterFace's large passes may go to OpenVINO where it
    ran them faster: engine.worker.build, engine.runtimes.ov_passes)."""
    if requested == "tensorrt" and device != "cuda":
        raise RuntimeError("engine.runtime tensorrt needs a GPU (--device cuda)")
    if requested != "auto":
        return requested
    if device == "cuda":
        c = components if components is not None else gpu_components()
        if c["tensorrt"]:
            LOG.info("runtime auto -> tensorrt")
            return "tensorrt"
        LOG.info("runtime auto -> onnxruntime (CUDA provider; TensorRT is not installed)")
    return "onnxruntime"


def choose_encoder(requested: str, device: str, components: Optional[dict[str, bool]] = None) -> str:
    """`auto`: nvImageCodec on cuda when installed (masked device frames are encoded on the GPU;
    only the JPEG comes back), else TurboJPEG on the host."""
    if requested != "auto":
        return requested
    c = components if components is not None else gpu_components()
    name = "nvimagecodec" if device == "cuda" and c.get("nvimagecodec") else "turbojpeg"
    LOG.info("encoder auto -> %s", "nvimagecodec (nvJPEG on the GPU)" if name == "nvimagecodec" else "turbojpeg (host)")
    return name
