"""Where sladd keeps what it makes once and reuses (models, derived graphs, compiled models,
TensorRT plans): set by environment variables only, so that a process can find them before it
has read its configuration (engine.ov_prefetch). And its small JSON notes there (the runtime
choice, the last compiled model, the model files' SHA-256): read as {} when absent or damaged,
written whole or not at all, best effort. Standard library only."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

__all__ = ["cache_root", "models_dir", "plans_dir", "read_note", "write_note"]


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


def read_note(path: Path) -> dict:
    """The JSON object in `path`; {} where there is none or it is not one (a damaged note only
    costs what it saved)."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_note(path: Path, data: dict) -> bool:
    """Replace `path` with `data` as JSON through a temporary name of this process and thread
    (two writers never share one: a reader sees one whole note or the other); False where it
    cannot be written. Not synced: a note lost in a crash is made again."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
        return True
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        return False
