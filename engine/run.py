"""`sladd run`: build the stages from the configuration and run the stream."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

from engine.config import CONFIG_DIR, Config
from engine.meta.record import MetaContext
from engine.decode import create_decoder
from engine.detect import Detector, build_models
from engine.ledger import Ledger
from engine.models import create_runtime
from engine.pipeline import Pipeline, RunStats, ledger_path
from engine.progress import Progress
from engine.walk import Tree
from engine.write import Writer

__all__ = ["choose_device", "run", "summary_lines", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_ABORTED"]

LOG = logging.getLogger("sladd")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3



def choose_device(requested: str) -> str:
    """`cuda` needs a usable GPU (error otherwise); `auto` picks it when usable and says why."""
    try:
        import onnxruntime as ort
        cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        cuda_ep = False
    from kernels._xp import cupy_or_none

    gpu = cupy_or_none() is not None
    if requested == "cuda":
        if not (cuda_ep and gpu):
            raise RuntimeError("--device cuda: no usable NVIDIA GPU "
                               f"(ONNX Runtime CUDA provider: {'yes' if cuda_ep else 'no'}, CuPy device: "
                               f"{'yes' if gpu else 'no'}); install 'sladd[gpu]' on a GPU host or use --device cpu")
        return "cuda"
    if requested == "cpu":
        return "cpu"
    if cuda_ep and gpu:
        LOG.info("device auto -> cuda (ONNX Runtime CUDA provider and a CuPy device are available)")
        return "cuda"
    LOG.info("device auto -> cpu (%s)", "no ONNX Runtime CUDA provider" if not cuda_ep else "no usable CUDA device")
    return "cpu"


def choose_runtime(requested: str, device: str) -> str:
    """`tensorrt` needs cuda; `auto` takes TensorRT on cuda when it is installed, else ONNX Runtime."""
    if requested == "tensorrt" and device != "cuda":
        raise RuntimeError("engine.runtime tensorrt needs a GPU (--device cuda)")
    if requested != "auto":
        return requested
    if device == "cuda":
        import importlib.util
        if importlib.util.find_spec("tensorrt") is not None:
            LOG.info("runtime auto -> tensorrt")
            return "tensorrt"
        LOG.info("runtime auto -> onnxruntime (CUDA provider; TensorRT is not installed)")
    return "onnxruntime"


def check_run_config(cfg: Config, archive_dir: Optional[Path]) -> None:
    """The reference's check_config rules that depend on the command line."""
    if archive_dir is None:
        for key in ("archive_json", "archive_preview"):
            if getattr(cfg, key):
                raise ValueError(f"{key}: true needs an archive folder (-a ARCHIVE); set it to false or pass -a")
    if (cfg.remote_preview or cfg.local_preview or cfg.archive_preview or cfg.separate_preview_directory) \
            and cfg.preview_dim is None:
        raise ValueError("previews are enabled but preview_dim is null; set preview_dim: [width, height]")


