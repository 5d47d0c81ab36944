"""A head start for OpenVINO in the `run` command (engine.runtimes.ov_passes).

Loading CenterFace's compiled large pass takes ~0.1 s (~0.2 s with both cores busy), and the
first image's coarse pass would wait for it. The start of a run (imports, configuration, the
sessions) keeps one core busy for ~0.2 s and leaves the other idle: so `engine.cli` calls
`start()` first thing, and a thread loads the large pass the last run in this models cache
compiled (`record_file()`, written by ov_passes), on that idle core. ov_passes then `take`s it when it is the same file compiled with the same settings, and
compiles its own otherwise. The thread only reads what this cache holds; the run is the same
with or without it.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Optional

from engine.cachedirs import models_dir

__all__ = ["start", "wait", "take", "record_file", "numpy_interface"]

_THREAD: list[threading.Thread] = []
_LOADED: list = []                   # (xml, config, compiled model)


def record_file() -> Path:
    return models_dir() / "derived" / "openvino" / "last.json"


def start() -> None:
    """Load, in a background thread, the large pass named by `record_file()` (nothing where there
    is none, or `SLADD_OPENVINO_PREFETCH=0`)."""
    if _THREAD or os.environ.get("SLADD_OPENVINO_PREFETCH", "1") == "0":
        return
    try:
        rec = json.loads(record_file().read_text())
        xml, config = str(rec["xml"]), dict(rec["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not os.path.isfile(xml):
        return
    # Imported here, not in the thread: an import is Python under the GIL, and one in a thread
    # beside this one's imports took 0.35 s instead of 25 ms (each waits out the other's
    # switch interval). The loading itself runs in C++ without the GIL.
    try:
        from engine.runtimes.ov_import import openvino_module as _openvino

        ov = _openvino()
        numpy_interface(ov)
        core = ov.Core()
    except Exception:  # noqa: BLE001 - no OpenVINO: nothing to load ahead
        return

    def load():
        try:
            core.set_property({"CACHE_DIR": os.path.dirname(xml)})
            _LOADED.append((xml, config, core.compile_model(xml, "CPU", config)))
        except Exception:  # noqa: BLE001 - only the head start is lost: the run compiles what it needs
            pass

    # Not a daemon: OpenVINO interrupted mid-compilation by the interpreter's exit aborts the process.
    _THREAD.append(threading.Thread(target=load, name="sladd-openvino-prefetch"))
    _THREAD[0].start()


def numpy_interface(ov) -> None:
    """Set up OpenVINO's NumPy interface in the calling thread. pybind11 does it once per process
    inside `std::call_once`, and two threads reaching it together deadlocked (both detect
    threads' first inference waited forever): so it is done before any other thread uses
    OpenVINO (here, and by engine.runtimes.ov_passes)."""
    import numpy as np

    ov.Tensor(np.zeros(1, np.float32)).data


def wait() -> None:
    """Until the prefetch (if any) has ended."""
    if _THREAD:
        _THREAD[0].join()


def take(xml: str, config: dict) -> Optional[object]:
    """The prefetched compiled model if it is `xml` compiled with `config`, else None."""
    wait()
    for x, c, compiled in _LOADED:
        if x == xml and c == config:
            return compiled
    return None
