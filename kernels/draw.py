"""Drawing of anonymisation masks: colour fill, colour blur, gray blur, normalised gray blur,
pixelate — computed over the masked regions only.

A *region* is `(y0, x0, mask)`: a box-local `(h, w)` bool mask whose top-left pixel is at
image row `y0`, column `x0`; parts outside the image are ignored. Overlapping regions are
grouped so each pixel is filtered once. Inside the mask the result equals the reference's
full-image `cv2.blur` followed by a masked copy (docs/reference.md §4). A mode is one
function in DRAW_MODES.
"""
from __future__ import annotations

import math

from kernels._xp import cv2_or_none, get_array_module
from kernels.filters import box_filter_region, rgb_to_gray

__all__ = ["blur_ksize", "region_ksize", "group_regions", "draw_regions", "regions_to", "MODES", "DRAW_MODES"]


def blur_ksize(blur: int, width: int) -> int:
    """Reference kernel `int(blur/1000 * W)`, but never below 3 px (fix 3: the reference drew
    nothing, publishing the image unmasked, when this came out below 3)."""
    return max(3, int(blur / 1000.0 * width))


def _clip(region, h: int, w: int):
    y0, x0, m = region
    mh, mw = m.shape
    ty0, tx0 = max(y0, 0), max(x0, 0)
    ty1, tx1 = min(y0 + mh, h), min(x0 + mw, w)
    if ty1 <= ty0 or tx1 <= tx0:
        return None
    return ty0, ty1, tx0, tx1, m[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0]


def group_regions(regions, shape):
    """Clip regions to the image and merge those whose boxes intersect.

    Returns a list of `(y0, y1, x0, x1, union_mask)` with disjoint boxes.
    """
    h, w = shape[:2]
    boxes = [c for c in (_clip(r, h, w) for r in regions) if c is not None]
    groups: list[list] = []
    for box in boxes:
        merged = [box]
        keep = []
        for g in groups:
            if any(_intersects(b, m) for b in merged for m in g):
                merged.extend(g)
            else:
                keep.append(g)
        keep.append(merged)
        groups = keep
    out = []
    for g in groups:
        y0 = min(b[0] for b in g); y1 = max(b[1] for b in g)
        x0 = min(b[2] for b in g); x1 = max(b[3] for b in g)
        xp = get_array_module(g[0][4])
        u = xp.zeros((y1 - y0, x1 - x0), dtype=bool)
        for by0, by1, bx0, bx1, m in g:
            u[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] |= m
        out.append((y0, y1, x0, x1, u))
    return out


