"""Build the worker of a run from its configuration: device, decoder, encoder, runtime, models,
writer. The same function serves the in-process stream and each Ray actor (engine.driver.ray_executor),
so both anonymise byte for byte alike."""
from __future__ import annotations

import gc
import logging
import os
import threading
from pathlib import Path
from typing import Optional

from engine.codecs import ScaledDecoder, create_decoder, create_encoder
from engine.config import CONFIG_DIR, Config
from engine.detect import Detector, build_models
from engine.device import choose_decoder, choose_device, choose_encoder, choose_runtime, gpu_components
from engine.logs import quietly
from engine.meta.record import MetaContext
from engine.runtimes import create_runtime
from engine.worker.worker import Worker
from engine.worker.write import Writer

__all__ = ["build_worker", "model_sources", "GPU_BATCH"]

LOG = logging.getLogger("sladd")

GPU_BATCH = 8                      # engine.batch_size: null (auto) on cuda


def build_worker(cfg: Config, tree, *, config_file: Optional[Path] = None, db: bool = False,
                 threads: Optional[int] = None) -> tuple[Worker, Config]:
    """(worker, the configuration with its automatic values filled in). `threads` caps the
    decoder's and the runtime's threads (a Ray actor's share of a node's cores)."""
    components = gpu_components() if cfg.engine.device != "cpu" else None
    device = choose_device(cfg.engine.device, components)
    if cfg.engine.batch_size is None:
        # auto: batches pay on a GPU; on a few CPU cores batch 1 is as fast and uses less memory.
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(
            update={"batch_size": GPU_BATCH if device == "cuda" else 1})})
    decoder_name, dali_device = choose_decoder(cfg.engine.decoder, device, components)
    if decoder_name != "turbojpeg":
        from engine.codecs.turbo import drop_decoded

        drop_decoded()                            # decoded ahead by the start for TurboJPEG's decode
    encoder_name = choose_encoder(cfg.output.encoder, device, components)
    create_encoder(encoder_name, device)          # fails here, not once per image, if it cannot start
    cores = threads or os.cpu_count() or 2
    detectors = cfg.engine.detectors or (cpu_threads(cores)[0] if device == "cpu" else 1)
    if cfg.engine.detectors is None:
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"detectors": detectors})})
    inference_threads = cfg.engine.inference_threads or (max(1, cores // detectors) if device == "cpu" else threads)
    runtime_name = choose_runtime(cfg.engine.runtime, device, components)
    precision = cfg.engine.precision
    if precision == "auto" and runtime_name == "tensorrt":
        precision = "fp16"                        # plans; ONNX Runtime on the CPU resolves auto per card

    runtime = create_runtime(runtime_name, device=device, threads=inference_threads, precision=precision,
                             calibration_images=cfg.engine.calibration_images, max_batch=cfg.engine.batch_size)
    if cfg.engine.runtime == "auto" and device == "cpu" and runtime_name == "onnxruntime":
        runtime.large_passes = _large_passes(inference_threads, detectors)
    else:
        from engine import ov_prefetch

        ov_prefetch.release(drop=True)        # nothing here runs what it may have loaded
    detector = Detector(cfg, *build_models(cfg, runtime))
    if device == "cpu":
        # Not a daemon: ONNX Runtime aborts the process ("terminate called without an active
        # exception") when the interpreter exits while one of its sessions is being created.
        threading.Thread(target=quietly(detector.warm_up), name="sladd-warm-up").start()

    def make_detector():
        # Further detect threads share the models (ONNX Runtime sessions run concurrently; the
        # adapters guard their session caches): no second copy of the weights, no second warm-up.
        return Detector(cfg, detector.slots, detector.names)

    def make_decoder():
        # threads: DALI's own workers (Huffman decoding on the host for nvJPEG's hybrid path).
        inner = create_decoder(decoder_name, min_scale=1.0, max_pixels=cfg.engine.max_image_pixels,
                               device=dali_device, batch=cfg.engine.decode_batch, threads=max(2, min(8, cores)))
        if hasattr(inner, "keep_coefficients"):   # one pass for pixels and the lossless writer's coefficients
            inner.keep_coefficients = bool(cfg.output.lossless and cfg.draw_mask)
        return ScaledDecoder(inner, detector.needed_scale)

    meta = MetaContext.from_config(cfg, config_file or CONFIG_DIR / "default.yml")
    sources = model_sources(detector.slots, detector.names)
    worker = Worker(make_decoder=make_decoder, detector=detector,
                    make_writer=lambda: Writer(cfg, make_decoder(), encoder=create_encoder(encoder_name, device),
                                               meta=meta, db=db, sources=sources),
                    decode_batch=cfg.engine.decode_batch if decoder_name == "dali" else 1,
                    refusal=tree.refusal, make_detector=make_detector if detectors > 1 else None)
    # What exists now (modules, configuration, models) lives as long as the process: kept out of
    # the garbage collector's full passes, which otherwise walk those ~10^5 objects again and
    # again while images stream (3-4% of a 12-image run's time on 2 cores).
    gc.freeze()
    gc.enable()                           # `sladd run` turns it off while it starts (engine.cli)
    return worker, cfg


def cpu_threads(cores: int) -> tuple[int, int]:
    """(detect threads, inference threads of each) that a CPU run takes by default on `cores`."""
    detectors = 2 if cores >= 2 else 1
    return detectors, max(1, cores // detectors)


def _large_passes(threads: int, streams: int):
    """engine.runtime auto on the CPU: CenterFace's adapter asks this for OpenVINO sessions for its
    large passes (engine.runtimes.ov_passes); None where OpenVINO is missing or not faster here."""
    def make(model_path, graph, view=None):
        try:
            from engine.runtimes.openvino import large_passes_chosen

            if not large_passes_chosen(threads, model_path):
                from engine import ov_prefetch

                ov_prefetch.release(drop=True)
                return None
            from engine.runtimes.ov_passes import LargePasses

            return LargePasses(graph, threads=threads, streams=streams, view=view)
        except Exception as exc:  # noqa: BLE001 - OpenVINO is an optimisation: ONNX Runtime runs it all
            LOG.warning("OpenVINO could not start (%s: %s): ONNX Runtime runs CenterFace's large passes",
                        type(exc).__name__, exc)
            from engine import ov_prefetch

            ov_prefetch.release(drop=True)
            return None
    return make


def model_sources(slots, names) -> dict:
    """Class name -> where its detections come from, for the detections record: the model card
    and the model file's SHA-256 (computed once per run)."""
    from engine.models.resolve import sha256_file

    out = {}
    for slot in slots:
        path = getattr(slot.adapter, "model_path", None)
        sha = sha256_file(Path(path)) if path and Path(path).is_file() else None
        for i in getattr(slot, "name_ids", ()):
            i = int(i)
            if 0 <= i < len(names) and names[i] not in out:
                out[names[i]] = {"kind": "model", "card": slot.card.name, "sha256": sha}
    return out
