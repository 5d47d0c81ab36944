"""`sladd serve`: an HTTP anonymisation service, a drop-in for SGBlur (Panoramax) and BlurScene.

server.py runs it (configuration, logging, model loading, uvicorn); routes.py is the API;
middleware.py the token, size limits, admission and request metrics; pipeline.py the
scheduling (decode and render threads, detection batched across requests); metrics.py the
Prometheus metrics. The picture work is the batch run's worker (engine.worker.memory).
FastAPI, uvicorn and prometheus-client come with `pip install 'sladd[service]'`.
"""
from engine.service.server import DEFAULT_PROFILE, serve, service_config

__all__ = ["serve", "service_config", "DEFAULT_PROFILE"]
