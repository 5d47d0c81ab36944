"""ONNX -> TensorRT plan compiler; the same as `sladd build-engine` (see engine/build_cli.py).

    python build_engine.py MODEL.onnx --cache DIR [--precision fp16] [--profile NAME=MIN,OPT,MAX]
"""
import sys

from engine.build_cli import main

if __name__ == "__main__":
    sys.exit(main())
