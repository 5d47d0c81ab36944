"""What the run needs to know of the INT8 builds (engine.models.quantize makes them): whether
this CPU gains from them, and whether an installed build belongs to the installed fp32 file."""
from __future__ import annotations

import json
from pathlib import Path

from engine.models.resolve import sha256_file

__all__ = ["cpu_int8_dot", "int8_record_ok", "record_path"]


def cpu_int8_dot() -> bool:
    """Whether the CPU has 8-bit dot-product instructions (VNNI or AMX) that make INT8 faster."""
    from engine.runtimes.cpuinfo import cpu_flags

    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8", "avx512vnni"})


def record_path(dest: Path) -> Path:
    return dest.with_name(dest.name.replace(".onnx", "") + ".source.json")


def int8_record_ok(fp32: Path, dest: Path) -> bool:
    """Whether `dest` is an INT8 build of exactly this fp32 file, unchanged since."""
    rec = record_path(dest)
    if not (dest.is_file() and rec.is_file() and fp32.is_file()):
        return False
    try:
        data = json.loads(rec.read_text())
    except (OSError, ValueError):
        return False
    return data.get("from_sha256") == sha256_file(fp32) and data.get("int8_sha256") == sha256_file(dest)