def _intersects(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


# --- draw modes: (image, region, ksize, color, block) -> the region's new pixels -------------
# Each returns an array that broadcasts to the region's (h, w, 3): ksize is the region's box
# kernel (see region_ksize), color the RGB fill, block the pixelate cell size.
def _fill(image, region, ksize: int, color, block: int, mask=None):
    xp = get_array_module(image)
    return xp.asarray(color, dtype=xp.uint8)[None, None, :]


def _box_mean(image, ksize: int, region):
    """`box_filter_region`, bit for bit. Device strategy: device arrays (and hosts without
    OpenCV) take the running-sum kernel; host arrays take OpenCV's exact integer window sums
    (`cv2.boxFilter`, unnormalised, CV_32S), rounded as that kernel rounds. NumPy's cumsums were
    most of the mask stage: 0.6 s of 1.4 s for 8 vehicle boxes on an 8000x4000 image."""
    cv2 = cv2_or_none() if get_array_module(image).__name__ == "numpy" else None
    if cv2 is None or ksize * ksize * 255 >= 2 ** 31:             # int32 sums
        return box_filter_region(image, ksize, region)
    import numpy as np

    y0, y1, x0, x1 = region
    h, w = image.shape[:2]
    before, after = ksize // 2, ksize - 1 - ksize // 2
    # The window the kernel reads, clipped to the image: OpenCV's reflect-101 at a clipped side
    # is the image's; elsewhere the kernel never reaches the window's edge.
    wy0, wy1, wx0, wx1 = max(0, y0 - before), min(h, y1 + after), max(0, x0 - before), min(w, x1 + after)
    win = np.ascontiguousarray(image[wy0:wy1, wx0:wx1])
    sums = cv2.boxFilter(win, cv2.CV_32S, (ksize, ksize), anchor=(before, before), normalize=False,
                         borderType=cv2.BORDER_REFLECT_101)[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]
    area = ksize * ksize
    sums += area // 2
    sums //= area
    return sums.astype(np.uint8)


def _blur(image, region, ksize: int, color, block: int, mask=None):
    return _box_mean(image, ksize, region)


def _gray_window(image, region, ksize: int):
    """The gray image over the region plus the kernel's reach (1.2 k for the normalised mode),
    and the region's bounds inside it. On sides where that window is clipped it *is* the image
    border, so reflect-101 inside the window equals reflect-101 of the image; on the other sides
    the kernel never reaches the window edge."""
    y0, y1, x0, x1 = region
    reach = int(1.2 * ksize) // 2 + 1
    gy0, gx0 = max(0, y0 - reach), max(0, x0 - reach)
    gy1, gx1 = min(image.shape[0], y1 + reach), min(image.shape[1], x1 + reach)
    return rgb_to_gray(image[gy0:gy1, gx0:gx1]), (y0 - gy0, y1 - gy0, x0 - gx0, x1 - gx0)


def _gray_blur(image, region, ksize: int, color, block: int, mask=None):
    gray, sub = _gray_window(image, region, ksize)
    return _box_mean(gray, ksize, sub)[..., None]


def _normalized_gray_blur(image, region, ksize: int, color, block: int, mask=None):
    xp = get_array_module(image)
    gray, sub = _gray_window(image, region, ksize)
    a = _box_mean(gray, ksize, sub).astype(xp.int16)
    b = _box_mean(gray, int(1.2 * ksize), sub).astype(xp.int16)
    # Fix 4: saturate to 0..255; the reference wrapped around in uint8 arithmetic.
    return (a - b + 100).clip(0, 255).astype(xp.uint8)[..., None]


def _pixelate(image, region, ksize: int, color, block: int, mask=None):
    """Mean colour of cells aligned to the image origin, over the region. The cell is `block`,
    or the region's kernel when larger (a big face needs big cells to stay unrecognisable)."""
    xp = get_array_module(image)
    block = max(block, ksize)
    y0, y1, x0, x1 = region
    by0, bx0 = (y0 // block) * block, (x0 // block) * block
    by1 = min(image.shape[0], -(-y1 // block) * block)
    bx1 = min(image.shape[1], -(-x1 // block) * block)
    patch = image[by0:by1, bx0:bx1].astype(xp.float32)
    ph, pw = patch.shape[:2]
    ny, nx = -(-ph // block), -(-pw // block)
    padded = xp.zeros((ny * block, nx * block, 3), xp.float32)
    count = xp.zeros((ny * block, nx * block, 1), xp.float32)
    padded[:ph, :pw] = patch
    count[:ph, :pw] = 1
    s = padded.reshape(ny, block, nx, block, 3).sum((1, 3))
    c = count.reshape(ny, block, nx, block, 1).sum((1, 3))
    cells = xp.floor(s / c + 0.5).astype(xp.uint8)
    full = xp.repeat(xp.repeat(cells, block, 0), block, 1)
    return full[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]


def _inpaint(image, region, ksize: int, color, block: int, mask=None):
    """Fill the mask from its surroundings (OpenCV's Telea inpainting): nothing of what the mask
    covered is used. Host only; the window around the region gives it context."""
    xp = get_array_module(image)
    if xp.__name__ != "numpy":
        raise ValueError("mask.mode inpaint runs on the host (OpenCV): use --device cpu, or another mode")
    try:
        import cv2
    except ImportError as exc:
        raise ImportError("mask.mode inpaint needs OpenCV: pip install 'sladd[cpu]'") from exc
    import numpy as np

    y0, y1, x0, x1 = region
    h, w = image.shape[:2]
    r = max(3, ksize // 8)
    wy0, wy1, wx0, wx1 = max(0, y0 - 3 * r), min(h, y1 + 3 * r), max(0, x0 - 3 * r), min(w, x1 + 3 * r)
    win = np.ascontiguousarray(image[wy0:wy1, wx0:wx1])
    m = np.zeros(win.shape[:2], np.uint8)
    m[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0] = 255 if mask is None else mask.astype(np.uint8) * 255
    filled = cv2.inpaint(win, m, r, cv2.INPAINT_TELEA)
    return filled[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]


def _feather_alpha(xp, m, f: int):
    """(h + 2f, w + 2f) float32: 1 on the mask, falling linearly to 0 over `f` pixels outside it
    (square distance), 0 beyond."""
    from kernels.morphology import dilate_square

    alpha = xp.zeros((m.shape[0] + 2 * f, m.shape[1] + 2 * f), xp.float32)
    for d in range(f, 0, -1):           # outermost ring first; nearer rings overwrite it
        ring = dilate_square(m, d)
        alpha[f - d:f - d + ring.shape[0], f - d:f - d + ring.shape[1]][ring] = 1.0 - d / (f + 1.0)
    alpha[f:f + m.shape[0], f:f + m.shape[1]][m] = 1.0
    return alpha


# The draw modes by name. This is the one place a mode is added: the config key `mask.mode`
# accepts exactly these names (engine.config derives its enum from MODES).
DRAW_MODES = {"fill": _fill, "blur": _blur, "gray_blur": _gray_blur,
              "normalized_gray_blur": _normalized_gray_blur, "pixelate": _pixelate, "inpaint": _inpaint}
MODES = tuple(DRAW_MODES)


def region_ksize(ksize: int, h: int, w: int, min_fraction: float) -> int:
    """The kernel for one region: the image-wide `ksize`, but at least `min_fraction` of the
    region's shorter side. The reference's width-relative kernel is far smaller than a face
    that fills a small or close-up image, where a gray blur then shows the face's edges."""
    return max(ksize, int(math.ceil(min_fraction * min(h, w))))


def regions_to(xp, regions):
    """Regions with their masks in `xp`'s memory. Host masks bound for a device image travel in
    one transfer (packed end to end), not one small copy per region."""
    if xp.__name__ == "numpy" or not regions or all(get_array_module(m) is xp for _, _, m in regions):
        return regions
    import numpy as np

    from kernels._xp import to_host

    host = [to_host(m).astype(bool, copy=False) for _, _, m in regions]
    flat = xp.asarray(np.concatenate([m.ravel() for m in host])) if host else None
    out, at = [], 0
    for (y0, x0, _), m in zip(regions, host):
        out.append((y0, x0, flat[at:at + m.size].reshape(m.shape)))
        at += m.size
    return out


def _masked_copy(dst, values, m) -> None:
    """`dst[m] = values` in place: dst `(h, w, 3)`, values broadcasting to it, m `(h, w)` bool.
    A mask that fills its box (boxes, or boxes filling their union) is a plain copy, a third of
    NumPy's masked copyto (about 10 ns a pixel)."""
    xp = get_array_module(dst)
    if m.all():
        dst[...] = values
    else:
        xp.copyto(dst, values, where=m[..., None])


def draw_regions(image, regions, *, mode: str = "normalized_gray_blur", ksize: int = 3,
                 color=(100, 100, 100), block: int = 16, min_fraction: float = 0.0, feather: int = 0, out=None):
    """Anonymise `image` inside the union of `regions`.

    image   (H, W, 3) uint8 RGB, host or device; not mutated unless passed as `out`
    regions iterable of `(y0, x0, mask)` box-local bool masks (see module doc)
    mode    one of MODES; ksize the box kernel (see `blur_ksize`); color RGB for "fill";
            block the cell size for "pixelate"; min_fraction see `region_ksize` (0 = off);
            feather: the drawing fades into the surroundings over this many pixels outside
            each mask (inside, it is drawn fully); 0 = hard edges
    returns the anonymised image (a copy, or `out`)
    """
    draw = DRAW_MODES.get(mode)
    if draw is None:
        raise ValueError(f"unknown draw mode {mode!r}; valid: {', '.join(MODES)}")
    xp = get_array_module(image)
    regions = regions_to(xp, list(regions))
    if out is None:
        out = image.copy()
    # Filter every group from the unmodified image first, then draw: with `out=image`, a group
    # must not read pixels that a neighbouring group (within the kernel's reach) already drew.
    drawn, rings = [], []
    h, w = image.shape[:2]
    for y0, y1, x0, x1, m in group_regions(regions, image.shape):
        k = region_ksize(ksize, y1 - y0, x1 - x0, min_fraction)
        drawn.append(((y0, y1, x0, x1), m, draw(image, (y0, y1, x0, x1), k, color, block, m)))
        if feather > 0:
            # The surroundings: drawn over a window grown by `feather`, blended by distance.
            fy0, fy1, fx0, fx1 = max(0, y0 - feather), min(h, y1 + feather), max(0, x0 - feather), min(w, x1 + feather)
            a = _feather_alpha(xp, m, feather)[fy0 - y0 + feather:fy1 - y0 + feather, fx0 - x0 + feather:fx1 - x0 + feather]
            grown = xp.zeros((fy1 - fy0, fx1 - fx0), bool)
            grown[y0 - fy0:y1 - fy0, x0 - fx0:x1 - fx0] = m
            values = draw(image, (fy0, fy1, fx0, fx1), k, color, block, grown)
            rings.append(((fy0, fy1, fx0, fx1), a[..., None], values))
    for (y0, y1, x0, x1), a, values in rings:
        blend = a * values.astype(xp.float32) + (1.0 - a) * out[y0:y1, x0:x1].astype(xp.float32)
        out[y0:y1, x0:x1] = xp.floor(blend + 0.5).astype(out.dtype)
    # The masks last: whatever a neighbour's fading ring did, every masked pixel is fully drawn.
    for (y0, y1, x0, x1), m, values in drawn:
        _masked_copy(out[y0:y1, x0:x1], values, m)
    return out
