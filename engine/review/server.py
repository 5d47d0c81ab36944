"""`sladd review`: a local web page to go through a run and correct it.

One process, the standard library's threading HTTP server, a static page (engine/review/static)
and a small JSON API. Reading is all it does itself; a save hands the edits to
engine.correct.apply_corrections, which re-renders the image from its original and writes only
under OUTPUT (the image, its detections record, the ledger row, the kept corrections).

Safety for a tool on a workstation: it listens on 127.0.0.1 unless told otherwise; every API call
carries the run's token (`X-Sladd-Token`, given in the URL printed at start-up, after `#` so it
never reaches a log or a Referer), which a page of another site cannot send without a CORS
preflight this server never grants; while on loopback, a request naming another host (DNS
rebinding) is refused; only the run's own keys are served, and only files under OUTPUT and the
originals' root.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import secrets
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlsplit

from engine.review.index import ReviewError, RunIndex

__all__ = ["ReviewApp", "ReviewServer", "make_server", "TOKEN_HEADER"]

LOG = logging.getLogger("sladd")

TOKEN_HEADER = "X-Sladd-Token"
MAX_BODY = 1 << 20
MAX_BOXES = 1000
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/review.js": ("review.js", "text/javascript; charset=utf-8"),
          "/static/review.css": ("review.css", "text/css; charset=utf-8")}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store"}


@dataclass
class ReviewApp:
    """What the handler serves: the run's index, the configuration a save renders with, where the
    originals are (`archive` or `input`, exactly one), the token."""

    cfg: object
    output: Path
    archive: Optional[Path]
    input: Optional[Path]
    index: RunIndex
    token: str

    @classmethod
    def open(cls, cfg, output: Path, *, archive: Optional[Path] = None, input: Optional[Path] = None,
             token: Optional[str] = None) -> "ReviewApp":
        if (archive is None) == (input is None):
            raise ReviewError("give the originals as exactly one of -a ARCHIVE or -i INPUT")
        for name, p in (("-o OUTPUT", output), ("-a ARCHIVE", archive), ("-i INPUT", input)):
            if p is not None and not Path(p).is_dir():
                raise ReviewError(f"{name}: {p} is not a folder")
        from engine.correct import CorrectionError, load_record

        index = RunIndex(Path(output), Path(archive if archive is not None else input),
                         load_record=lambda out, key: load_record(out, key, cfg), missing=CorrectionError)
        return cls(cfg, Path(output), archive, input, index, token or secrets.token_urlsafe(24))

    def save(self, body: dict) -> dict:
        """Apply `{"images": [{"image", "add", "remove"}]}` (boxes in upright image pixels) and
        return the re-rendered keys with their new records."""
        from engine.correct import CorrectionError, apply_corrections
        from engine.lock import LockHeld
        from engine.types import ImageError

        corrections = self._checked(body)
        try:
            done = apply_corrections(self.cfg, self.output, archive=self.archive, input=self.input,
                                     corrections=corrections)
        except (CorrectionError, ImageError) as exc:
            raise ReviewError(str(exc)) from exc
        except LockHeld as exc:         # a `sladd run` into this output is going on: try again after it
            raise ReviewError(str(exc), HTTPStatus.CONFLICT) from exc
        return {"rendered": list(done), "records": {k: self.index.refresh(k) for k in done}}

    def _checked(self, body) -> dict:
        if not isinstance(body, dict) or set(body) != {"images"} or not isinstance(body["images"], list) \
                or not body["images"]:
            raise ReviewError('the body must be {"images": [{"image": KEY, "add": [...], "remove": [...]}, ...]}')
        out = []
        for item in body["images"]:
            if not isinstance(item, dict) or "image" not in item or not set(item) <= {"image", "add", "remove"}:
                raise ReviewError('each entry of "images" is {"image": KEY, "add": [[x1, y1, x2, y2], ...], '
                                  f'"remove": [...]}}, got keys {sorted(item) if isinstance(item, dict) else item!r}')
            rec = self.index.record(item["image"])
            w, h = rec.get("width"), rec.get("height")
            out.append({"image": item["image"], "add": _boxes(item.get("add", []), "add", w, h),
                        "remove": _boxes(item.get("remove", []), "remove", w, h)})
        return {"images": out}


def _boxes(value, what: str, width, height) -> list[list[float]]:
    """`value` as a list of [x1, y1, x2, y2] with x1 < x2, y1 < y2, inside the image."""
    if not isinstance(value, list) or len(value) > MAX_BOXES:
        raise ReviewError(f'"{what}" must be a list of at most {MAX_BOXES} boxes [x1, y1, x2, y2]')
    boxes = []
    for b in value:
        ok = (isinstance(b, list) and len(b) == 4
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b))
        if not ok or not (b[0] < b[2] and b[1] < b[3]):
            raise ReviewError(f'"{what}": a box is four numbers [x1, y1, x2, y2] with x1 < x2 and y1 < y2, '
                              f'got {str(b)[:80]}')
        if isinstance(width, int) and isinstance(height, int) and \
                not (0 <= b[0] and 0 <= b[1] and b[2] <= width and b[3] <= height):
            raise ReviewError(f'"{what}": box {b} is outside the image ({width} x {height} pixels)')
        boxes.append([float(v) for v in b])
    return boxes


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _float(q: dict, name: str) -> Optional[float]:
    v = q.get(name, [""])[-1]
    if v == "":
        return None
    try:
        f = float(v)
    except ValueError:
        f = math.nan
    if not math.isfinite(f):
        raise ReviewError(f"{name} must be a number, got {v[:40]!r}")
    return f


class Handler(BaseHTTPRequestHandler):
    server: "ReviewServer"
    protocol_version = "HTTP/1.1"
    server_version = "sladd-review"

    def log_message(self, fmt, *args):          # one debug line per request, not stderr noise
        LOG.debug("review %s - " + fmt, self.client_address[0], *args)

    # -- plumbing ----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _fail(self, status: int, message: str) -> None:
        self.close_connection = True            # a refused POST may leave its body unread
        self._json(status, {"error": message})

    def _host_ok(self) -> bool:
        """On loopback, only requests addressed to a loopback name (no DNS rebinding)."""
        if not self.server.loopback:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        host = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")

    def _token_ok(self) -> bool:
        got = self.headers.get(TOKEN_HEADER, "")
        return hmac.compare_digest(got.encode(), self.server.app.token.encode())

    def _route(self, method: str) -> None:
        if not self._host_ok():
            return self._fail(HTTPStatus.FORBIDDEN, "requests must name this machine (127.0.0.1 or localhost)")
        url = urlsplit(self.path)
        try:
            q = parse_qs(url.query, keep_blank_values=True, max_num_fields=20, errors="strict")
        except (ValueError, UnicodeDecodeError):
            return self._fail(HTTPStatus.BAD_REQUEST, "the query string is not valid UTF-8 form data")
        if method == "GET" and url.path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if method == "GET" and url.path in STATIC:
            name, ctype = STATIC[url.path]
            return self._send(HTTPStatus.OK, resources.files("engine.review").joinpath("static", name).read_bytes(),
                              ctype)
        route = ROUTES.get((method, url.path))
        if route is None:
            return self._fail(HTTPStatus.NOT_FOUND, f"no such page: {method} {url.path[:100]}")
        if not self._token_ok():
            return self._fail(HTTPStatus.FORBIDDEN, f"missing or wrong {TOKEN_HEADER}: open the URL sladd review "
                                                    "printed (it carries the token)")
        try:
            route(self, q)
        except ReviewError as exc:
            self._fail(exc.status, str(exc))
        except (OSError, ValueError) as exc:     # a record unreadable or not JSON: the server's side
            LOG.error("review: %s %s: %s", method, url.path, exc)
            self._fail(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    # -- API ---------------------------------------------------------------------------------
    def api_info(self, q):
        app = self.server.app
        self._json(HTTPStatus.OK, {"output": str(app.output), "originals": "archive" if app.archive else "input",
                                   "images": len(app.index.keys), "skipped": app.index.skipped,
                                   "classes": app.index.classes()})

    def api_images(self, q):
        cls = q.get("class", [""])[-1] or None
        empty = q.get("empty", [""])[-1] in ("1", "true")
        sel = self.server.app.index.select(cls, _float(q, "min_score"), _float(q, "max_score"), empty)
        self._json(HTTPStatus.OK, {"images": [s.as_json() for s in sel], "total": len(self.server.app.index.keys)})

    def api_record(self, q):
        self._json(HTTPStatus.OK, self.server.app.index.record(q.get("key", [""])[-1]))

    def _file(self, path_media):
        path, media = path_media
        self._send(HTTPStatus.OK, path.read_bytes(), media)

    def api_image(self, q):
        self._file(self.server.app.index.output_file(q.get("key", [""])[-1]))

    def api_original(self, q):
        self._file(self.server.app.index.original_file(q.get("key", [""])[-1]))

    def api_save(self, q):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ReviewError("POST /api/save takes application/json")
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise ReviewError("Content-Length is required", HTTPStatus.LENGTH_REQUIRED) from None
        if not 0 < n <= MAX_BODY:
            raise ReviewError(f"the body must be 1 byte to {MAX_BODY >> 10} KiB, got {n}")
        try:
            body = json.loads(self.rfile.read(n).decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ReviewError(f"the body is not JSON: {exc}") from None
        with self.server.save_lock:     # one re-render at a time: two saves of one image never interleave
            result = self.server.app.save(body)
        LOG.info("review: re-rendered %s", ", ".join(result["rendered"]) or "nothing")
        self._json(HTTPStatus.OK, result)


ROUTES = {("GET", "/api/info"): Handler.api_info, ("GET", "/api/images"): Handler.api_images,
          ("GET", "/api/record"): Handler.api_record, ("GET", "/api/image"): Handler.api_image,
          ("GET", "/api/original"): Handler.api_original, ("POST", "/api/save"): Handler.api_save}


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: ReviewApp, host: str, port: int):
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.app = app
        self.save_lock = threading.Lock()
        try:
            self.loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            self.loopback = host == "localhost"
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/#token={self.app.token}"


def make_server(app: ReviewApp, host: str = "127.0.0.1", port: int = 8080) -> ReviewServer:
    """A bound server (port 0: any free port; `server.url` has the address and the token)."""
    return ReviewServer(app, host, port)
