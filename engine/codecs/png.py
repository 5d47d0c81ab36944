"""PNG inputs (`output.extensions` with ".png"): decoded with Pillow, written back as PNG.

A PNG is always written from its pixels, never copied: its ancillary chunks (text, EXIF,
previews in iTXt/zTXt) could hide a picture, and PNG is lossless anyway. Only the ICC profile
(iCCP) is kept; the pixels are RGB (an alpha channel is dropped: masks are drawn on what is
visible, and a transparent face would still be a face)."""
from __future__ import annotations

import io
import time

import numpy as np

from engine.types import Frame, ImageError, Job

__all__ = ["PNG_MAGIC", "is_png", "decode_png", "encode_png"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(data: bytes) -> bool:
    return data[:8] == PNG_MAGIC


def decode_png(job: Job, data: bytes, max_pixels: int) -> Frame:
    from PIL import Image

    t0 = time.perf_counter()
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"image is {w}x{h} = {w * h} pixels, above the limit engine.max_image_pixels="
                                 f"{max_pixels}; raise it to process this image")
            icc = im.info.get("icc_profile")
            im.load()
            pixels = np.array(im.convert("RGB"))          # writable: masks are drawn in place
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"PNG decoder: {exc}") from None
    return Frame(job=job, data=data, pixels=pixels, scale=1.0, full_size=(h, w), orientation=1, segments=[],
                 quality=None, subsampling=0, timings={"decode": time.perf_counter() - t0}, exif=None, icc=icc)


def encode_png(pixels: np.ndarray, icc=None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    kw = {"icc_profile": icc} if icc else {}
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, "PNG", compress_level=6, **kw)
    return buf.getvalue()
