"""Ray executor: the same worker (engine.worker.build) in Ray actors — one per GPU, or N CPU
actors — fed by the driver, which alone walks the tree and keeps the books.

- Back-pressure: at most `engine.ray_inflight` calls of `engine.ray_batch` images in flight per
  actor; the walk waits on a bounded queue, so the driver's memory is flat whatever the tree.
- Faults: a call whose actor died (process killed, node lost, GPU error) is resubmitted one
  image per call to the actors still alive (Ray restarts the dead one wherever resources allow).
  An image that took an actor down three times fails alone, with that reason. Outputs are
  written atomically under the same names, so a retried image is written once.
- An embedded cluster (no address) is started on this machine bound to 127.0.0.1 only (no
  dashboard, token authentication left on), and its processes end with the driver. With an
  address, the driver joins that cluster; its actors belong to this job and end with it.
"""
from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Callable, Optional

from engine.types import Failure

__all__ = ["RayExecutor", "import_ray"]

LOG = logging.getLogger("sladd")
MAX_ATTEMPTS = 3


def import_ray(embedded: bool):
    """Ray, imported so that an embedded cluster stays on the loopback interface: with this
    variable unset Ray resolves 127.0.0.1 to the host's address and its servers listen there."""
    if embedded:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise ImportError("--executor ray needs Ray: pip install 'sladd[ray]' (bash scripts/setup.sh installs it)") \
            from exc
    return ray


class _Actor:
    """Body of a Ray actor: one worker pipeline over the shared file system."""

    def __init__(self, cfg, roots: tuple, config_file, db: bool, threads: int):
        import logging as _logging

        from engine.walk import Tree
        from engine.worker.build import build_worker

        _logging.getLogger("sladd").setLevel(_logging.WARNING)
        inp, out, arch = roots
        tree = Tree(inp, out, arch, cfg.output.extensions, follow_symlinks=cfg.input_follow_symlinks)
        self.worker, _ = build_worker(cfg, tree, config_file=config_file, db=db, threads=threads)

    def where(self) -> tuple:
        import socket

        return os.getpid(), socket.gethostname()

    def process(self, jobs: list) -> list:
        return [self.worker.process(job) for job in jobs]


