"""`sladd demo`: a small road-style input tree built from photographs that installed packages
ship (matplotlib's sample portrait of Grace Hopper), deterministic for a given seed."""
from __future__ import annotations

import importlib.util
import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["sample_portrait", "road_scene", "build_demo_tree", "jpeg_with_exif"]

# A minimal AdditionalInfoNorway2 vendor XML (docs/samples.md C4), stored with its UTF-8 BOM.
_REFLINK_XML = ("\ufeff<?xml version=\"1.0\" encoding=\"utf-8\"?><AdditionalInfoNorway2><RoadInfo>"
                "<ReflinkId>1234567</ReflinkId><ReflinkPosition>0.5</ReflinkPosition>"
                "<RoadIdent>EV6 S1D1 m1234</RoadIdent></RoadInfo><GnssInfo><Latitude>63.4305</Latitude>"
                "<Longitude>10.3951</Longitude><Altitude>60.5</Altitude></GnssInfo></AdditionalInfoNorway2>")


# A planar camera's ImageProperties (tag 40055): acquisition path, base line, road values.
_PROPS_XML = ("\ufeff<?xml version=\"1.0\" encoding=\"utf-8\"?><ImageProperties Date=\"2022-06-01T12:00:00\">"
              "<ImageName>C:\\DATA\\ViaPPS\\2022_06_01\\EV00006\\S1\\D1\\F1_2022_06_01\\{name}</ImageName>"
              "<BaseLinePosition>1306</BaseLinePosition><BaseLineTickInterval>227</BaseLineTickInterval>"
              "<BaseLineTickOffset>0</BaseLineTickOffset><TiltPoint>1341</TiltPoint><Tilt>0</Tilt>"
              "<VegComValues><VCCountyNo>50</VCCountyNo><VCMeter>{meter}</VCMeter></VegComValues>"
              "<Surroundings><Driver>Demo Driver</Driver><CarID>DEMO1</CarID></Surroundings></ImageProperties>")


def sample_portrait() -> Path:
    """Path of matplotlib's `grace_hopper.jpg`, located without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the demo needs matplotlib's sample photographs: pip install 'sladd[demo]'")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        if p.is_file():
            return p
    raise RuntimeError("matplotlib is installed without its sample data (mpl-data/sample_data/grace_hopper.jpg)")


def road_scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A textured road-survey-like background: sky, verges, asphalt, lane markings, noise."""
    rng = np.random.default_rng(seed)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    img = np.empty((h, w, 3), np.float32)
    horizon = 0.42
    sky = yy < horizon
    img[..., 0] = np.where(sky, 120 + 80 * yy, 70)
    img[..., 1] = np.where(sky, 160 + 60 * yy, 110)
    img[..., 2] = np.where(sky, 220 - 30 * yy, 60)
    depth = np.clip((yy - horizon) / (1 - horizon), 0, 1)
    road = (~sky) & (np.abs(xx) < 0.05 + 0.9 * depth)
    img[road] = (95, 95, 100)
    lane = (~sky) & (np.abs(np.abs(xx) - 0.45 * depth) < 0.004 + 0.01 * depth)
    img[lane] = (230, 230, 220)
    noise = rng.normal(0, 9, (h // 4 + 1, w // 4 + 1, 1)).astype(np.float32)
    img += np.repeat(np.repeat(noise, 4, 0), 4, 1)[:h, :w]
    img += rng.normal(0, 4, (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def paste_portrait(scene: np.ndarray, portrait: Image.Image, x: int, y: int, height: int) -> tuple:
    """Paste the portrait scaled to `height` px at (x, y). Returns its box (x0, y0, x1, y1)."""
    w = round(portrait.width * height / portrait.height)
    small = np.asarray(portrait.resize((w, height), Image.LANCZOS).convert("RGB"))
    scene[y:y + height, x:x + w] = small
    return x, y, x + w, y + height


def jpeg_with_exif(pixels: np.ndarray, path: Path, *, quality: int = 92, orientation: int | None = None,
                   reflink_xml: str | None = None, properties_xml: str | None = None, model: str = "sladd-demo",
                   datetime_original: str = "2022:06:01 12:00:00") -> Path:
    """Write a 4:2:0 JPEG with EXIF (Model, DateTimeOriginal, optional Orientation and the
    vendor tags 40055 ImageProperties / 40056 ReflinkInfo)."""
    exif = Image.Exif()
    exif[0x0110] = model
    if orientation is not None:
        exif[0x0112] = orientation
    if properties_xml is not None:
        exif[40055] = properties_xml.encode("utf-8")
    if reflink_xml is not None:
        exif[40056] = reflink_xml.encode("utf-8")
    exif.get_ifd(0x8769)[0x9003] = datetime_original
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality, subsampling=2, exif=exif.tobytes())
    path.write_bytes(buf.getvalue())
    return path


def build_demo_tree(root: Path, seed: int = 0) -> Path:
    """Create (or recreate) the demo input tree under `root`. Returns `root`."""
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    src = sample_portrait()
    portrait = Image.open(src)
    # Under a `tilSladding` folder, as the road administration's trees are (exif_top_dir).
    road_dir = root / "tilSladding" / "2022" / "EV00006" / "S1" / "D1" / "F1_2022_06_01"
    scene = road_scene(2048, 2448, seed)
    # People at several distances: face heights from ~30 px (far) to ~120 px (near).
    for x, y, hgt in ((400, 900, 90), (1500, 880, 140), (1900, 1000, 300)):
        paste_portrait(scene, portrait, x, y, hgt)
    for name, pixels, meter in (("EV00006_S1D1_m01234_f1.jpg", scene, "1234.0"),
                                ("EV00006_S1D1_m01244_f1.jpg", road_scene(2048, 2448, seed + 1), "1244.0")):
        jpeg_with_exif(pixels, road_dir / name, reflink_xml=_REFLINK_XML,
                       properties_xml=_PROPS_XML.format(name=name, meter=meter))
    (root / "portretter").mkdir(parents=True)
    shutil.copyfile(src, root / "portretter" / "grace_hopper.jpg")
    # Stored sideways with EXIF orientation 6 (rotate 90° clockwise to display), odd name.
    upright = np.asarray(portrait.convert("RGB"))
    stored = np.ascontiguousarray(np.rot90(upright, k=1))          # 90° counter-clockwise
    jpeg_with_exif(stored, root / "åæø %#{} mappe" / "bilde med mellomrom.JPG", orientation=6)
    return root
