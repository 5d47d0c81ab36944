"""`sladd review`: the JSON API (token, host, keys, filters, bad input), the command line, and the
page itself in a real headless Chromium: load, remove a face, add a box, save, then the file on
disk re-rendered from its original."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.config import load_config
from engine.review import TOKEN_HEADER, ReviewApp, make_server
from tests.conftest import jpeg_bytes, scene_with_faces

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
KEY = "cam1/two faces æø %#{}.jpg"          # an odd name: spaces, æøå, URL-special characters
EMPTY = "cam2/empty.jpg"
ADD = [470, 20, 610, 110]                   # sky, right of the faces: nothing there to find


def _img(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _diff(a, b, box) -> float:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return float(np.abs(a[y1:y2, x1:x2] - b[y1:y2, x1:x2]).mean())


def _tree_digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def run_out(tmp_path, portrait):
    """A faces-only run with an archive: cam1 has two faces and a static band (the bonnet),
    cam2 an image with nothing in it. (input, output, archive, config path)."""
    inp, out, arc = tmp_path / "in", tmp_path / "out", tmp_path / "arc"
    img, _ = scene_with_faces(portrait, faces=((40, 60, 200), (300, 80, 180)), seed=1)
    (inp / "cam1").mkdir(parents=True)
    (inp / KEY).write_bytes(jpeg_bytes(img, quality=92))
    empty, _ = scene_with_faces(portrait, faces=(), seed=2)
    (inp / "cam2").mkdir()
    (inp / EMPTY).write_bytes(jpeg_bytes(empty, quality=92))
    band = np.zeros((480, 640), np.uint8)
    band[440:, :] = 255
    Image.fromarray(band).save(tmp_path / "bonnet.png")
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"models: [{{card: centerface}}]\nstatic_masks: [{{mask: '{tmp_path / 'bonnet.png'}', "
                   "where: 'cam1/**'}]\n", encoding="utf-8")
    assert main(["run", "-i", str(inp), "-o", str(out), "-a", str(arc), "-k", str(cfg), "-q"]) == 0
    return inp, out, arc, cfg


@pytest.fixture
def server(run_out):
    inp, out, arc, cfg_path = run_out
    cfg, _ = load_config(cfg_path)
    srv = make_server(ReviewApp.open(cfg, out, archive=arc), "127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _base(srv) -> str:
    return srv.url.split("#")[0]


def _call(srv, path, *, token=True, body=None, headers=None):
    h = {TOKEN_HEADER: srv.app.token} if token else {}
    h.update(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(_base(srv) + path.lstrip("/"), data=data, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if r.headers.get_content_type() == "application/json" else raw)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _q(key: str) -> str:
    return "key=" + urllib.parse.quote(key, safe="")


def _faces(rec) -> list[dict]:
    return [r for r in rec["regions"] if r["source"]["kind"] == "model" and r["class"] == "face"]


# --- the API ---------------------------------------------------------------------------------
def test_api_needs_the_token_and_a_loopback_host(server):
    assert _call(server, "/api/info", token=False)[0] == 403
    assert _call(server, "/api/info", headers={TOKEN_HEADER: "wrong"})[0] == 403
    status, info = _call(server, "/api/info")
    assert status == 200 and info["images"] == 2 and "face" in info["classes"] and "static" in info["classes"]
    # DNS rebinding: a page of another site resolving to 127.0.0.1 names its own host.
    assert _call(server, "/api/info", headers={"Host": "evil.example:80"})[0] == 403
    # The page itself holds no data and loads without the token; it names no other origin.
    with urllib.request.urlopen(_base(server), timeout=30) as r:
        html = r.read().decode()
        assert r.status == 200 and "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert "/static/review.js" in html and "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_filters_select_by_class_score_and_nothing_found(server):
    _, all_ = _call(server, "/api/images")
    assert [i["key"] for i in all_["images"]] == sorted([KEY, EMPTY])
    _, faces = _call(server, "/api/images?class=face&min_score=0.3")
    assert [i["key"] for i in faces["images"]] == [KEY]
    assert _call(server, "/api/images?class=face&min_score=0.999999")[1]["images"] == []
    _, empty = _call(server, "/api/images?empty=1")
    assert [i["key"] for i in empty["images"]] == [EMPTY]
    # The score filters are the models': a static mask's nominal score of 1 does not count.
    assert _call(server, "/api/images?class=static&min_score=0.5")[1]["images"] == []
    assert [i["key"] for i in _call(server, "/api/images?class=static")[1]["images"]] == [KEY]
    assert _call(server, "/api/images?empty=1&class=face")[0] == 400
    assert _call(server, "/api/images?min_score=nan")[0] == 400


def test_only_the_runs_own_files_are_served(server, run_out, tmp_path):
    inp, out, arc, _ = run_out
    status, body = _call(server, f"/api/image?{_q(KEY)}")
    assert status == 200 and body == (out / KEY).read_bytes()
    status, body = _call(server, f"/api/original?{_q(KEY)}")
    assert status == 200 and body == (arc / KEY).read_bytes()
    for key in ("../in/" + KEY, "/etc/passwd", ".sladd/ledger.sqlite", "cam1", "", "%ff"):
        assert _call(server, f"/api/image?{_q(key)}")[0] in (400, 404), key
    assert _call(server, "/api/image?key=%ff")[0] == 400          # not UTF-8
    # A run's output replaced by a link to a file elsewhere is not followed.
    secret = tmp_path / "secret.jpg"
    secret.write_bytes((inp / EMPTY).read_bytes())
    (out / EMPTY).unlink()
    (out / EMPTY).symlink_to(secret)
    assert _call(server, f"/api/image?{_q(EMPTY)}")[0] == 404


BAD_SAVES = [
    ({"images": [{"image": KEY, "add": [[10, 10, 5, 20]]}]}, "x1 < x2"),
    ({"images": [{"image": KEY, "add": [[10, 10, 900, 20]]}]}, "outside the image"),
    ({"images": [{"image": KEY, "add": [[10, 10, "a", 20]]}]}, "four numbers"),
    ({"images": [{"image": KEY, "add": [[0, 0, float("inf"), 9]]}]}, "Infinity is not a number"),
    ({"images": [{"image": KEY, "remove": [[1, 2, 3]]}]}, "four numbers"),
    ({"images": [{"image": "../../etc/passwd", "add": [[1, 1, 5, 5]]}]}, "unknown image"),
    ({"images": [{"image": KEY, "drop": []}]}, "each entry"),
    ({"images": []}, "the body must be"),
    (b"\xff\xfe", "not JSON"),
]


def test_a_bad_save_is_refused_and_changes_nothing(server, run_out):
    _, out, _, _ = run_out
    before = _tree_digest(out)
    for body, fragment in BAD_SAVES:
        status, err = _call(server, "/api/save", body=body)
        assert status in (400, 404) and fragment in err["error"], (body, err)
    plain = {"Content-Type": "text/plain"}
    assert _call(server, "/api/save", body={"images": [{"image": KEY}]}, headers=plain)[0] == 400
    assert _tree_digest(out) == before


def test_save_through_the_api_rerenders_from_the_archive(server, run_out):
    inp, out, arc, _ = run_out
    _, rec = _call(server, f"/api/record?{_q(KEY)}")
    face = _faces(rec)[0]
    originals = (_tree_digest(inp), _tree_digest(arc))
    status, res = _call(server, "/api/save", body={"images": [{"image": KEY, "add": [ADD], "remove": [face["box"]]}]})
    assert status == 200 and res["rendered"] == [KEY]
    new = res["records"][KEY]
    assert not any(r["box"] == face["box"] for r in _faces(new))
    assert [r["box"] for r in new["regions"] if r["source"]["kind"] == "correction"] == [[float(v) for v in ADD]]
    original, now = _img(arc / KEY), _img(out / KEY)
    assert _diff(original, now, face["box"]) < 4, "the removed face is restored from the original"
    assert _diff(original, now, ADD) > 8, "the added box is masked"
    assert (_tree_digest(inp), _tree_digest(arc)) == originals, "nothing is written outside OUTPUT"
    assert _call(server, "/api/images?class=correction")[1]["images"][0]["key"] == KEY


def test_originals_from_the_input_folder(run_out):
    inp, out, arc, cfg_path = run_out
    shutil.rmtree(arc)
    cfg, _ = load_config(cfg_path)
    app = ReviewApp.open(cfg, out, input=inp)
    path, media = app.index.original_file(KEY)
    assert path == (inp / KEY).resolve() and media == "image/jpeg"
    res = app.save({"images": [{"image": KEY, "add": [ADD]}]})
    assert res["rendered"] == [KEY] and _diff(_img(inp / KEY), _img(out / KEY), ADD) > 8
    with pytest.raises(ValueError, match="exactly one"):
        ReviewApp.open(cfg, out, input=inp, archive=inp)


def test_a_broken_record_is_listed_and_reported(run_out):
    _, out, arc, cfg_path = run_out
    (out / ".sladd/detections" / (EMPTY + ".json")).write_text("{not json", encoding="utf-8")
    cfg, _ = load_config(cfg_path)
    srv = make_server(ReviewApp.open(cfg, out, archive=arc), "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        listed = _call(srv, "/api/images")[1]["images"]
        assert [(i["key"], i["record"]) for i in listed] == [(KEY, True), (EMPTY, False)]
        status, err = _call(srv, f"/api/record?{_q(EMPTY)}")
        assert status == 500 and "JSONDecodeError" in err["error"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_save_while_a_run_holds_the_output_is_refused(server, run_out):
    from engine.lock import RunLock

    _, out, _, _ = run_out
    before = _tree_digest(out)
    with RunLock(out):
        status, err = _call(server, "/api/save", body={"images": [{"image": KEY, "add": [ADD]}]})
    assert status == 409 and "another sladd run" in err["error"]
    after = _tree_digest(out)
    for d in (before, after):
        d.pop(".sladd/run.lock", None)          # written by this test's own lock
    assert after == before


# --- the command line --------------------------------------------------------------------------
def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "o").mkdir()
    (tmp_path / "a").mkdir()
    assert main(["review", "-o", str(tmp_path / "o"), "-a", str(tmp_path / "a"), "--port", "0"]) == 2
    assert "neither a ledger" in capsys.readouterr().err
    assert main(["review", "-o", str(tmp_path / "missing"), "-a", str(tmp_path / "a"), "--port", "0"]) == 2
    with pytest.raises(SystemExit):         # the originals are required, as one of -a or -i
        main(["review", "-o", str(tmp_path / "o")])


def test_cli_serves_on_loopback_prints_the_url_and_stops_on_sigterm(run_out):
    _, out, arc, cfg = run_out
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    p = subprocess.Popen([sys.executable, "-m", "engine.cli", "review", "-o", str(out), "-a", str(arc), "-k", str(cfg),
                          "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = p.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "#token=" in url, url
        with urllib.request.urlopen(url.split("#")[0], timeout=30) as r:
            assert r.status == 200 and b"sladd review" in r.read()
        req = urllib.request.Request(url.split("#")[0] + "api/info", headers={TOKEN_HEADER: url.split("#token=")[1]})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert json.loads(r.read())["images"] == 2
    finally:
        p.terminate()
        code = p.wait(timeout=30)
    assert code == 0, p.stderr.read()


# --- the page in a real browser --------------------------------------------------------------
@pytest.fixture
def browser(tmp_path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.skip(f"needs Debian's chromium and chromium-driver ({', '.join(missing)} missing): "
                    "apt-get install chromium chromium-driver (scripts/setup.sh test does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e .[test])")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    # Both paths given: Selenium Manager is never asked, so nothing is downloaded.
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


def _wait(driver, cond, what, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    status = driver.find_element("id", "status").text
    raise AssertionError(f"timed out waiting for {what}; page status: {status!r}")


def _ready(driver):
    return driver.find_element("tag name", "body").get_attribute("data-state") == "ready"


def test_page_removes_a_face_adds_a_box_saves_and_the_file_is_rerendered(browser, server, run_out):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    inp, out, arc, _ = run_out
    before = _img(out / KEY)
    originals = (_tree_digest(inp), _tree_digest(arc))
    d = browser
    d.get(server.url)
    _wait(d, lambda: _ready(d) and d.find_element(By.ID, "key").text, "the first image")
    assert d.find_element(By.ID, "pos").text == "1 / 2"
    # Keyboard: next and previous; the list is in key order (cam1 before cam2).
    body = d.find_element(By.TAG_NAME, "body")
    assert d.find_element(By.ID, "key").text == KEY
    body.send_keys("j")
    _wait(d, lambda: _ready(d) and d.find_element(By.ID, "key").text == EMPTY, "the next image (j)")
    body.send_keys("\ue012")                        # ArrowLeft
    _wait(d, lambda: _ready(d) and d.find_element(By.ID, "key").text == KEY, "the previous image (←)")

    rec = json.loads((out / ".sladd/detections" / (KEY + ".json")).read_text(encoding="utf-8"))
    rects = d.find_elements(By.CSS_SELECTOR, "#overlay rect.region")
    assert len(rects) == len(rec["regions"]) and len(_faces(rec)) == 2
    assert len(d.find_elements(By.CSS_SELECTOR, "#overlay rect.kind-static")) == 1

    # Remove the left face: click its box.
    face_i = min(range(len(rec["regions"])), key=lambda i: rec["regions"][i]["box"][0]
                 if rec["regions"][i]["source"]["kind"] == "model" else 1e9)
    face = rec["regions"][face_i]["box"]
    d.find_element(By.CSS_SELECTOR, f'#overlay rect[data-index="{face_i}"]').click()
    assert "removing" in d.find_element(By.CSS_SELECTOR, f'#overlay rect[data-index="{face_i}"]').get_attribute("class")
    # Add a box: drag over the sky, in screen pixels from the overlay's centre.
    svg = d.find_element(By.ID, "overlay")
    r = d.execute_script("const b = arguments[0].getBoundingClientRect(); return [b.width, b.height];", svg)
    sx, sy = r[0] / rec["width"], r[1] / rec["height"]
    x0, y0 = (ADD[0] - rec["width"] / 2) * sx, (ADD[1] - rec["height"] / 2) * sy
    ActionChains(d).move_to_element_with_offset(svg, int(x0), int(y0)).click_and_hold() \
        .move_by_offset(int((ADD[2] - ADD[0]) * sx / 2), int((ADD[3] - ADD[1]) * sy / 2)) \
        .move_by_offset(int((ADD[2] - ADD[0]) * sx / 2), int((ADD[3] - ADD[1]) * sy / 2)).release().perform()
    assert len(d.find_elements(By.CSS_SELECTOR, "#overlay rect.adding")) == 1
    assert d.find_element(By.ID, "save").text == "Save (1)"

    body.send_keys("s")                             # save: the corrections, then the re-render
    _wait(d, lambda: _ready(d) and "re-rendered 1" in d.find_element(By.ID, "status").text, "the save")
    # The page shows the new record: the face gone, the added box as a correction.
    assert len(d.find_elements(By.CSS_SELECTOR, "#overlay rect.kind-correction")) == 1
    assert not d.find_elements(By.CSS_SELECTOR, "#overlay rect.removing, #overlay rect.adding")
    assert d.find_element(By.ID, "save").text == "Save"

    # On disk: the image re-rendered from the archive copy, the record and corrections kept.
    new = json.loads((out / ".sladd/detections" / (KEY + ".json")).read_text(encoding="utf-8"))
    assert len(_faces(new)) == 1 and not any(r["box"] == face for r in new["regions"])
    (added,) = [r["box"] for r in new["regions"] if r["source"]["kind"] == "correction"]
    assert all(abs(a - b) <= 2 * max(1 / sx, 1 / sy) + 1 for a, b in zip(added, ADD)), (added, ADD)
    kept = json.loads((out / ".sladd/corrections" / (KEY + ".json")).read_text(encoding="utf-8"))
    assert kept["add"] == [added] and len(kept["remove"]) == 1
    original, now = _img(arc / KEY), _img(out / KEY)
    assert _diff(original, before, face) > 8 and _diff(original, now, face) < 4, "removed face restored"
    assert _diff(original, before, added) < 4 and _diff(original, now, added) > 8, "added box masked"
    other = _faces(new)[0]["box"]
    assert _diff(original, now, other) > 8, "the other face is still masked"
    assert _diff(original, now, [0, 445, 640, 480]) > 8, "the static band is still masked"
    assert (_tree_digest(inp), _tree_digest(arc)) == originals, "nothing is written outside OUTPUT"
    # The picture the page shows now is the re-rendered file, not a cached copy of the old one.
    shown = np.asarray(d.execute_script(
        "const img = document.getElementById('photo'), c = document.createElement('canvas');"
        "c.width = img.naturalWidth; c.height = img.naturalHeight;"
        "const g = c.getContext('2d'); g.drawImage(img, 0, 0);"
        "const [x1, y1, x2, y2] = arguments[0], px = g.getImageData(x1, y1, x2 - x1, y2 - y1).data, out = [];"
        "for (let i = 0; i < px.length; i += 4) out.push(px[i], px[i + 1], px[i + 2]);"
        "return out;", [int(v) for v in face])).reshape(int(face[3]) - int(face[1]), int(face[2]) - int(face[0]), 3)
    box = [0, 0, shown.shape[1], shown.shape[0]]
    x1, y1 = int(face[0]), int(face[1])
    crop = lambda a: a[y1:y1 + shown.shape[0], x1:x1 + shown.shape[1]]   # noqa: E731
    assert _diff(shown, crop(now), box) < 2 and _diff(shown, crop(before), box) > 8


def test_page_without_the_token_says_what_to_open(browser, server):
    browser.get(_base(server))
    _wait(browser, lambda: "#token=" in browser.find_element("id", "status").text, "the message")
    assert browser.find_element("tag name", "body").get_attribute("data-state") == "error"


def test_a_click_removes_that_region_and_spares_its_neighbours_where_it_can(browser, server):
    """A remove box drops every model region it overlaps (engine.correct); the page sends a box
    that touches only the clicked one when there is such a box, and shows what goes when not."""
    d = browser
    d.get(server.url)
    _wait(d, lambda: _ready(d), "the page")
    model = {"kind": "model", "card": "t", "sha256": "0" * 64}
    rec = {"image": KEY, "width": 100, "height": 100, "version": 1, "regions": [
        {"box": [10, 10, 50, 50], "class": "face", "score": 0.9, "shape": "box", "source": model},
        {"box": [40, 10, 90, 50], "class": "face", "score": 0.8, "shape": "box", "source": model},
        {"box": [60, 60, 70, 70], "class": "plate", "score": 0.5, "shape": "box", "source": model},
        {"box": [55, 55, 99, 99], "class": "person", "score": 0.7, "shape": "box", "source": model}]}
    box0, box2, gone0, gone2 = d.execute_script(
        "S.record = arguments[0]; S.edits.clear();"
        "const e = editsOf(S.key, true), b0 = removeBox(0), b2 = removeBox(2);"
        "e.remove.set(0, b0); const g0 = [...dropped(e)]; e.remove.clear(); e.remove.set(2, b2);"
        "const g2 = [...dropped(e)]; S.edits.clear(); return [b0, b2, g0, g2];", rec)
    assert gone0 == [0], "the neighbouring face stays"
    assert box0[0] < 40 and box0[2] > 10, box0          # inside the clicked face, clear of the other
    assert box2 == [60, 60, 70, 70] and sorted(gone2) == [2, 3], "a plate inside a person takes the person along"
