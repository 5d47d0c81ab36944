"""What the CPU is, read once from /proc/cpuinfo: its model name (logs, the runtime choice's
key), its feature flags (INT8 dot products) and a short key of both (files ONNX Runtime
optimised for this CPU: its layouts depend on the vector width)."""
from __future__ import annotations

import functools
import hashlib
import platform
from pathlib import Path

__all__ = ["cpu_model", "cpu_flags", "cpu_key"]


@functools.lru_cache(maxsize=1)
def _fields() -> tuple[str, frozenset]:
    # platform.processor() runs `uname -p` in a subprocess on Linux: asked only where
    # /proc/cpuinfo names no model (the same answer as before, without a process per run).
    model, flags = None, frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return model or platform.processor() or platform.machine(), flags


def cpu_model() -> str:
    return _fields()[0]


def cpu_flags() -> frozenset:
    return _fields()[1]


def cpu_key() -> str:
    model, flags = _fields()
    return hashlib.sha256(f"{platform.machine()}|{model}|{' '.join(sorted(flags))}".encode()).hexdigest()[:12]
