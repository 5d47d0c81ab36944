"""The worker side of a run: one image from its Job to its outputs and a result record."""
from engine.worker.worker import NoGuard, Worker

__all__ = ["Worker", "NoGuard"]
