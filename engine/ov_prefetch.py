"""A head start for OpenVINO in the `run` command (engine.runtimes.ov_passes).

Loading CenterFace's compiled model from OpenVINO's cache takes ~60 ms (more with both cores
busy), and the first image's coarse pass would wait for it. The start of a run (imports,
configuration, the sessions) keeps one core busy for ~0.2 s and leaves the other idle: so
`engine.cli` calls `start()` first thing, and a thread loads the model and settings the last
run of the same command used, on that idle core. "The same command" (`command_key`) is the
command line without its folders, with the configuration file by content: a benchmark that
alternates two settings through fresh temporary files finds each one's model. Without such a
run, the last record is used (`sladd models fetch` makes one). ov_passes records what it loads
(`record_file()`) and `take`s the loaded model when it is the same file with the same settings,
and loads its own otherwise. The thread only reads what this cache holds; the run is the same
with or without it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Optional

from engine.cachedirs import models_dir

__all__ = ["start", "wait", "take", "release", "record_file", "read_record", "recorded", "remember", "command_key",
           "numpy_interface"]

_THREAD: list[threading.Thread] = []
_LOADED: list = []                   # (model file, config, compiled model)
_KEY: list[str] = []                 # this process's command_key, once start() ran
_REMEMBERED: list[str] = []          # what this process recorded
_FOLDERS = {"-i", "--input", "-o", "--output", "-a", "--archive", "-l", "--log-dir"}
_CONFIG = {"-k", "--config"}
KEPT = 16                            # commands remembered


def record_file() -> Path:
    return models_dir() / "derived" / "openvino" / "last.json"


def command_key(argv: list[str]) -> str:
    """What decides a run's models, from its arguments: every argument but the folders, the
    configuration file (-k) by its content."""
    parts, it = [], iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in _FOLDERS:
            if not eq:
                next(it, None)
            continue
        if name in _CONFIG:
            value = value if eq else next(it, "")
            try:
                value = hashlib.sha256(Path(value).read_bytes()).hexdigest()
            except OSError:
                pass
            parts.append(f"config={value}")
            continue
        parts.append(arg)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def read_record() -> dict:
    """{"runs": {command key: {"model", "config"}}, "last": key}; {} where there is none."""
    try:
        rec = json.loads(record_file().read_text())
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) and isinstance(rec.get("runs"), dict) else {}


def _entry(rec: dict) -> dict:
    runs = rec.get("runs", {})
    hit = runs.get(_KEY[0]) if _KEY else None
    hit = hit if hit is not None else runs.get(rec.get("last"))
    return hit if isinstance(hit, dict) else {}


def recorded() -> dict:
    """The entry for this process's command ({"model", "config"}), else the last run's, else {}."""
    return _entry(read_record())


def remember(model: str, config: dict) -> None:
    """Record that this command compiled `model` (a graph file) with `config` (atomic; best
    effort; once per process)."""
    if _REMEMBERED:
        return
    _REMEMBERED.append(model)
    rec = read_record()
    key = _KEY[0] if _KEY else "-"
    entry = {"model": model, "config": config}
    if rec.get("runs", {}).get(key) == entry and rec.get("last") == key:
        return
    runs = {k: v for k, v in rec.get("runs", {}).items() if k != key}
    runs[key] = entry
    runs = dict(list(runs.items())[-KEPT:])
    f = record_file()
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f".{f.name}.{os.getpid()}.{threading.get_ident()}.partial")
        tmp.write_text(json.dumps({"runs": runs, "last": key}))
        os.replace(tmp, f)
    except OSError:
        pass


def start() -> None:
    """Load, in a background thread, the compiled model recorded for this command (nothing where
    there is none, or `SLADD_OPENVINO_PREFETCH=0`)."""
    if _THREAD or os.environ.get("SLADD_OPENVINO_PREFETCH", "1") == "0":
        return
    if not _KEY:
        _KEY.append(command_key(sys.argv[1:]))
    try:
        rec = recorded()
        model, config = str(rec["model"]), dict(rec["config"])
    except (KeyError, TypeError, ValueError):
        return
    if not os.path.isfile(model):
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
            core.set_property({"CACHE_DIR": str(record_file().parent)})
            _LOADED.append((model, config, core.compile_model(model, "CPU", config)))
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


def take(model: str, config: dict) -> Optional[object]:
    """The prefetched compiled model if it is `model` compiled with `config` (handed out once),
    else None."""
    wait()
    for k, (x, c, compiled) in enumerate(_LOADED):
        if x == model and c == config:
            del _LOADED[k]
            return compiled
    return None


def release() -> None:
    """Drop what was loaded ahead and not taken (its memory and stream threads): called once the
    run's models are built (engine.worker.build)."""
    wait()
    _LOADED.clear()
