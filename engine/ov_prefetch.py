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
and loads its own otherwise; the run's results do not depend on what was loaded ahead.

The thread also makes the infer requests the detect threads will use (one per stream: a request
made while another inference of the model runs waits for it, ~0.1 s at a run's start) and runs
the first input image's candidate pass (engine.first_pass), or, where that cannot be guessed, an
inference of zeros at the input shape the command's first large pass had: OpenVINO prepares its
kernels for each new input shape in the first inference at that shape (~60 ms for 1248x1024,
measured; shared by the requests). Done on the idle core, the first images' passes start
prepared. The first image is read, decoded and shrunk in a thread of its own beside the
compilation (after it, the first pass started ~0.1 s later), and the run's decoder, reaching
that file meanwhile, waits for that decode and takes it (engine.codecs.turbo.decoding_ahead)
instead of decoding it a second time beside it. A run that does not use the model (`release(drop=True)`) stops the thread at its next
step and drops what it made.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Optional

from engine.cachedirs import models_dir, read_note, write_note

__all__ = ["start", "wait", "take", "release", "record_file", "read_record", "recorded", "remember", "command_key",
           "numpy_interface", "made_by"]

_THREAD: list[threading.Thread] = []
_LOADED: list = []                   # (model file, config, compiled model, infer requests)
_KEY: list[str] = []                 # this process's command_key, once start() ran
_REMEMBERED: list = []               # what this process recorded: its model, then "shape", "view"
_RECORD_LOCK = threading.Lock()      # one read-modify-write of the record at a time (detect threads)
_UNSET = object()
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
    """{"runs": {command key: {"model", "config"[, "shape", "view"]}}, "last": key}; {} where there
    is none."""
    rec = read_note(record_file())
    return rec if isinstance(rec.get("runs"), dict) else {}


def _entry(rec: dict) -> dict:
    runs = rec.get("runs", {})
    hit = runs.get(_KEY[0]) if _KEY else None
    hit = hit if hit is not None else runs.get(rec.get("last"))
    return hit if isinstance(hit, dict) else {}


def recorded() -> dict:
    """The entry for this process's command ({"model", "config"[, "shape", "view"]}), else the
    last run's, else {}."""
    return _entry(read_record())


def remember(model: str, config: dict, shape: Optional[tuple] = None, view=_UNSET) -> None:
    """Record that this command compiled `model` (a graph file) with `config`; with `shape`, the
    input shape of its first large pass; with `view`, how a frame becomes that input ({"factor":
    integer shrink, "multiple": padding}, or None: no frame-sized pass to guess). Atomic, best
    effort. A process records its first model, then each of shape and view once; what is not
    given stays as recorded for the model."""
    with _RECORD_LOCK:
        _remember(model, config, shape, view)


def _remember(model: str, config: dict, shape, view) -> None:
    if _REMEMBERED and _REMEMBERED[0] != model:
        return
    fresh = {}
    if shape is not None:
        fresh["shape"] = [int(d) for d in shape]
    if view is not _UNSET:
        fresh["view"] = dict(view) if view is not None else None
    fresh = {k: v for k, v in fresh.items() if k not in _REMEMBERED}
    if _REMEMBERED and not fresh:
        return
    if not _REMEMBERED:
        _REMEMBERED.append(model)
    _REMEMBERED.extend(fresh)
    rec = read_record()
    key = _KEY[0] if _KEY else "-"
    old = rec.get("runs", {}).get(key) or {}
    entry = {"model": model, "config": config}
    if {k: old.get(k) for k in entry} == entry:
        entry.update({k: old[k] for k in ("shape", "view") if k in old})    # the same model: kept
    entry.update(fresh)
    if old == entry and rec.get("last") == key:
        return
    runs = {k: v for k, v in rec.get("runs", {}).items() if k != key}
    runs[key] = entry
    runs = dict(list(runs.items())[-KEPT:])
    write_note(record_file(), {"runs": runs, "last": key})


def start() -> None:
    """Load, in a background thread, the compiled model recorded for this command (nothing where
    there is none, or `SLADD_OPENVINO_PREFETCH=0`)."""
    if _THREAD or os.environ.get("SLADD_OPENVINO_PREFETCH", "1") == "0":
        return
    if not _KEY:
        _KEY.append(command_key(sys.argv[1:]))
    try:
        rec = recorded()
        model, config, shape, view = str(rec["model"]), dict(rec["config"]), rec.get("shape"), rec.get("view")
    except (KeyError, TypeError, ValueError):
        return
    if not os.path.isfile(model):
        return
    # Imported here, not in the thread: an import is Python under the GIL, and one in a thread
    # beside this one's imports took 0.35 s instead of 25 ms (each waits out the other's
    # switch interval). The loading itself runs in C++ without the GIL.
    try:
        import numpy as np

        from engine.runtimes.ov_import import openvino_module as _openvino

        ov = _openvino()
        numpy_interface(ov)
        core = ov.Core()
    except Exception:  # noqa: BLE001 - no OpenVINO: nothing to load ahead
        return

    prepared: list[bool] = []
    imported = threading.Event()
    argv = list(sys.argv[1:])

    first: list = []

    def first_input():
        """The first image's input (engine.first_pass), made beside the compilation: decoding
        it after the compilation put ~0.1 s more before the first pass."""
        try:
            if imported.wait(5.0) and prepared and prepared[0] and not cancel.is_set():
                from engine import first_pass

                first.append(first_pass.input_for(first_pass.first_image(argv), shape, view))
        except Exception:  # noqa: BLE001 - no guess: zeros warm the shape up
            pass
        finally:
            if prepared and prepared[0]:
                from engine.codecs.turbo import decoding_ahead, drop_decoded

                if cancel.is_set():
                    drop_decoded()               # dropped by release(drop=True) while it decoded
                decoding_ahead(False)

    def load():
        maker = threading.Thread(target=first_input, name="sladd-first-image", daemon=True)
        maker.start()
        try:
            core.set_property({"CACHE_DIR": str(record_file().parent)})
            compiled = core.compile_model(model, "CPU", config)
        except Exception:  # noqa: BLE001 - only the head start is lost: the run compiles what it needs
            return
        requests = []
        try:
            requests = [compiled.create_infer_request() for _ in range(min(8, max(1, int(config["NUM_STREAMS"]))))]
            # The first image's own pass where it can be guessed (engine.first_pass), else zeros
            # at the recorded shape; none once the run has said it will not use the model.
            maker.join()
            blob = first[0] if first and not cancel.is_set() else None
            warm = list(blob.shape) if blob is not None else shape
            if _shape_ok(warm) and not cancel.is_set():
                res = requests[0].infer({0: blob if blob is not None else np.zeros(warm, np.float32)},
                                        share_inputs=True)
                if blob is not None and not cancel.is_set():
                    first_pass.keep(blob, {o.get_any_name(): np.array(res[o]) for o in compiled.outputs},
                                    made_by(model, config))
        except Exception:  # noqa: BLE001 - the run makes its own requests and passes
            pass
        _LOADED.append((model, config, compiled, requests))

    cancel = threading.Event()
    # Not a daemon: OpenVINO interrupted mid-compilation by the interpreter's exit aborts the process.
    th = threading.Thread(target=load, name="sladd-openvino-prefetch")
    th.cancel = cancel
    _THREAD.append(th)
    th.start()
    try:
        from engine import first_pass

        prepared.append(first_pass.prepare())            # its imports here, while the model loads
        if prepared[0]:
            from engine.codecs.turbo import decoding_ahead

            decoding_ahead(True)                         # the run's decoder waits for that decode
    except Exception:  # noqa: BLE001 - no first pass ahead
        prepared[:] = [False]
    finally:
        imported.set()


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


def _shape_ok(shape) -> bool:
    """A recorded input shape worth a warm-up inference: (1, 3, h, w), at most 32 MP."""
    return (isinstance(shape, list) and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape)
            and shape[:2] == [1, 3] and shape[2] * shape[3] <= 32 << 20)


def take(model: str, config: dict) -> Optional[tuple]:
    """(compiled model, its infer requests) prefetched if it is `model` compiled with `config`
    (handed out once), else None."""
    wait()
    for k, (x, c, compiled, requests) in enumerate(_LOADED):
        if x == model and c == config:
            del _LOADED[k]
            return compiled, requests
    return None


def made_by(model: str, config: dict) -> tuple:
    """What identifies the compiled model a pass ran on: its graph file and settings."""
    return str(model), json.dumps(config, sort_keys=True)


def release(drop: bool = False) -> None:
    """Drop what was loaded ahead and not taken (its memory and stream threads): called once the
    run's models are built (engine.worker.build). `drop`: the run will not run these passes at
    all (another runtime, OpenVINO not chosen): the thread stops at its next step, and the first
    image's pass and decoded pixels made ahead are dropped too."""
    if drop and _THREAD:
        getattr(_THREAD[0], "cancel", threading.Event()).set()
    wait()
    _LOADED.clear()
    if drop:
        from engine import first_pass
        from engine.codecs.turbo import drop_decoded

        first_pass.clear()
        drop_decoded()
