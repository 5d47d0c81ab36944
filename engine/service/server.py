"""`sladd serve`: the service's process — configuration, logging, model loading, uvicorn.

The port opens at once and `GET /health` says `loading` (503) until the models are loaded and
warmed up (a TensorRT plan may take minutes to build on first start), then `ready`. SIGTERM and
SIGINT stop taking connections, let every request in flight finish (up to
service.timeout_seconds), then stop the threads: `docker stop` loses no answer. Logs go to
stderr, one line per event, no colours; `service.log_format: json` for log collectors.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Optional

from engine.config.load import DEFAULT_SERVICE_PROFILE as DEFAULT_PROFILE
from engine.optional import require

__all__ = ["serve", "service_config", "DEFAULT_PROFILE"]

LOG = logging.getLogger("sladd")


def service_config(path: Optional[Path], profile: Optional[str], overrides: Optional[dict] = None):
    """load_config for the service: the `faces-plates` profile unless another is named; where
    that profile is not installed, the default profile, with a warning. (config, config file)."""
    from engine.config import CONFIG_DIR, load_config

    if profile is None:
        profile = DEFAULT_PROFILE
        if not (CONFIG_DIR / f"{DEFAULT_PROFILE}.yml").is_file():
            LOG.warning("profile %s is not installed (%s missing): serving the default profile, which also "
                        "masks people and vehicles", DEFAULT_PROFILE, CONFIG_DIR / f"{DEFAULT_PROFILE}.yml")
            profile = "default"
    return load_config(path, profile=profile, overrides=overrides)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        out.update(getattr(record, "access", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_service_logging(level: str, fmt: str) -> None:
    """One handler on stderr for sladd, its access log and uvicorn; secrets redacted."""
    from engine.logs import RedactingFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(_JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("sladd", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.propagate = False
        lg.setLevel("INFO" if level == "DEBUG" else level)
    logging.getLogger("uvicorn.access").disabled = True        # sladd.access logs every request


def _token(env: Optional[str]) -> Optional[str]:
    if env is None:
        return None
    from engine.logs import register_secret

    value = os.environ.get(env, "")
    if not value.strip():
        raise ValueError(f"service.token_env names {env}, which is empty or not set: set {env} to the bearer "
                         "token, or remove service.token_env to serve without authentication")
    register_secret(value.strip())
    return value.strip()


def _load(cfg, config_file, pipeline, model: dict, on_failure) -> None:
    """Build the worker (models, decoder, renderer) and warm it up; then open the pipeline."""
    try:
        from engine.worker.build import build_worker
        from engine.worker.memory import MemoryWorker

        class _NoTree:
            refusal = staticmethod(lambda path: None)     # no files are read: the bytes come with the request

        worker, cfg2 = build_worker(cfg, _NoTree(), config_file=config_file, threads=cfg.engine.inference_threads)
        memory = MemoryWorker(worker, cfg2, lossless=cfg.service.lossless, max_pixels=cfg.service.max_image_pixels)
        model.update(memory.model)
        pipeline.batch_size = cfg2.engine.batch_size or 1
        _warm_up(memory)
        pipeline.start(memory)
        LOG.info("ready: models %s, device %s, batch size %d, %d threads, lossless %s", model["name"],
                 cfg2.engine.device, pipeline.batch_size, pipeline.threads, cfg.service.lossless)
    except Exception as exc:  # noqa: BLE001 - reported by /health and the exit code
        LOG.error("cannot start: %s: %s", type(exc).__name__, exc)
        pipeline.failed(f"{type(exc).__name__}: {exc}")
        on_failure()


def _warm_up(memory) -> None:
    """One small picture through every step: the first model call is slow (graph optimisation)."""
    import numpy as np
    from engine.codecs.turbo import TurboEncoder

    data = TurboEncoder().encode(np.full((256, 320, 3), 128, np.uint8), 90, 2)
    frame = memory.decode(data, "warm-up.jpg")
    memory.render(frame, memory.detect_batch([frame])[0])


def _server_class(uvicorn):
    class Server(uvicorn.Server):
        """uvicorn's server, but a signal ends it with exit code 0 once every request in flight
        is answered (uvicorn raises the signal again afterwards: the process would die of it)."""

        pipeline = None

        def handle_exit(self, sig, frame):
            import signal

            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
                return
            LOG.info("%s received: finishing %d request(s) in flight, then stopping", signal.Signals(sig).name,
                     self.pipeline.in_flight if self.pipeline else 0)
            self.should_exit = True
    return Server


def serve(cfg, config_file: Optional[Path], host: str = "127.0.0.1", port: int = 8000) -> int:
    """Run the service until SIGTERM/SIGINT. Exit code 0, or 3 when the models cannot be loaded."""
    uvicorn = require("uvicorn", "the service needs uvicorn: pip install 'sladd[service]'")
    from engine.service.metrics import Metrics
    from engine.service.pipeline import Pipeline
    from engine.service.routes import create_app

    s = cfg.service
    if not cfg.draw_mask:
        raise ValueError("draw_mask is false: the service would return pictures unmasked; set draw_mask: true")
    setup_service_logging(cfg.log_level, s.log_format)
    token = _token(s.token_env)
    metrics = Metrics()
    pipeline = Pipeline(max_queue=s.max_queue, batch_size=cfg.engine.batch_size or 1, batch_wait_ms=s.batch_wait_ms,
                        threads=s.threads, timeout=s.timeout_seconds, metrics=metrics)
    model: dict = {"name": None, "version": None}
    server = None
    failed = threading.Event()

    def on_failure():
        failed.set()
        if server is not None:
            server.should_exit = True

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        threading.Thread(target=_load, args=(cfg, config_file, pipeline, model, on_failure),
                         name="sladd-load", daemon=True).start()
        yield
        # uvicorn has finished every request in flight: stop the threads.
        await asyncio.get_running_loop().run_in_executor(None, pipeline.close)

    # The body is read within a minute (or the processing timeout, if longer): a slow upload
    # cannot hold an admission slot for ever.
    app = create_app(pipeline, metrics, service_name=s.service_name, model=model, token=token,
                     max_bytes=s.max_request_bytes, read_timeout=max(60.0, s.timeout_seconds),
                     cors_origins=tuple(s.cors_origins), lifespan=lifespan)
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on",
                            timeout_graceful_shutdown=int(s.timeout_seconds) + 10, server_header=False)
    server = _server_class(uvicorn)(config)
    server.pipeline = pipeline
    LOG.info("sladd serve on http://%s:%d as %r; loading the models (GET /health: loading, then ready)", host, port,
             s.service_name)
    server.run()
    return 3 if failed.is_set() else 0


def cli_main(args) -> int:
    """`sladd serve` from the parsed command line (engine.cli): exit 2 for bad usage or
    configuration, 3 when the models cannot be loaded."""
    from engine.config import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not 0 < args.port < 65536:
        print(f"sladd serve: --port must be 1..65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        cfg, cfg_path = service_config(args.config, args.profile,
                                       {"engine": {"device": args.device}} if args.device else None)
        return serve(cfg, cfg_path, args.host, args.port)
    except (ConfigError, ValueError) as exc:
        print(f"sladd serve: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"sladd serve: {exc}", file=sys.stderr)
        return 3
