"""Where sladd keeps what it makes once and reuses (models, derived graphs, compiled models,
TensorRT plans): set by environment variables only, so that a process can find them before it
has read its configuration (engine.ov_prefetch). Standard library only."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root", "models_dir", "plans_dir"]


def cache_root() -> Path:
    """`$SLADD_CACHE_DIR`, else `$XDG_CACHE_HOME/sladd`, else `~/.cache/sladd`."""
    env = os.environ.get("SLADD_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sladd"


def models_dir() -> Path:
    """`$SLADD_MODELS_DIR`, else `<cache root>/models` (see cache_root)."""
    env = os.environ.get("SLADD_MODELS_DIR")
    return Path(env) if env else cache_root() / "models"


def plans_dir() -> Path:
    """Where TensorRT plans are cached: `$SLADD_PLANS_DIR`, else `<cache root>/plans`."""
    env = os.environ.get("SLADD_PLANS_DIR")
    return Path(env) if env else cache_root() / "plans"
