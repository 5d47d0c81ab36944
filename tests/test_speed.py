"""Issue 19's CPU speed changes keep their results: the OpenCV window sums equal the NumPy
kernel bit for bit, a box mask is dilated as before, and NanoDet runs a small image small."""
from pathlib import Path

import numpy as np
import pytest

from engine.config import Config, ModelSpec
from engine.detect import Detector, build_models
from engine.mask import Masker
from engine.types import Detections
from kernels import box_filter_region, dilate_square
from kernels.draw import _box_mean, _masked_copy

cv2 = pytest.importorskip("cv2")
REAL_NANODET = Path.home() / ".cache/sladd/models/nanodet.onnx"


@pytest.mark.parametrize("shape", [(300, 400), (300, 400, 3), (57, 33)])
@pytest.mark.parametrize("k", [1, 2, 3, 8, 21, 101, 500])
def test_opencv_window_sums_equal_the_numpy_kernel(shape, k):
    img = np.random.default_rng(k).integers(0, 256, shape, np.uint8)
    h, w = shape[:2]
    for region in [(0, h, 0, w), (10, 50, 20, 30), (h - 20, h, w - 7, w)]:
        assert np.array_equal(_box_mean(img, k, region), box_filter_region(img, k, region))


def test_masked_copy_equals_numpy_copyto():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3), np.uint8)
    values = rng.integers(0, 256, (40, 50, 1), np.uint8)
    m = rng.random((40, 50)) > 0.3
    want = img.copy()
    np.copyto(want[10:50, 20:70], values, where=m[..., None])
    got = img.copy()
    _masked_copy(got[10:50, 20:70], values, m)
    assert np.array_equal(got, want)
    full = img.copy()
    _masked_copy(full[10:50, 20:70], values, np.ones((40, 50), bool))
    assert np.array_equal(full[10:50, 20:70], np.broadcast_to(values, (40, 50, 3))) and np.array_equal(full[:10], img[:10])


def test_box_regions_equal_dilated_masks():
    boxes = np.array([[10.2, 20.7, 110.5, 90.1], [0, 0, 5, 5]], np.float32)
    dets = Detections(boxes=boxes, scores=np.ones(2, np.float32), classes=np.zeros(2, np.int32), names=("car",),
                      masks=None, mask_boxes=None, shapes=("box", "box"), counted=np.arange(2))
    for (y0, x0, m), b in zip(Masker(Config()).regions(dets, 200, 300), boxes):
        from kernels import box_to_int
        bx0, by0, bx1, by1 = box_to_int(b, 200, 300)
        assert (y0, x0) == (by0 - 4, bx0 - 4)
        assert np.array_equal(m, dilate_square(np.ones((by1 - by0, bx1 - bx0), bool), 4))


@pytest.mark.skipif(not REAL_NANODET.is_file(), reason="needs `sladd models fetch nanodet`")
def test_nanodet_runs_a_small_image_at_its_own_size():
    from engine.runtimes import create_runtime
    runtime = create_runtime("onnxruntime", device="cpu")
    cfg = Config(models=[ModelSpec(card="nanodet", file=str(REAL_NANODET))])
    det = Detector(cfg, *build_models(cfg, runtime))
    adapter = det.slots[0].adapter
    assert adapter.resizable
    seen = []
    run = adapter.session.run
    adapter.session.run = lambda names, feed: (seen.append(next(iter(feed.values())).shape), run(names, feed))[1]
    from tests.test_models import _frame
    det(_frame(np.zeros((48, 64, 3), np.uint8)))
    det(_frame(np.zeros((2048, 2448, 3), np.uint8)))
    assert seen == [(1, 3, 64, 64), (1, 3, 352, 416)]


def test_cpu_model_is_read_without_a_subprocess(monkeypatch):
    """platform.processor() runs `uname -p`; the model name comes from /proc/cpuinfo where it is
    there, and PyTurboJPEG's library is found by soname (its search runs `ldconfig -p`)."""
    import platform
    import subprocess
    from pathlib import Path

    from engine.runtimes import cpuinfo

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    names = [line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("model name")]
    if not names:
        pytest.skip("/proc/cpuinfo names no CPU model here")

    def refuse(*a, **k):
        raise AssertionError(f"a subprocess was started: {a}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(platform, "processor", lambda: refuse("uname -p"))
    cpuinfo._fields.cache_clear()
    try:
        assert cpuinfo.cpu_model() == names[0]
        import engine.codecs.turbo as turbo

        monkeypatch.setattr(turbo, "_TJ", None)
        assert turbo.turbojpeg() is not None
        import engine.lossless as lossless

        monkeypatch.setattr(lossless, "_LIB", None)
        assert lossless._lib().tjTransform is not None
    finally:
        cpuinfo._fields.cache_clear()
