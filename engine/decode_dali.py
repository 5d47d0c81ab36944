"""NVIDIA DALI decoding. On a GPU host the pipeline decodes on the device (`mixed`, nvJPEG);
without one, DALI's CPU-only mode (`device_id=None`, `cpu` operators) runs the same pipeline
code, which is how CI exercises it. Headers, EXIF orientation, quality and metadata segments
are handled exactly as on the TurboJPEG path (engine.decode)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from engine.decode import TurboDecoder
from engine.types import ImageError

__all__ = ["DaliDecoder", "dali_module"]


def dali_module():
    try:
        import nvidia.dali  # noqa: F401
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def
    except ImportError as exc:
        raise ImportError("NVIDIA DALI is missing: pip install 'sladd[dali]' (CPU-only works without a GPU)") from exc
    return fn, types, pipeline_def


class DaliDecoder(TurboDecoder):
    """One image per call through a synchronous DALI pipeline (one pipeline per decode thread).

    device "cpu": `device_id=None`, host output; "mixed": nvJPEG on GPU `device_id`, returned
    to the host here (the device-resident path belongs to the GPU engine). No DCT scaling:
    frames are always full resolution.
    """

    name = "dali"

    def __init__(self, *, min_scale: float = 1.0, max_pixels: int = 200_000_000, device: str = "cpu",
                 device_id: int | None = None, threads: int = 1):
        super().__init__(min_scale=1.0, max_pixels=max_pixels)
        if device not in ("cpu", "mixed"):
            raise ValueError(f"DALI decoder device must be cpu or mixed, got {device!r}")
        self.device, self.device_id, self.threads = device, (device_id if device == "mixed" else None), threads
        self._pipe = None

    def _build(self):
        fn, types, pipeline_def = dali_module()

        @pipeline_def(batch_size=1, num_threads=self.threads, device_id=self.device_id,
                      exec_pipelined=False, exec_async=False, prefetch_queue_depth=1)
        def pipe():
            jpegs = fn.external_source(name="jpegs", dtype=types.UINT8, no_copy=False)
            # EXIF orientation is applied by the engine, as on the TurboJPEG path.
            return fn.decoders.image(jpegs, device=self.device, output_type=types.RGB, adjust_orientation=False)

        p = pipe()
        p.build()
        return p

    def decode_pixels(self, data: bytes, scale: Fraction = Fraction(1)) -> np.ndarray:
        if self._pipe is None:
            self._pipe = self._build()
        try:
            self._pipe.feed_input("jpegs", [np.frombuffer(data, dtype=np.uint8)])
            (out,) = self._pipe.run()
        except RuntimeError as exc:
            self._pipe = None                        # DALI invalidates a pipeline after an error
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ImageError(f"DALI decoder: {first}") from None
        if hasattr(out, "as_cpu"):
            out = out.as_cpu()
        return np.array(out.at(0))
