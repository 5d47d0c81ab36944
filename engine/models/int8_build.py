"""What every INT8 build (engine.models.quantize, engine.models.quantize_yolo) does the same way:
static QDQ quantisation with ONNX Runtime, and installing a checked build with its record."""
from __future__ import annotations

import json
from pathlib import Path

from engine.models.int8 import record_path
from engine.models.resolve import copy_atomic, sha256_file

__all__ = ["install", "quantize_views"]


def quantize_views(src: Path, out: Path, input_name: str, blobs: list, recipe: dict, exclude: list[str] = ()) -> None:
    """Static QDQ quantisation of `src` into `out` as `recipe` says (weights INT8 per output
    channel, activations UINT8 per tensor), ranges from `blobs` fed to `input_name`; the nodes
    named in `exclude` stay fp32."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(blobs)

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {input_name: b}

    quantize_static(str(src), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, recipe["calibration"]),
                    nodes_to_exclude=list(exclude) or None, extra_options=recipe.get("extra", {}))


def install(out: Path, fp32: Path, dest: Path, recipe: dict, check: dict) -> Path:
    """Copy the checked build `out` to `dest` atomically, with its record `<stem>.source.json`
    (tied to the fp32 file's SHA-256: engine.models.int8.int8_record_ok)."""
    import onnxruntime as ort

    copy_atomic(out, dest)
    record_path(dest).write_text(json.dumps(
        {"from": fp32.name, "from_sha256": sha256_file(fp32), "int8_sha256": sha256_file(dest),
         "onnxruntime": ort.__version__, "recipe": recipe, "check": check}, indent=2))
    return dest
