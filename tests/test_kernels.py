"""Kernels against OpenCV (the reference system's library) as the oracle."""
import cv2
import numpy as np
import pytest

from kernels import (blur_ksize, box_filter_region, cutout_windows, dilate_square, draw_regions, nms,
                     region_ksize, resize_bilinear, rgb_to_gray, shape_mask)
from tests.conftest import to_host

RNG = np.random.default_rng(1)
IMG = RNG.integers(0, 256, (120, 160, 3), dtype=np.uint8)


@pytest.mark.parametrize("k", [3, 4, 9, 36, 37])
@pytest.mark.parametrize("region", [(0, 120, 0, 160), (10, 50, 20, 90), (100, 120, 140, 160), (0, 3, 0, 3)])
def test_box_filter_region_equals_cv2_blur(xp, k, region):
    ref = cv2.blur(IMG, (k, k))                        # BORDER_REFLECT_101, centred anchor
    y0, y1, x0, x1 = region
    got = to_host(box_filter_region(xp.asarray(IMG), k, region))
    assert got.shape == (y1 - y0, x1 - x0, 3)
    assert np.abs(got.astype(int) - ref[y0:y1, x0:x1].astype(int)).max() <= 1


def test_box_filter_does_not_mutate_input(xp):
    a = xp.asarray(IMG)
    before = to_host(a).copy()
    box_filter_region(a, 9, (0, 50, 0, 50))
    assert (to_host(a) == before).all()


