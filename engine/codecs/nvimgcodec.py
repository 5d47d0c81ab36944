"""JPEG encoding with NVIDIA nvImageCodec.

On a GPU host (`device="cuda"`) device frames are encoded by nvJPEG where they are, so the
anonymised image never comes back to the host as pixels: only the JPEG bytes do. Without a
GPU its CPU-only backend (libjpeg-turbo inside nvImageCodec) runs the same code, which is how
CI checks quality, subsampling and grayscale handling against the TurboJPEG encoder.

The quality is libjpeg's 1..100 scale (the same quantisation tables as TurboJPEG at the same
value), the chroma subsampling is the input's (TurboJPEG TJSAMP_* values), and grayscale
inputs are written as one-component JPEGs, as on the TurboJPEG path.
"""
from __future__ import annotations

from kernels import get_array_module, rgb_to_gray, to_host

__all__ = ["NvImageCodecEncoder", "nvimgcodec_module"]

# TurboJPEG's TJSAMP_* constants -> nvImageCodec ChromaSubsampling names.
_CSS = {0: "CSS_444", 1: "CSS_422", 2: "CSS_420", 3: "CSS_GRAY", 4: "CSS_440", 5: "CSS_411"}
TJSAMP_GRAY = 3


def nvimgcodec_module():
    from engine.optional import require
    return require("nvidia.nvimgcodec", "nvImageCodec is missing: pip install 'sladd[gpu]' (or nvidia-nvimgcodec-cu12)")


class NvImageCodecEncoder:
    """`encode(pixels, quality, subsampling) -> bytes` for host (NumPy) or device (CuPy) RGB
    frames. device "cuda": nvJPEG on the current GPU; "cpu": nvImageCodec's CPU-only backend."""

    name = "nvimagecodec"

    def __init__(self, *, device: str = "cuda"):
        nv = self.nv = nvimgcodec_module()
        if device not in ("cuda", "cpu"):
            raise ValueError(f"nvImageCodec encoder device must be cuda or cpu, got {device!r}")
        self.device = device
        self.accepts_device_arrays = device == "cuda"
        try:
            if device == "cpu":
                self.encoder = nv.Encoder(device_id=nv.NVIMGCODEC_DEVICE_CPU_ONLY, backends=[nv.Backend(nv.CPU_ONLY)])
            else:
                self.encoder = nv.Encoder()
        except RuntimeError as exc:
            raise RuntimeError(f"nvImageCodec could not start an encoder on {device}: {exc}") from None

    def encode(self, pixels, quality: int, subsampling: int) -> bytes:
        xp = get_array_module(pixels)
        if self.device == "cpu" and xp.__name__ != "numpy":
            pixels = to_host(pixels)
            xp = get_array_module(pixels)
        if subsampling == TJSAMP_GRAY:
            # A one-component JPEG, as TurboJPEG writes for TJSAMP_GRAY (nvImageCodec ignores
            # CSS_GRAY for a three-channel image).
            pixels = rgb_to_gray(pixels)[..., None]
        pixels = xp.ascontiguousarray(pixels)
        nv = self.nv
        params = nv.EncodeParams(quality_type=nv.QualityType.QUALITY, quality_value=float(quality),
                                 chroma_subsampling=getattr(nv.ChromaSubsampling, _CSS.get(subsampling, "CSS_420")))
        if xp.__name__ == "numpy":
            out = self.encoder.encode(pixels, "jpeg", params=params)
        else:
            # Encoded on CuPy's current stream: the masking kernels queued there finish first.
            out = self.encoder.encode(pixels, "jpeg", params=params, cuda_stream=xp.cuda.get_current_stream().ptr)
        if out is None:
            raise RuntimeError("nvImageCodec could not encode the image")
        return bytes(out)
