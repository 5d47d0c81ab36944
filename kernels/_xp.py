"""Array-module dispatch: NumPy on the host, CuPy on the device, chosen by the inputs."""
from __future__ import annotations

import numpy as np

__all__ = ["get_array_module", "cupy_or_none", "cv2_or_none", "to_host", "on_device"]


def cupy_or_none():
    """The cupy module when installed *and* a device is usable, else None (no import errors)."""
    try:
        import cupy
    except ImportError:
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # noqa: BLE001 - CUDA driver missing/broken: CuPy is not usable here
        return None
    return cupy


def get_array_module(*arrays):
    """`cupy` if any argument is a CuPy array, else `numpy` (never imports CuPy needlessly)."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy
            return cupy.get_array_module(*arrays)
    return np


def on_device(a) -> bool:
    """True for a CuPy (device) array."""
    return type(a).__module__.startswith("cupy")


def to_host(a):
    """A NumPy array of `a`: an explicit device-to-host copy for CuPy arrays, else as is."""
    return a.get() if on_device(a) else np.asarray(a)


def cv2_or_none():
    """OpenCV where installed (the host fast paths), else None: the NumPy code does the same."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2
