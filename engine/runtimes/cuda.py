"""ONNX Runtime's CUDA provider with inputs (and, for fixed shapes, outputs) bound to CuPy
device buffers through IOBinding.

CuPy owns device memory and streams (no pycuda). Outputs live where the inputs did: device
inputs (frames decoded by DALI into GPU memory and prepared there) give CuPy outputs, which
the adapters reduce on the device before the few detections come back; host inputs give NumPy
outputs. Written against the ONNX Runtime IOBinding API; tested only where a GPU is present
(tests marked `gpu`).
"""
from __future__ import annotations

import numpy as np

from engine.device import cupy_module
from kernels._xp import on_device as on_device_array

__all__ = ["CupyBoundSession"]

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


class CupyBoundSession:
    """An ONNX Runtime CUDA session whose inputs are bound to CuPy buffers (IOBinding): host
    arrays are uploaded once, device arrays (e.g. from DALI) are used in place."""

    def __init__(self, session):
        self.session = session
        self.cp = cupy_module()

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, names, feed: dict):
        cp = self.cp
        on_device = any(on_device_array(a) for a in feed.values())
        binding = self.session.io_binding()
        keep = []
        for name, arr in feed.items():
            d = cp.ascontiguousarray(cp.asarray(arr, dtype=cp.float32))
            keep.append(d)                                  # alive until the run is done
            binding.bind_input(name=name, device_type="cuda", device_id=d.device.id, element_type=np.float32,
                               shape=tuple(d.shape), buffer_ptr=d.data.ptr)
        dev = keep[0].device.id if keep else 0
        outs = self.session.get_outputs()
        fixed = on_device and all(isinstance(v, int) and v > 0 for o in outs for v in o.shape)
        bufs = {}
        for o in outs:
            if fixed:
                # Known shapes (e.g. the fixed CenterFace graphs): ONNX Runtime writes straight
                # into CuPy buffers, which the adapter reads on the device.
                buf = bufs[o.name] = cp.empty(tuple(o.shape), dtype=_ORT_TYPES[o.type])
                binding.bind_output(name=o.name, device_type="cuda", device_id=dev, element_type=buf.dtype.type,
                                    shape=tuple(buf.shape), buffer_ptr=buf.data.ptr)
            else:
                binding.bind_output(o.name, "cuda", dev)
        # ONNX Runtime runs on its own CUDA stream: inputs written on CuPy's stream must be done.
        cp.cuda.get_current_stream().synchronize()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        names = names or [o.name for o in outs]
        if fixed:
            return [bufs[n] for n in names]
        host = dict(zip([o.name for o in outs], binding.copy_outputs_to_cpu()))
        return [host[n] for n in names]
