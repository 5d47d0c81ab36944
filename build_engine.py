"""ONNX -> TensorRT plan compiler (`python build_engine.py` / `sladd build-engine`).

Not available in this version: the GPU path (TensorRT plans, DALI decoding, CuPy kernels) is
the open work item "The GPU path" (issue 9). Until then `--device cuda` runs models through
ONNX Runtime's CUDA execution provider and everything else on the host. This file exists so
the project layout is fixed; it fails loudly rather than pretending to build anything.
"""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    print("build_engine: TensorRT plan building is not implemented in this version of sladd "
          "(see the README, section 'GPU'); use --device cpu, or --device cuda with onnxruntime-gpu.",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
