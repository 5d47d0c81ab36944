"""Model runtimes, by name: each creates sessions (`session(model, family=None)` with
`get_inputs()`, `get_outputs()` and `run(names, feed)`) from the ONNX graphs the adapters hand in.

`onnxruntime`: ONNX Runtime's CPU provider, or on device "cuda" its CUDA provider with
CuPy-bound inputs (engine.runtimes.cuda). `tensorrt`: TensorRT plans built and cached per GPU
(engine.runtimes.tensorrt, engine.runtimes.trt_plan), imported only when created. `openvino`:
Intel's CPU runtime (engine.runtimes.openvino), imported only when created; with `auto` on the
CPU, CenterFace's large passes may run on it (engine.runtimes.ov_passes). Every runtime
takes `device`, `threads`, `precision`, `cache`, `calibration_images` and `max_batch`.
"""
from __future__ import annotations

from engine.registry import Registry
from engine.runtimes.onnxruntime import OrtRuntime, onnx_module

__all__ = ["RUNTIMES", "create_runtime", "OrtRuntime", "onnx_module"]

RUNTIMES = Registry("runtime")


def _openvino(**kwargs):
    from engine.runtimes.openvino import OpenVinoRuntime    # lazy: the `openvino` extra
    return OpenVinoRuntime(**kwargs)


def _tensorrt(**kwargs):
    from engine.runtimes.tensorrt import TrtRuntime    # lazy: TensorRT is NVIDIA-container only
    return TrtRuntime(**kwargs)


RUNTIMES.add("onnxruntime", OrtRuntime)
RUNTIMES.add("tensorrt", _tensorrt)
RUNTIMES.add("openvino", _openvino)


def create_runtime(name: str, **kwargs):
    """A runtime by name; ValueError listing the valid names for an unknown one."""
    return RUNTIMES.create(name, **kwargs)