def run(cfg: Config, input_dir: Path, output_dir: Path, archive_dir: Optional[Path] = None, *,
        force: bool = False, retry_failed: bool = False, progress: Optional[Progress] = None,
        config_file: Optional[Path] = None, notifier=None) -> RunStats:
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_run_config(cfg, archive_dir)
    if cfg.delete_input and archive_dir is None:
        raise ValueError("delete_input: true needs an archive folder (-a ARCHIVE), as in the reference: the "
                         "original is kept there before the input is removed")
    if not input_dir.exists():
        from engine.fsutil import PathNotReachable, wait_for_path
        try:
            wait_for_path(input_dir, cfg.file_access_retry_seconds, cfg.file_access_timeout_seconds, "input folder")
        except PathNotReachable as exc:
            raise FileNotFoundError(str(exc)) from None
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} is not a folder")
    device = choose_device(cfg.engine.device)
    runtime = create_runtime(choose_runtime(cfg.engine.runtime, device), device=device,
                             threads=cfg.engine.inference_threads)
    slots, names = build_models(cfg, runtime)
    detector = Detector(cfg, slots, names)
    output_dir.mkdir(parents=True, exist_ok=True)
    tree = Tree(input_dir, output_dir, archive_dir, cfg.output.extensions)
    ledger = Ledger(ledger_path(output_dir))

    def make_decoder():
        return _ScaledDecoder(detector, cfg.engine.max_image_pixels, cfg.engine.decoder)

    meta = MetaContext.from_config(cfg, config_file or CONFIG_DIR / "default.yml")
    db = None
    if cfg.write_exif_to_db:
        from engine.db.connect import sink_from_config

        db = sink_from_config(cfg, output_dir, ledger_path(output_dir).parent / "db_spool.sqlite")
        if not cfg.data_eier and any(c.formatter == "Dataeier" and c.not_null for c in db.table.columns):
            LOG.warning("data_eier is null but column Dataeier is NOT NULL: every database row will be rejected "
                        "(the images and JSON are still written); set data_eier")
    pipe = Pipeline(tree=tree, ledger=ledger, make_decoder=make_decoder, detector=detector,
                    make_writer=lambda: Writer(cfg, make_decoder(), meta=meta, db=db is not None),
                    queue_size=cfg.engine.queue_size,
                    decoders=cfg.engine.decoders, writers=cfg.engine.writers, force=force,
                    retry_failed=retry_failed, progress=progress, batch_size=cfg.engine.batch_size, db=db,
                    delete_input=cfg.delete_input, retry_seconds=cfg.file_access_retry_seconds,
                    timeout_seconds=cfg.file_access_timeout_seconds, notifier=notifier)
    if progress is not None:
        import threading

        threading.Thread(target=lambda: progress.set_total(tree.count()), daemon=True,
                         name="sladd-count").start()
    try:
        return pipe.run()
    finally:
        ledger.close()
        if db is not None:
            db.close()


class _ScaledDecoder:
    """The configured decoder; with TurboJPEG the DCT scale is chosen per image from what the
    models need (DALI always decodes at full resolution)."""

    def __init__(self, detector: Detector, max_pixels: int, name: str = "turbojpeg"):
        self._inner = create_decoder(name, min_scale=1.0, max_pixels=max_pixels)
        self.name = name
        self.detector = detector

    def decode(self, job, data):
        if self.name != "turbojpeg":
            return self._inner.decode(job, data)
        from fractions import Fraction

        from engine.jpeg import parse_jpeg

        info = parse_jpeg(data)
        need = self.detector.needed_scale(info.height, info.width)
        ok = sorted(f for f in (Fraction(n, d) for n, d in self._inner.tj.scaling_factors)
                    if Fraction(need).limit_denominator(64) <= f <= 1)
        self._inner.scale = ok[0] if ok else Fraction(1)
        return self._inner.decode(job, data, info)      # the header is parsed once

    def full_pixels(self, frame):
        return self._inner.full_pixels(frame)


def summary_lines(stats: RunStats, input_dir, output_dir, archive_dir, ledger: Path) -> list[str]:
    rate = stats.processed / stats.seconds if stats.seconds > 0 else 0.0
    lines = [
        "Anonymisation finished",
        f"Input folder: {input_dir}",
        f"Output folder: {output_dir}",
        f"Archive folder: {archive_dir or '-'}",
        f"Identified images: {stats.found}",
        f"Anonymised (pixels masked): {stats.anonymised}",
        f"Nothing to mask (copied unchanged): {stats.unchanged}",
        f"Skipped, done earlier: {stats.skipped_done}",
        f"Skipped, failed earlier (use --retry-failed): {stats.skipped_failed}",
        f"Failed: {stats.failed}",
        f"DB rows written {stats.db_written}, rejected {stats.db_rejected}, pending {stats.db_pending}",
        f"Objects found: {', '.join(f'{k} {v}' for k, v in sorted(stats.detections.items())) or 'none'}",
        f"Total time spent: {stats.seconds:.1f} s ({rate:.2f} images/s)",
        f"Ledger: {ledger}",
    ]
    if stats.fatal:
        lines.append(f"Run stopped early: {stats.fatal}")
    if stats.failed:
        lines.append(f"Failed images are listed in the ledger and copied to {Path(output_dir).resolve()}_error")
    return lines


def is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
