"""The HTTP API: SGBlur's `POST /blur/` (what Panoramax calls), BlurScene's `POST /anonymize`,
`GET /health`, `GET /metrics`.

Contracts (SGBlur src/blur/blur_api.py, Panoramax's blur client, BlurScene run_server.py):

- `POST /blur/`, multipart field `picture` (a JPEG), query `keep=0|1`. Default answer: the JPEG
  with an `x-sgblur` header (JSON: `info` [{class, confidence, bbox [x1, y1, x2, y2], xywh
  [x, y, w, h] of the pixels re-encoded for it}], `model` {name, version}, plus `service_name`
  and `annotations`). With `Accept: multipart/form-data`: parts `metadata` (JSON:
  `annotations`, `service_name`) and `image`. `keep=1` is accepted and changes nothing: sladd
  keeps no part of any picture, so it returns no `blurring_id` and nothing can be unblurred.
- `POST /anonymize`, the raw JPEG as the body with `Content-Type: image/*`: the JPEG back.
- Errors are `{"detail": "..."}`: 400 bad picture, 401 token, 413 too large, 415 content type,
  422 missing field, 503 + Retry-After (busy, loading, timed out); 500 only for sladd's own faults.
"""
# No `from __future__ import annotations`: FastAPI reads the route signatures' types at run time,
# and they are imported inside create_app.
import json
import logging
import uuid
from typing import Optional

import numpy as np

from engine.optional import require
from engine.service.pipeline import Busy
from engine.worker.memory import BadInput

__all__ = ["create_app", "sgblur_info", "multipart_body"]

LOG = logging.getLogger("sladd")


