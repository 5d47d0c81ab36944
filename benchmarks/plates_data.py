"""Photographs with licence plates, and plate-free ones with signs and text, that registry
packages ship; fetched once into `.cache/plates` (nothing is committed).

- fast-alpr 0.4.0 (PyPI sdist, MIT): assets/test_image.png, a parked car with a Czech plate.
- open-image-models 0.6.0 (PyPI sdist, MIT): test/assets/car_image.webp, a car's rear plate.
- fast-plate-ocr 1.1.0 (PyPI sdist, MIT): two real plate crops (Argentina), no vehicle around them.
- opencv-doc 4.6.0 (Debian): licenseplate_motion.jpg (a motion-blurred rear plate) and the
  scene-text photographs examples/text/scenetext01-06.jpg (street signs: false-positive set).
- darknet (Debian): data/*.jpg, photographs without readable plates (false-positive set).
- ultralytics 8.4.190 (PyPI wheel, AGPL-3.0): assets/bus.jpg, zidane.jpg (false-positive set).
"""
from __future__ import annotations

from pathlib import Path

from engine.models.plate_samples import NO_PLATE_PHOTOS, PLATE_CROPS, PLATE_PHOTOS, fetch_samples

__all__ = ["DATA", "PLATE_PHOTOS", "PLATE_CROPS", "NO_PLATE_PHOTOS", "fetch_data"]

DATA = Path(__file__).resolve().parent.parent / ".cache" / "plates"


def fetch_data(data: Path = DATA) -> Path:
    """Download what is missing into `data` (the files and boxes are engine.models.plate_samples',
    the same the INT8 plate model is calibrated and checked on); returns `data`."""
    return fetch_samples(data)