def _ramp_with_blocks(h=6000, w=700):
    """A vertical ramp with a white and a black block: window means that differ along the
    region, unlike a random image whose large-window means are all ~127."""
    yy = np.mgrid[0:h, 0:w][0]
    img = ((yy * 255) // (h - 1)).astype(np.uint8)
    img[4000:, :350] = 255
    img[:1000, 500:] = 0
    return img


# The old rounding, (2s + a) // 2a in int32, overflowed from ksize 2052 (k = 2100 on an all-255
# image gave 24); the sums are uint32 up to ksize 4100 and uint64 from 4101.
@pytest.mark.parametrize("k,channels", [(2051, 3), (2052, 3), (2100, 3), (2901, 1), (4100, 1), (4101, 1)])
def test_box_filter_of_a_white_image_is_white_at_and_beyond_the_old_limit(xp, k, channels):
    img = np.full((48, 64, 3) if channels == 3 else (48, 64), 255, np.uint8)
    region = (0, 48, 0, 64) if channels == 3 else (0, 8, 0, 8)         # 1 channel: less memory at k > 2900
    got = to_host(box_filter_region(xp.asarray(img), k, region))
    assert got.dtype == np.uint8 and (got == 255).all(), np.unique(got)


@pytest.mark.parametrize("k", [2052, 2100, 4101])
def test_box_filter_with_huge_kernels_equals_cv2_blur_and_scipy(xp, k):
    img = _ramp_with_blocks()
    y0, y1, x0, x1 = region = (2900, 3100, 320, 380)
    got = to_host(box_filter_region(xp.asarray(img), k, region)).astype(int)
    ref = cv2.blur(img, (k, k))[y0:y1, x0:x1]                # its sums are exact (float64 from 2^23 px)
    assert got.max() - got.min() >= 3                          # the oracle sees a non-constant mean
    assert np.abs(got - ref).max() <= 1
    try:
        from scipy import ndimage
    except ImportError:                                        # the device machine may lack SciPy
        return
    mean = ndimage.uniform_filter(img.astype(np.float64), k, mode="mirror")[y0:y1, x0:x1]   # mirror = reflect-101
    assert np.abs(got - mean).max() <= 0.5 + 1e-6              # rounded to nearest


@pytest.mark.parametrize("p", [0, 1, 4, 7])
def test_dilate_square_equals_cv2_dilate(xp, p):
    m = np.zeros((30, 40), bool)
    m[3, 5] = m[15:18, 20:26] = m[29, 39] = True
    got = to_host(dilate_square(xp.asarray(m), p))
    big = np.zeros((30 + 4 * p, 40 + 4 * p), np.uint8)
    big[2 * p:2 * p + 30, 2 * p:2 * p + 40] = m
    ref = cv2.dilate(big, np.ones((2 * p + 1, 2 * p + 1), np.uint8)).astype(bool)
    assert got.shape == (30 + 2 * p, 40 + 2 * p)
    assert (got == ref[p:p + 30 + 2 * p, p:p + 40 + 2 * p]).all()


def test_rgb_to_gray_matches_cv2(xp):
    got = to_host(rgb_to_gray(xp.asarray(IMG)))
    assert np.abs(got.astype(int) - cv2.cvtColor(IMG, cv2.COLOR_RGB2GRAY).astype(int)).max() <= 1


def _mask_region():
    m = np.zeros((30, 50), bool)
    m[5:25, 10:45] = True
    return [(40, 60, m)], (slice(45, 65), slice(70, 105))


@pytest.mark.parametrize("mode", ["blur", "gray_blur", "normalized_gray_blur", "fill"])
def test_draw_regions_matches_full_image_reference(xp, mode):
    regions, (sy, sx) = _mask_region()
    k = 9
    got = to_host(draw_regions(xp.asarray(IMG), [(y, x, xp.asarray(m)) for y, x, m in regions],
                               mode=mode, ksize=k, color=(1, 2, 3)))
    gray = cv2.cvtColor(IMG, cv2.COLOR_RGB2GRAY)
    if mode == "blur":
        ref = cv2.blur(IMG, (k, k))
    elif mode == "gray_blur":
        ref = np.repeat(cv2.blur(gray, (k, k))[..., None], 3, 2)
    elif mode == "normalized_gray_blur":
        d = cv2.blur(gray, (k, k)).astype(int) - cv2.blur(gray, (int(1.2 * k),) * 2).astype(int) + 100
        ref = np.repeat(np.clip(d, 0, 255).astype(np.uint8)[..., None], 3, 2)
    else:
        ref = np.broadcast_to(np.array([1, 2, 3], np.uint8), IMG.shape)
    inside = np.zeros(IMG.shape[:2], bool)
    inside[sy, sx] = True
    # Gray is rounded before the blur in both, so differences are rounding only.
    assert np.abs(got[inside].astype(int) - ref[inside].astype(int)).max() <= 2
    assert (got[~inside] == IMG[~inside]).all(), "pixels outside the mask must not change"


def test_normalized_gray_blur_makes_bright_and_dark_objects_alike():
    img = np.full((80, 160, 3), 128, np.uint8)
    img[20:60, 10:70] = 245                            # a bright object
    img[20:60, 90:150] = 15                            # a dark object
    img[30:50, 30:50] = 10                             # with some structure
    img[30:50, 110:130] = 250
    m = np.ones((40, 60), bool)
    out = draw_regions(img, [(20, 10, m), (20, 90, m)], mode="normalized_gray_blur", ksize=24)
    bright, dark = out[20:60, 10:70, 0].astype(float), out[20:60, 90:150, 0].astype(float)
    assert abs(bright.mean() - 100) < 12 and abs(dark.mean() - 100) < 12
    assert abs(bright.mean() - dark.mean()) < 10      # the input means differ by 230


def test_draw_regions_overlapping_regions_filter_once_and_union():
    m1 = np.ones((10, 10), bool)
    m2 = np.ones((10, 10), bool)
    out = draw_regions(IMG, [(10, 10, m1), (15, 15, m2)], mode="fill", color=(0, 0, 0))
    assert (out[10:20, 10:20] == 0).all() and (out[15:25, 15:25] == 0).all()
    assert (out[10:15, 20:25] == IMG[10:15, 20:25]).all()


def test_draw_regions_clips_regions_outside_image():
    m = np.ones((20, 20), bool)
    out = draw_regions(IMG, [(-10, -10, m), (110, 150, m)], mode="fill", color=(7, 7, 7))
    assert (out[:10, :10] == 7).all() and (out[110:, 150:] == 7).all()
    assert (out[10:110, 10:150] == IMG[10:110, 10:150]).all()


def test_blur_ksize_reference_formula_and_floor():
    assert blur_ksize(15, 2448) == 36 and blur_ksize(15, 8000) == 120
    assert blur_ksize(15, 100) == 3                    # reference: 1 -> drew nothing (fix 3)
    assert region_ksize(36, 40, 40, 0.25) == 36 and region_ksize(7, 200, 180, 0.25) == 45


def test_pixelate_cells_are_block_means():
    img = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = draw_regions(img, [(0, 0, np.ones((64, 64), bool))], mode="pixelate", ksize=3, block=16)
    cell = img[16:32, 32:48].reshape(-1, 3).mean(0)
    assert np.abs(out[16:32, 32:48].reshape(-1, 3) - cell).max() <= 0.5 + 1e-6


def test_nms_matches_bruteforce():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    keep = nms(boxes, scores, 0.5).tolist()
    assert keep == [3, 2]


def test_resize_bilinear_matches_cv2(xp):
    got = to_host(resize_bilinear(xp.asarray(IMG), 60, 80))
    ref = cv2.resize(IMG.astype(np.float32), (80, 60), interpolation=cv2.INTER_LINEAR)
    assert np.abs(got - ref).max() < 1e-3


def test_resize_bilinear_host_paths_agree(monkeypatch):
    """On the host OpenCV resizes (the plate model's 640 px input: 0.9 ms instead of 7.8 ms);
    without it the NumPy code (the device's algorithm) gives the same values to float rounding."""
    import kernels.resize as rs

    rng = np.random.default_rng(5)
    cases = [(rng.integers(0, 256, (1024, 1224, 3), dtype=np.uint8), 535, 640),     # 1.9x down
             (rng.integers(0, 256, (300, 200), dtype=np.uint8), 97, 451),           # 2-D, up and down
             (rng.uniform(0, 255, (64, 80, 1)).astype(np.float32), 128, 33)]        # one channel, float
    fast = [rs.resize_bilinear(src, h, w) for src, h, w in cases]
    monkeypatch.setattr(rs, "cv2_or_none", lambda: None)
    for (src, h, w), a in zip(cases, fast):
        b = rs.resize_bilinear(src, h, w)
        assert a.shape == b.shape == (h, w) + src.shape[2:] and a.dtype == b.dtype == np.float32
        assert np.abs(a - b).max() < 0.05


def test_ellipse_mask_is_inscribed():
    m = shape_mask(np, (0, 0, 20, 10), (0, 0, 20, 10), "ellipse")
    assert m.shape == (10, 20) and m[5, 10] and not m[0, 0] and not m[9, 19]
    assert abs(m.mean() - np.pi / 4) < 0.05


def test_cutout_windows_cover_every_pixel_and_keep_reference_starts():
    h, w = 4000, 8000
    wins = cutout_windows(h, w, (3, 2), (1500, 1300))
    # Columns keep the reference's starts (step 1300 <= window 4000) plus the edge-aligned one;
    # rows step by the window height, since the reference's 1500 > 1333 left bands unseen.
    assert sorted({x for _, x, _, _ in wins}) == [0, 1300, 2600, 3900, 4000]
    assert sorted({y for y, _, _, _ in wins}) == [0, 1333, 2666, 2667]
    cover = np.zeros((h // 100, w // 100), bool)
    for y, x, wh, ww in wins:
        assert (wh, ww) == (1333, 4000) and y + wh <= h and x + ww <= w
        cover[y // 100:(y + wh) // 100, x // 100:(x + ww) // 100] = True
    assert cover.all()


@pytest.mark.parametrize("mode", ["blur", "gray_blur", "normalized_gray_blur", "fill", "pixelate"])
def test_kernels_leave_inputs_unchanged(xp, mode):
    img = xp.asarray(IMG)
    m = xp.asarray(RNG.random((30, 40)) > 0.5)
    img_before, m_before = to_host(img).copy(), to_host(m).copy()
    out = draw_regions(img, [(10, 20, m)], mode=mode, ksize=9)
    dilate_square(m, 3)
    assert (to_host(img) == img_before).all() and (to_host(m) == m_before).all()
    assert not (to_host(out) == img_before).all()


def test_draw_in_place_equals_copy():
    """Two regions within each other's kernel reach: in place must read the original pixels."""
    m = RNG.random((30, 40)) > 0.5
    regions = [(10, 20, m), (10, 63, m)]
    a = draw_regions(IMG, regions, mode="blur", ksize=15)
    b = IMG.copy()
    draw_regions(b, regions, mode="blur", ksize=15, out=b)
    assert (a == b).all()


def test_host_masks_on_a_device_image_match_device_masks(xp):
    """The mask stage builds masks on the host; on the GPU path they travel to the device in
    one packed transfer and must draw exactly what device masks draw."""
    regions, _ = _mask_region()
    regions = regions + [(5, 7, np.eye(9, dtype=bool)), (60, 90, np.ones((3, 40), bool))]
    want = to_host(draw_regions(xp.asarray(IMG), [(y, x, xp.asarray(m)) for y, x, m in regions],
                                mode="normalized_gray_blur", ksize=9))
    got = to_host(draw_regions(xp.asarray(IMG), regions, mode="normalized_gray_blur", ksize=9))
    assert (got == want).all()


def test_regions_to_packs_masks_into_one_transfer():
    """`regions_to` with a stand-in array module that counts transfers: one, and every mask
    comes back with its own shape, values and origin."""
    from types import SimpleNamespace

    from kernels.draw import regions_to

    calls = []

    def asarray(a):
        calls.append(a.shape)
        return np.array(a, copy=True)

    fake = SimpleNamespace(__name__="fakexp", asarray=asarray)
    rng = np.random.default_rng(1)
    regions = [(i, 2 * i, rng.random((3 + i, 5 + 2 * i)) > 0.5) for i in range(6)]
    moved = regions_to(fake, regions)
    assert len(calls) == 1 and calls[0] == (sum(m.size for _, _, m in regions),)
    for (y, x, m), (y2, x2, m2) in zip(regions, moved):
        assert (y, x) == (y2, x2) and m2.shape == m.shape and (m2 == m).all()
