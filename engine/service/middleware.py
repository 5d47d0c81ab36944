"""ASGI middleware in front of every route: bearer-token check, request size limit, admission
(503 + Retry-After when the queue is full, before the body is read), request metrics and one
access-log line per request."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Optional

from engine.service.pipeline import Busy

__all__ = ["ServiceMiddleware", "PROCESSING_ROUTES"]

ACCESS = logging.getLogger("sladd.access")
PROCESSING_ROUTES = ("/blur/", "/blur", "/anonymize")
OPEN_ROUTES = ("/health",)                      # answered without a token: probes


class _TooLarge(Exception):
    pass


class ServiceMiddleware:
    def __init__(self, app, *, pipeline, metrics, token: Optional[str], max_bytes: int, read_timeout: float):
        self.app, self.pipeline, self.metrics = app, pipeline, metrics
        self.token = token.encode() if token else None
        self.max_bytes, self.read_timeout = max_bytes, read_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path, sent = scope["path"], {"status": 500, "bytes": 0}

        async def send_counted(message):
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body":
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        ticket = None
        try:
            # CORS preflights carry no credentials: they pass (they answer nothing but headers).
            if self.token is not None and path not in OPEN_ROUTES and scope["method"] != "OPTIONS" \
                    and not self._authorised(scope):
                return await reply(send_counted, 401, "missing or wrong bearer token (Authorization: Bearer ...)",
                                   {"www-authenticate": "Bearer"})
            if scope["method"] == "POST" and path in PROCESSING_ROUTES:
                length = _header(scope, b"content-length")
                if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
                    code = 413 if length.isdigit() else 400
                    return await reply(send_counted, code, f"request body of {length} bytes; the limit is "
                                       f"{self.max_bytes} bytes (service.max_request_bytes)")
                try:
                    ticket = self.pipeline.admit()
                except Busy as exc:
                    return await reply(send_counted, 503, str(exc), {"retry-after": str(exc.retry_after)})
                try:
                    body = await asyncio.wait_for(_read_body(receive, self.max_bytes), self.read_timeout)
                except _TooLarge:
                    return await reply(send_counted, 413, f"request body larger than {self.max_bytes} bytes "
                                       "(service.max_request_bytes)")
                except asyncio.TimeoutError:
                    return await reply(send_counted, 408, "the request body was not received in time")
                if body is None:                 # the client went away
                    return
                scope.setdefault("state", {})["ticket"] = ticket
                receive = _replay(body, receive)
            await self.app(scope, receive, send_counted)
        finally:
            if ticket is not None:
                ticket.release()
            self._record(scope, path, sent, time.perf_counter() - t0)

    def _authorised(self, scope) -> bool:
        got = _header(scope, b"authorization") or ""
        scheme, _, value = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token)

    def _record(self, scope, path: str, sent: dict, seconds: float) -> None:
        route = self.metrics.route(path)
        self.metrics.requests.labels(route, str(sent["status"])).inc()
        self.metrics.latency.labels(route).observe(seconds)
        client = scope.get("client") or ("-", 0)
        ACCESS.info("%s %s %s %d %dB %.3fs", client[0], scope["method"], path, sent["status"], sent["bytes"], seconds,
                    extra={"access": {"client": client[0], "method": scope["method"], "path": path,
                                      "status": sent["status"], "bytes": sent["bytes"],
                                      "seconds": round(seconds, 4)}})


def _header(scope, name: bytes) -> Optional[str]:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v.decode("latin-1").strip()
    return None


async def _read_body(receive, limit: int) -> Optional[bytes]:
    """The whole body (at most `limit` bytes, else _TooLarge); None if the client disconnected."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    done = False

    async def replay():
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


async def reply(send, status: int, detail: str, headers: Optional[dict] = None) -> None:
    """A JSON error answer {"detail": ...} straight from the middleware."""
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
