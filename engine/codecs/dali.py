"""NVIDIA DALI decoding.

On a GPU host the pipeline decodes with nvJPEG (`mixed`: Huffman decoding on the CPU threads,
the rest on the GPU, the hardware JPEG decoder where the GPU has one) and the frames stay in
device memory: each decoded image is handed to CuPy through DLPack and copied once, device to
device, into a CuPy-owned buffer, and the copies are waited for before the next run (DALI's
synchronous executor reuses its output buffers then; see `DaliDecoder._copy_to_cupy`). Without
a GPU, DALI's CPU-only mode (`device_id=None`, `cpu` operators) runs the same pipeline code,
which is how CI exercises it.

Headers, EXIF orientation, quality, subsampling and metadata segments are handled exactly as
on the TurboJPEG path (engine.codecs.turbo): grayscale JPEGs come out as RGB, images above
`max_image_pixels` and 12-bit files are refused before decoding, and the orientation is applied
afterwards (as views, on the host or on the device). CMYK/YCCK files, rare on a survey camera,
are decoded by TurboJPEG on the host (as engine.codecs.turbo converts them to RGB) and copied to the
device on the `mixed` path: nvJPEG's CMYK handling is not the one the writer relies on.
"""
from __future__ import annotations

import time
from fractions import Fraction

import numpy as np

from engine.codecs.turbo import TurboDecoder
from engine.jpeg import apply_orientation, parse_jpeg
from engine.types import Frame, ImageError, Job

__all__ = ["DaliDecoder", "dali_module", "require_decoder_arguments", "DALI_DEVICES", "DALI_MIN"]

DALI_DEVICES = ("cpu", "mixed")
DALI_MIN = "2.0"                                     # the floor of the dali and gpu extras
DECODER_ARGUMENTS = ("adjust_orientation",)


def dali_module():
    """(fn, types, pipeline_def) of an installed DALI whose `decoders.image` takes
    `adjust_orientation` (DALI 2.x; earlier releases' default decoder had no such argument).
    ImportError naming the extra otherwise."""
    try:
        import nvidia.dali
        import nvidia.dali.backend as backend
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import pipeline_def
    except ImportError as exc:
        raise ImportError("NVIDIA DALI is missing: pip install 'sladd[dali]' (CPU-only works without a GPU)") from exc
    require_decoder_arguments(backend, getattr(nvidia.dali, "__version__", "unknown"))
    return fn, types, pipeline_def