class RayExecutor:
    def __init__(self, cfg, tree, *, config_file=None, db: bool = False):
        self.cfg, self.tree, self.config_file, self.db = cfg, tree, config_file, db
        self.address = cfg.engine.ray_address or os.environ.get("RAY_ADDRESS") or None
        self.embedded = self.address is None
        self._reaper: Optional[subprocess.Popen] = None
        self.ray = import_ray(self.embedded)     # fails now, before the walk, if Ray is missing
        self.actors: list = []
        self.batch, self.inflight = cfg.engine.ray_batch, cfg.engine.ray_inflight
        self.pending: dict = {}                  # ObjectRef -> (actor index, jobs, attempts per job)
        self.load: list[int] = []
        self.dead: set[int] = set()

    def _start(self) -> None:
        """The cluster and the actors, when the first image needs them (a rerun that skips
        everything starts nothing)."""
        ray, cfg = self.ray, self.cfg
        t0 = time.perf_counter()
        if not ray.is_initialized():
            if self.embedded:
                self._reaper = subprocess.Popen([sys.executable, "-m", "engine.driver.reaper", str(os.getpid())],
                                                stdin=subprocess.DEVNULL)
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, namespace="sladd")
            else:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False, namespace="sladd")
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
        on_gpu = gpus > 0 and cfg.engine.device != "cpu"
        n = cfg.engine.workers or (gpus if on_gpu else 1)
        share = max(1, cpus // n) if not on_gpu else 1
        opts = {"max_restarts": -1, "max_task_retries": 0, "num_cpus": share if not on_gpu else 1}
        if on_gpu:
            opts["num_gpus"] = 1
        cls = ray.remote(_Actor)
        roots = (self.tree.input, self.tree.output, self.tree.archive)
        self.actors = [cls.options(**opts).remote(cfg, roots, self.config_file, self.db, share) for _ in range(n)]
        self.load = [0] * n
        where = ray.get([a.where.remote() for a in self.actors])
        LOG.info("Ray: %s cluster, %d actor(s) (%s each), ready in %.1f s: %s",
                 "embedded local" if self.embedded else f"joined {self.address}", n,
                 "1 GPU" if on_gpu else f"{share} CPU", time.perf_counter() - t0,
                 ", ".join(f"pid {p} on {h}" for p, h in where))

    # --- dispatch ------------------------------------------------------------------------------
    def _take(self, jobq: queue.Queue, end, block: bool) -> tuple[list, bool]:
        """Up to `batch` jobs already queued (waiting briefly for the first when nothing is in
        flight); (jobs, the walk has ended)."""
        jobs: list = []
        try:
            item = jobq.get(timeout=0.1) if block else jobq.get_nowait()
        except queue.Empty:
            return jobs, False
        while True:
            if item is end:
                return jobs, True
            jobs.append(item)
            if len(jobs) >= self.batch:
                return jobs, False
            try:
                item = jobq.get_nowait()
            except queue.Empty:
                return jobs, False

    def _submit(self, jobs: list, attempts: list[int]) -> None:
        alive = [i for i in range(len(self.actors)) if i not in self.dead]
        if not alive:
            raise RuntimeError("no Ray worker is left alive")
        i = min(alive, key=lambda k: self.load[k])
        ref = self.actors[i].process.remote(jobs)
        self.pending[ref] = (i, jobs, attempts)
        self.load[i] += 1

    def _capacity(self) -> bool:
        return any(self.load[i] < self.inflight for i in range(len(self.actors)) if i not in self.dead)

    def _collect(self, record: Callable, timeout: float) -> None:
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        for ref in ready:
            i, jobs, attempts = self.pending.pop(ref)
            self.load[i] -= 1
            try:
                results = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as exc:
                self._actor_failed(i, jobs, attempts, exc, record)
                continue
            for item in results:
                record(item)

    def _actor_failed(self, i: int, jobs: list, attempts: list[int], exc: Exception, record: Callable) -> None:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if self._gone_for_good(i):
            self.dead.add(i)
        LOG.warning("Ray actor %d failed on %d image(s) (%s); retrying them one by one", i, len(jobs), reason)
        for job, n in zip(jobs, attempts):
            if n + 1 >= MAX_ATTEMPTS:
                record(Failure(job, "worker", f"the worker process died {MAX_ATTEMPTS} times while processing "
                                              f"this image (last: {reason})"))
            else:
                self._submit([job], [n + 1])

    def _gone_for_good(self, i: int) -> bool:
        """An actor Ray will not restart (its restarts exhausted, or no node can hold it)."""
        try:
            self.ray.get(self.actors[i].where.remote(), timeout=60)
            return False
        except Exception:  # noqa: BLE001 - any answer but a reply means the actor is gone
            return True

    # --- the run ---------------------------------------------------------------------------------
    def execute(self, jobq: queue.Queue, end, record: Callable, stop: threading.Event) -> None:
        ended = False
        while True:
            while not ended and not stop.is_set() and (not self.actors or self._capacity()):
                jobs, ended = self._take(jobq, end, block=not self.pending)
                if not jobs:
                    break
                if not self.actors:
                    self._start()
                self._submit(jobs, [0] * len(jobs))
            if not self.pending:
                if ended or stop.is_set():
                    break
                continue
            self._collect(record, timeout=0.1)
        if stop.is_set() and not ended:
            self._discard(jobq, end)

    @staticmethod
    def _discard(jobq: queue.Queue, end) -> None:
        """After a stop: unblock the walk, which may be waiting to queue one more job."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if jobq.get(timeout=0.1) is end:
                    return
            except queue.Empty:
                continue

    def drain(self, record: Callable, timeout: float) -> bool:
        """After an interruption: record what the actors still finish; True when nothing is left."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            try:
                self._collect(record, timeout=0.1)
            except Exception:  # noqa: BLE001 - a failed call here stays `running` for the next run
                break
        return not self.pending

    def close(self) -> None:
        if not self.actors and not self.ray.is_initialized():
            return
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.ray.shutdown()
        if self._reaper is not None:            # a clean shutdown leaves nothing to reap
            self._reaper.terminate()
            self._reaper.wait()
