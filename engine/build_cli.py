"""ONNX -> TensorRT plan compiler (`python build_engine.py` or `sladd build-engine`).

    python build_engine.py MODEL.onnx --cache DIR [--precision fp16] \
        [--profile input_1:0=1x3x416x416,8x3x416x416,16x3x416x416] [--timing-cache FILE]

Needs TensorRT and an NVIDIA GPU (NVIDIA's TensorRT container, see Dockerfile.gpu, or the
tensorrt-cu12 wheels). TensorRT 10 builds every precision; TensorRT 11 builds strongly typed
networks only, so there --precision fp32 (fp16 and int8 are refused, saying why). Plans are
cached by GPU, TensorRT version, precision, profiles and the ONNX file's SHA-256 (a JSON sidecar
beside each plan): a matching plan is reused, anything else is rebuilt. INT8 (TensorRT 10)
calibrates from a folder of sample JPEGs (--calib-dir) with a calibration cache (--calib-cache).
A profile may make height and width dynamic too (e.g. images=1x3x160x160,8x3x384x384,8x3x640x640
for a graph exported with dynamic sides): one plan for every size in the range.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _profile(text: str):
    from engine.runtimes.trt_plan import Profile, parse_shape

    try:
        name, shapes = text.split("=", 1)
        lo, opt, hi = (parse_shape(s) for s in shapes.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--profile NAME=MIN,OPT,MAX (e.g. images=1x3x640x640,8x3x640x640,"
                                         f"16x3x640x640): {exc}") from None
    return Profile(name, lo, opt, hi)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="sladd build-engine", description="ONNX -> TensorRT plan, cached per GPU")
    ap.add_argument("onnx", type=Path)
    from engine.models.resolve import plans_dir

    ap.add_argument("--cache", type=Path, default=plans_dir(), help="plan cache (default: %(default)s)")
    ap.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16",
                    help="fp16/int8 need TensorRT 10 (TensorRT 11 builds fp32 only); default: %(default)s")
    ap.add_argument("--profile", type=_profile, action="append", default=[])
    ap.add_argument("--timing-cache", type=Path, default=None)
    ap.add_argument("--workspace-gb", type=float, default=4.0)
    ap.add_argument("--force", action="store_true", help="rebuild even if a matching plan exists")
    ap.add_argument("--calib-dir", type=Path, default=None, help="int8: folder of sample JPEGs")
    ap.add_argument("--calib-cache", type=Path, default=None, help="int8: calibration cache file")
    ap.add_argument("--family", default="centerface",
                    help="int8: the model family (a card's `family`) whose preprocessing calibrates")
    ap.add_argument("--calib-shape", default="8x3x640x640", help="int8: calibration batch NxCxHxW")
    args = ap.parse_args(argv)
    if not args.onnx.is_file():
        print(f"build_engine: {args.onnx} does not exist", file=sys.stderr)
        return 2
    from engine.runtimes.trt_plan import build_plan, calibration_batches, make_calibrator, parse_shape

    try:
        calibrator = None
        if args.precision == "int8":
            if args.calib_dir is None:
                print("build_engine: --precision int8 needs --calib-dir (sample images)", file=sys.stderr)
                return 2
            cache = args.calib_cache or args.onnx.with_suffix(".calib")
            calibrator = make_calibrator(calibration_batches(args.calib_dir, args.family,
                                                             parse_shape(args.calib_shape)), cache)
        plan = build_plan(args.onnx, args.cache, precision=args.precision, profiles=args.profile,
                          timing_cache=args.timing_cache, workspace_gb=args.workspace_gb, force=args.force,
                          calibrator=calibrator)
    except (ImportError, RuntimeError, ValueError) as exc:
        print(f"build_engine: {exc}", file=sys.stderr)
        return 2
    print(plan)
    return 0