def create_app(pipeline, metrics, *, service_name: str, model: dict, token: Optional[str] = None,
               max_bytes: int = 100 << 20, read_timeout: float = 120.0, cors_origins: tuple = (), lifespan=None):
    """The FastAPI application. `model`: {"name", "version"} for the answers (a dict that the
    server fills in once the models are loaded)."""
    fastapi = require("fastapi", "the service needs FastAPI and uvicorn: pip install 'sladd[service]'")
    from fastapi import File, Query, Request, UploadFile
    from fastapi.responses import JSONResponse, Response

    from engine.service.middleware import ServiceMiddleware

    app = fastapi.FastAPI(title="sladd", description="Anonymisation service (SGBlur / BlurScene compatible)",
                          lifespan=lifespan)

    async def run(request: Request, data: bytes):
        ticket = request.state.ticket
        try:
            rendered = await pipeline.process(data, ticket)
        except BadInput as exc:
            metrics.images.labels("rejected").inc()
            return None, JSONResponse({"detail": str(exc)}, status_code=400)
        except Busy as exc:
            metrics.images.labels("timeout").inc()
            return None, JSONResponse({"detail": str(exc)}, status_code=503,
                                      headers={"retry-after": str(exc.retry_after)})
        except MemoryError:
            metrics.images.labels("failed").inc()
            return None, JSONResponse({"detail": "out of memory; retry later"}, status_code=503,
                                      headers={"retry-after": "30"})
        except Exception:  # noqa: BLE001 - sladd's fault, not the client's: logged, 500, never the input back
            metrics.images.labels("failed").inc()
            LOG.exception("a picture failed")
            return None, JSONResponse({"detail": "internal error while anonymising (see the service log)"},
                                      status_code=500)
        metrics.images.labels("lossless" if rendered.lossless else "reencoded").inc()
        for name, n in rendered.dets.counts().items():
            metrics.detections.labels(name).inc(n)
        return rendered, None

    @app.post("/blur/", response_class=Response,
              responses={200: {"content": {"image/jpeg": {}, "multipart/form-data": {}}}})
    async def blur(request: Request, picture: UploadFile = File(..., description="the JPEG to anonymise"),
                   keep: str = Query("0", description="0 or 1; sladd keeps nothing either way")):
        """Anonymise one picture (SGBlur's API; Panoramax asks for the multipart answer)."""
        if keep not in ("0", "1"):
            return JSONResponse({"detail": f"keep must be 0 or 1, got {keep[:20]!r}"}, status_code=400)
        rendered, error = await run(request, await picture.read())
        if error is not None:
            return error
        info = sgblur_info(rendered, model, service_name)
        if "multipart/form-data" in (request.headers.get("accept") or ""):
            meta = {"annotations": [], "service_name": service_name}
            body, ctype = multipart_body([("metadata", "metadata.json", "application/json", json.dumps(meta).encode()),
                                          ("image", "image.jpg", "image/jpeg", rendered.data)])
            return Response(body, media_type=ctype)
        return Response(rendered.data, media_type="image/jpeg", headers={"x-sgblur": json.dumps(info)})

    @app.post("/anonymize", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def anonymize(request: Request):
        """Anonymise the raw JPEG body (BlurScene's API): Content-Type image/*."""
        ctype = (request.headers.get("content-type") or "").lower()
        if not ctype.startswith("image/"):
            return JSONResponse({"detail": f"Content-Type must be image/jpeg (image/*), got {ctype[:60]!r}"},
                                status_code=415)
        data = await request.body()
        if not data:
            return JSONResponse({"detail": "empty body: send the JPEG itself"}, status_code=400)
        rendered, error = await run(request, data)
        if error is not None:
            return error
        return Response(rendered.data, media_type="image/jpeg",
                        headers={"x-sgblur": json.dumps(sgblur_info(rendered, model, service_name))})

    @app.get("/health")
    async def health():
        """200 once the models are loaded; 503 while loading or after a failed start."""
        body = {"status": pipeline.state, "model": model, "in_flight": pipeline.in_flight}
        if pipeline.error:
            body["error"] = pipeline.error
        return JSONResponse(body, status_code=200 if pipeline.state == "ready" else 503)

    @app.get("/metrics")
    async def prometheus():
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    @app.get("/")
    async def root():
        return {"service": service_name, "engine": "sladd", "model": model,
                "routes": ["POST /blur/", "POST /anonymize", "GET /health", "GET /metrics"]}

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Accept"], expose_headers=["x-sgblur"])
    app.add_middleware(ServiceMiddleware, pipeline=pipeline, metrics=metrics, token=token, max_bytes=max_bytes,
                       read_timeout=read_timeout)
    return app


def sgblur_info(rendered, model: dict, service_name: str) -> dict:
    """The x-sgblur header: SGBlur's `info` and `model`, one entry per distinct object (a face
    seen by two views is reported once), boxes in the upright picture's pixels."""
    dets = rendered.dets
    w, h = rendered.size
    idx = dets.counted.tolist() if dets.counted is not None else list(range(len(dets)))
    regions = _regions_of_objects(dets, idx, rendered.regions)
    info = []
    for i in idx:
        x1, y1, x2, y2 = (float(v) for v in dets.boxes[i])
        name = dets.names[int(dets.classes[i])] if 0 <= int(dets.classes[i]) < len(dets.names) else str(dets.classes[i])
        info.append({"class": name, "confidence": round(float(dets.scores[i]), 3),
                     "bbox": [max(0, int(x1)), max(0, int(y1)), min(w, int(x2 + 0.999)), min(h, int(y2 + 0.999))],
                     "xywh": regions.get(i)})
    return {"info": info, "model": dict(model), "service_name": service_name, "annotations": [],
            "lossless": rendered.lossless}


def _regions_of_objects(dets, counted: list, regions: list) -> dict:
    """Counted detection -> the re-encoded rectangle (x, y, w, h) of its object: its own region,
    grown over the regions of the uncounted duplicates of the same class whose boxes overlap it
    most (a face seen at two scales is drawn twice, reported once), so that the rectangles
    reported hold every pixel that changed."""
    from kernels import iou_matrix

    out = {i: list(regions[i]) for i in counted if i < len(regions) and regions[i] is not None}
    others = [i for i in range(min(len(dets), len(regions))) if i not in out and regions[i] is not None]
    if not out or not others:
        return out
    keys = list(out)
    iou = iou_matrix(np.asarray(dets.boxes)[others], np.asarray(dets.boxes)[keys])
    for row, i in enumerate(others):
        same = [k for k, j in enumerate(keys) if int(dets.classes[j]) == int(dets.classes[i]) and iou[row, k] > 0]
        if not same:
            continue
        j = keys[max(same, key=lambda k: iou[row, k])]
        x, y, w, h = out[j]
        ox, oy, ow, oh = regions[i]
        x0, y0 = min(x, ox), min(y, oy)
        out[j] = [x0, y0, max(x + w, ox + ow) - x0, max(y + h, oy + oh) - y0]
    return out


def multipart_body(parts: list[tuple[str, str, str, bytes]]) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data message; parts are (name, file name, content
    type, bytes). The boundary is random and checked not to occur in any part."""
    while True:
        boundary = uuid.uuid4().hex
        if not any(boundary.encode() in p[3] for p in parts):
            break
    out = []
    for name, filename, ctype, data in parts:
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                   f"Content-Type: {ctype}\r\n\r\n".encode())
        out.append(data)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"
