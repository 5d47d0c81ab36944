"""Mask stage: detections -> dilated box-local regions -> drawn with the configured mode."""
from __future__ import annotations

import numpy as np

from engine.config import Config
from engine.types import Detections
from kernels import blur_ksize, box_to_int, dilate_square, draw_regions, shape_mask, wrap_regions

__all__ = ["Masker", "LABEL_COLORS", "DEFAULT_COLOR"]

# The reference's per-class fill colours (docs/reference.md §4), by class name.
LABEL_COLORS = {"person": (255, 255, 255), "bicycle": (0, 0, 255), "car": (255, 0, 0),
                "motorcycle": (255, 255, 0), "bus": (0, 255, 255), "truck": (0, 255, 0)}
DEFAULT_COLOR = (100, 100, 100)


class Masker:
    def __init__(self, cfg: Config):
        m = cfg.mask
        self.dilation = m.dilation_pixels
        self.blur = m.blur
        self.mask_color = m.color
        self.min_fraction = m.min_kernel_fraction
        self.mode = m.mode
        self.feather = m.feather_pixels
        self.wrap = cfg.image_type == "360"            # boxes may run past the right edge

    def regions(self, dets: Detections, h: int, w: int, select=None, unsplit: bool = False):
        """Dilated `(y0, x0, mask)` regions of the detections (indices `select`, default all)."""
        out = []
        idx = range(len(dets)) if select is None else select
        p = self.dilation
        for i in idx:
            if dets.masks is not None and dets.masks[i] is not None:
                x0, y0, _, _ = (int(v) for v in dets.mask_boxes[i])
                m = dets.masks[i]
            else:
                x0, y0, x1, y1 = box_to_int(dets.boxes[i], h, 2 * w if self.wrap else w)
                if x1 <= x0 or y1 <= y0:
                    continue
                shape = dets.shapes[i] if dets.shapes else "box"
                if shape == "box":
                    # A dilated box is the grown box: no running sums over a vehicle-sized mask
                    # (they were a third of the mask stage for large vehicle boxes).
                    out.append((y0 - p, x0 - p, np.ones((y1 - y0 + 2 * p, x1 - x0 + 2 * p), bool)))
                    continue
                m = shape_mask(np, dets.boxes[i], (x0, y0, x1, y1), shape)
            if not m.any():
                continue
            out.append((y0 - p, x0 - p, dilate_square(m, p)))
        return wrap_regions(out, w) if self.wrap and not unsplit else out

    def __call__(self, pixels: np.ndarray, dets: Detections, *, inplace: bool = False) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> anonymised image (a copy, or `pixels` itself with `inplace`)."""
        h, w = pixels.shape[:2]
        ksize = blur_ksize(self.blur, w)
        if self.mode != "fill" or self.mask_color is not None:
            color = self.mask_color or DEFAULT_COLOR
            out = draw_regions(pixels, self.regions(dets, h, w), mode=self.mode, ksize=ksize, color=color,
                               min_fraction=self.min_fraction, feather=self.feather, out=pixels if inplace else None)
            if self.wrap:
                self._redraw_seam(pixels, out, dets, ksize, color)
            return out
        out = pixels if inplace else pixels.copy()
        # Per-class colours, drawn class by class in detection order (the reference's loop).
        for c in dict.fromkeys(dets.classes.tolist()):
            name = dets.names[c] if 0 <= c < len(dets.names) else ""
            sel = np.nonzero(dets.classes == c)[0]
            draw_regions(out, self.regions(dets, h, w, sel), mode="fill",
                         color=LABEL_COLORS.get(name, DEFAULT_COLOR), feather=self.feather, out=out)
        return out

    def _redraw_seam(self, pixels, out, dets: Detections, ksize: int, color) -> None:
        """360°: a region across the x = 0/W seam, drawn in two parts, was filtered as two narrow
        regions (a smaller kernel) with the picture reflected at the edges; draw it again whole
        on a band of the picture with the seam in its middle (the columns past W taken from the
        left edge), and copy both halves back."""
        h, w = pixels.shape[:2]
        regs = [(y0, x0 + w if x0 < 0 else x0, m) for y0, x0, m in self.regions(dets, h, w, unsplit=True)]
        regs = [r for r in regs if r[1] < w < r[1] + r[2].shape[1]]
        if not regs:
            return
        y0 = max(0, min(r[0] for r in regs))
        y1 = min(h, max(r[0] + r[2].shape[0] for r in regs))
        half = min(w // 2, max(r[1] + 2 * r[2].shape[1] for r in regs) - w + ksize)   # the filter's reach too
        x0 = w - half
        band = np.concatenate([pixels[y0:y1, x0:], pixels[y0:y1, :half]], 1)   # the seam at column `half`
        shifted = [(ry - y0, rx - x0, m) for ry, rx, m in regs]
        drawn = draw_regions(band, shifted, mode=self.mode, ksize=ksize, color=color,
                             min_fraction=self.min_fraction, feather=self.feather)
        sel = np.zeros(band.shape[:2], bool)
        for ry, rx, m in shifted:
            a, b = max(0, ry), min(sel.shape[0], ry + m.shape[0])
            sel[a:b, rx:rx + m.shape[1]] |= m[a - ry:b - ry, :sel.shape[1] - rx]
        right, left = out[y0:y1, x0:], out[y0:y1, :half]
        np.copyto(right, drawn[:, :half], where=sel[:, :half, None])
        np.copyto(left, drawn[:, half:], where=sel[:, half:, None])
