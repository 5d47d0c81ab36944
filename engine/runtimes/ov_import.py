"""Importing OpenVINO for sladd's use, and its compiled models behind ONNX Runtime's session calls
(engine.runtimes.openvino, ov_passes, engine.ov_prefetch): no other sladd module imported, so
that every OpenVINO module can use it."""
from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np

__all__ = ["openvino_module", "Session"]


def openvino_module():
    """The `openvino` module, without its model converter: `openvino/__init__.py` imports
    `openvino.tools.ovc` (and with it the telemetry client and urllib) only to offer
    `convert_model`, which sladd never calls: 50 of the 75 ms of the import, and network code a
    run must not hold. A later explicit import of the converter still works."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    blocked = "openvino.tools.ovc" not in sys.modules
    if blocked:
        sys.modules["openvino.tools.ovc"] = None            # the package's `try: import` skips it
    try:
        import openvino as ov
    except ImportError:
        ov = None                              # a release that needs its converter at import
    finally:
        if blocked:
            sys.modules.pop("openvino.tools.ovc", None)
    if ov is None:
        sys.modules.pop("openvino", None)
        try:
            import openvino as ov
        except ImportError as exc:
            raise ImportError("engine.runtime openvino needs OpenVINO: pip install 'sladd[cpu]'") from exc
    return ov


class _Arg(NamedTuple):
    """An input or output as ONNX Runtime describes it: name and shape (a str for a free dim)."""

    name: str
    shape: list


def _args(ports) -> list[_Arg]:
    out = []
    for p in ports:
        dims = [d.get_length() if d.is_static else f"d{k}" for k, d in enumerate(p.get_partial_shape())]
        out.append(_Arg(p.get_any_name(), dims))
    return out


class Session:
    """A compiled model with ONNX Runtime's session calls (`get_inputs()`, `get_outputs()`,
    `run(names, feed)`). Not thread-safe (one infer request): one per thread. `request`: an infer
    request made ahead (a new one waits for any inference of the compiled model under way);
    `first_run`: called with the first input's shape before the first inference."""

    def __init__(self, compiled, request=None, first_run=None):
        self._compiled = compiled
        self._request = request if request is not None else compiled.create_infer_request()
        self._inputs, self._outputs = _args(compiled.inputs), _args(compiled.outputs)
        self._first_run = first_run

    def _note_first(self, inputs: dict) -> None:
        if self._first_run is not None:
            first, self._first_run = self._first_run, None
            first(next(iter(inputs.values())).shape)

    def get_inputs(self) -> list[_Arg]:
        return self._inputs

    def get_outputs(self) -> list[_Arg]:
        return self._outputs

    def run(self, names, feed: dict) -> list[np.ndarray]:
        # share_inputs: the request reads the caller's arrays (a 15 MB blob is not copied); they
        # are held in `inputs` until infer returns. The outputs are copied: the request reuses
        # its buffers in its next call.
        inputs = {k: np.ascontiguousarray(v) for k, v in feed.items()}
        self._note_first(inputs)
        res = self._request.infer(inputs, share_inputs=True)
        by_name = {o.get_any_name(): res[o] for o in self._compiled.outputs}
        return [np.array(by_name[n]) for n in (names or [o.name for o in self._outputs])]
