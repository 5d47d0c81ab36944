"""Importing OpenVINO for sladd's use (engine.runtimes.openvino, ov_passes, engine.ov_prefetch):
standard library only, so that every OpenVINO module can use it."""
from __future__ import annotations

import sys

__all__ = ["openvino_module"]


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
