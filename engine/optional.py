"""Optional dependencies: imported when first needed, with an error that says how to get them."""
from __future__ import annotations

import importlib

__all__ = ["require"]


def require(module: str, missing: str):
    """`importlib.import_module(module)`, or ImportError(`missing`) naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(missing) from exc