def require_decoder_arguments(backend, version: str) -> None:
    """ImportError unless DALI's `decoders.image` has the arguments the pipeline passes. The
    engine applies the EXIF orientation itself (as views, as on the TurboJPEG path), so the
    decoder must be told not to: a frame turned twice would not match the file it is written to."""
    schema = backend.GetSchema("decoders__Image")
    missing = [a for a in DECODER_ARGUMENTS if not schema.HasArgument(a)]
    if missing:
        raise ImportError(f"NVIDIA DALI {version} is too old: its decoders.image has no {', '.join(missing)} "
                          f"argument; sladd needs DALI >= {DALI_MIN}: pip install -U 'sladd[dali]'")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class DaliDecoder(TurboDecoder):
    """Decodes one image or a batch per call through a synchronous DALI pipeline (one pipeline
    per decode thread).

    device "cpu": CPU-only mode (`device_id=None`), host NumPy frames.
    device "mixed": nvJPEG on GPU `device_id`, device (CuPy) frames.
    `batch`: the most images one pipeline run decodes. No DCT scaling: frames are always at
    full resolution.
    """

    name = "dali"
    scalable = False

    def __init__(self, *, min_scale: float = 1.0, max_pixels: int = 200_000_000, device: str = "cpu",
                 device_id: int | None = 0, threads: int = 2, batch: int = 8):
        super().__init__(min_scale=1.0, max_pixels=max_pixels)
        if device not in DALI_DEVICES:
            raise ValueError(f"DALI decoder device must be one of {', '.join(DALI_DEVICES)}, got {device!r}")
        self.device, self.threads, self.batch = device, threads, max(1, int(batch))
        self.device_id = (device_id or 0) if device == "mixed" else None
        self._pipe = None
        self._cp = None
        if device == "mixed":
            from engine.device import cupy_module

            self._cp = cupy_module()           # a clear error without CuPy or a usable GPU

    def _build(self):
        fn, types, pipeline_def = dali_module()

        # The synchronous executor, named explicitly: its outputs are reused by the next run
        # (see _copy_to_cupy), which a future default must not change unnoticed.
        @pipeline_def(batch_size=self.batch, num_threads=self.threads, device_id=self.device_id,
                      exec_pipelined=False, exec_async=False, exec_dynamic=False, prefetch_queue_depth=1)
        def pipe():
            jpegs = fn.external_source(name="jpegs", dtype=types.UINT8, no_copy=False)
            # EXIF orientation is applied by the engine (as views), as on the TurboJPEG path.
            return fn.decoders.image(jpegs, device=self.device, output_type=types.RGB, adjust_orientation=False)

        p = pipe()
        p.build()
        return p

    def _run(self, datas: list[bytes]) -> list:
        """Decoded RGB images in stored orientation: NumPy (cpu) or CuPy arrays owned by CuPy
        (mixed), complete when returned. A DALI error becomes ImageError (the pipeline is rebuilt
        on the next call)."""
        if self._pipe is None:
            self._pipe = self._build()
        try:
            self._pipe.feed_input("jpegs", [np.frombuffer(d, dtype=np.uint8) for d in datas])
            (out,) = self._pipe.run()
            if self._cp is None:
                return [np.array(out.at(i)) for i in range(len(datas))]   # np.array copies
            return self._copy_to_cupy(out, len(datas))
        except RuntimeError as exc:
            self._pipe = None                        # DALI invalidates a pipeline after an error
            raise ImageError(f"DALI decoder: {_first_line(exc)}") from None

    def _copy_to_cupy(self, out, n: int) -> list:
        """Device-to-device copies of DALI's outputs into CuPy-owned arrays, finished on return.

        Synchronise after the copies, rather than DALI's dynamic executor and its output
        lifetimes: this pipeline runs DALI's synchronous (legacy) executor, whose run() returns
        host-synchronous outputs but releases them on the next run() and may decode the next
        batch into the same buffers, on DALI's own non-blocking streams, which do not wait for
        CuPy's. The copies are only queued on CuPy's current stream, so without the wait a frame
        could be overwritten by the next batch before its copy ran. One wait per batch costs
        little next to the decode, which the host already waited for."""
        cp = self._cp
        stream = cp.cuda.get_current_stream()
        # from_dlpack wraps DALI's buffer (no copy; DALI orders `stream` after its output).
        frames = [cp.array(cp.from_dlpack(out[i]), copy=True) for i in range(n)]
        stream.synchronize()
        return frames

    def decode_pixels(self, data: bytes, scale: Fraction = Fraction(1), info=None):
        info = info if info is not None else parse_jpeg(data)
        if info.cmyk:
            return self._host_cmyk(data, info)
        return self._run([data])[0]

    def _host_cmyk(self, data: bytes, info):
        """RGB of a CMYK/YCCK file through TurboJPEG; on the device for the `mixed` path."""
        rgb = TurboDecoder.decode_pixels(self, data, Fraction(1), info)
        return rgb if self._cp is None else self._cp.asarray(rgb)

    def decode_batch(self, items: list[tuple[Job, bytes]]) -> list:
        """Frames for `(job, data)` pairs, in order; an image that cannot be decoded gives an
        ImageError in its place and never fails the others (a failed DALI batch is decoded
        again one image at a time to find which)."""
        t0 = time.perf_counter()
        out: list = [None] * len(items)
        heads = {}
        for k, (_, data) in enumerate(items):
            try:
                heads[k] = self.header(data)
            except ImageError as exc:
                out[k] = exc
        for k in [k for k, h in heads.items() if h["info"].cmyk]:
            job, data = items[k]
            head = heads.pop(k)
            try:
                px = apply_orientation(self._host_cmyk(data, head["info"]), head["orientation"])
                out[k] = self.frame(job, data, head, px, 1.0, 0.0)
            except ImageError as exc:
                out[k] = exc
        ok = list(heads)
        for c in range(0, len(ok), self.batch):
            chunk = ok[c:c + self.batch]
            try:
                pixels = self._run([items[k][1] for k in chunk])
            except ImageError:
                pixels = []
                for k in chunk:
                    try:
                        pixels.append(self._run([items[k][1]])[0])
                    except ImageError as exc:
                        pixels.append(exc)
            share = (time.perf_counter() - t0) / max(1, len(items))
            for k, px in zip(chunk, pixels):
                if isinstance(px, ImageError):
                    out[k] = px
                    continue
                job, data = items[k]
                px = apply_orientation(px, heads[k]["orientation"])
                out[k] = self.frame(job, data, heads[k], px, 1.0, share)
        return out

    def full_pixels(self, frame: Frame):
        return frame.pixels                     # always decoded at full resolution
