"""JPEG codecs: decoders (bytes -> `Frame`) and encoders (pixels -> JPEG bytes), by name.

Decoders: `turbojpeg` (host, DCT-scaled decoding) and `dali` (nvJPEG into GPU memory, or DALI's
CPU-only mode). Every decoder takes `min_scale`, `max_pixels`, `device` ("cpu" or "mixed"),
`device_id`, `threads` and `batch`, and ignores what it has no use for.
Encoders: `turbojpeg` (host) and `nvimagecodec` (nvJPEG on the GPU, or its CPU-only backend).
Every encoder takes `device` ("cpu" or "cuda").
DALI and nvImageCodec are optional extras, imported only when such a backend is created.
"""
from __future__ import annotations

from engine.codecs.scaled import ScaledDecoder
from engine.codecs.turbo import TurboDecoder, TurboEncoder, cmyk_to_rgb, decode_cmyk, rgb_to_cmyk, turbojpeg
from engine.registry import Registry

__all__ = ["DECODERS", "ENCODERS", "create_decoder", "create_encoder", "ScaledDecoder", "TurboDecoder",
           "TurboEncoder", "turbojpeg", "decode_cmyk", "cmyk_to_rgb", "rgb_to_cmyk"]

DECODERS = Registry("decoder")
ENCODERS = Registry("encoder")


def _dali(**kwargs):
    from engine.codecs.dali import DaliDecoder              # lazy: DALI is an optional extra
    return DaliDecoder(**kwargs)


def _nvimagecodec(**kwargs):
    from engine.codecs.nvimgcodec import NvImageCodecEncoder    # lazy: an optional extra
    return NvImageCodecEncoder(**kwargs)


DECODERS.add("turbojpeg", TurboDecoder)
DECODERS.add("dali", _dali)
ENCODERS.add("turbojpeg", TurboEncoder)
ENCODERS.add("nvimagecodec", _nvimagecodec)


def create_decoder(name: str, **kwargs):
    """A decoder by name; ValueError listing the valid names for an unknown one."""
    return DECODERS.create(name, **kwargs)


def create_encoder(name: str, device: str = "cpu", **kwargs):
    """An encoder by name for `device` ("cpu" or "cuda"); ValueError listing the valid names
    for an unknown one."""
    return ENCODERS.create(name, device=device, **kwargs)
