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
from engine.lock import RunLock
from engine.models import create_runtime
from engine.pipeline import Pipeline, RunStats, ledger_path
from engine.progress import Progress
from engine.walk import Tree
from engine.write import Writer, create_encoder

__all__ = ["choose_device", "choose_decoder", "choose_encoder", "choose_runtime", "gpu_components", "run",
           "summary_lines", "check_roots", "UsageError", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_ABORTED"]

LOG = logging.getLogger("sladd")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3
GPU_BATCH = 8                      # engine.batch_size: null (auto) on cuda


class _Interrupted:
    """Which signal stopped the run (set by the CLI's handler), for the summary."""
    reason: Optional[str] = None


INTERRUPTED = _Interrupted()



def gpu_components() -> dict[str, bool]:
    """What the GPU path can use here: a CuPy-visible device, TensorRT, ONNX Runtime's CUDA
    provider, DALI. Nothing is initialised beyond what answering needs."""
    import importlib.util

    from kernels._xp import cupy_or_none

    try:
        import onnxruntime as ort
        ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        ort_cuda = False

    def has(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    return {"cupy": cupy_or_none() is not None, "tensorrt": has("tensorrt"), "onnxruntime-cuda": ort_cuda,
            "dali": has("nvidia.dali"), "nvimagecodec": has("nvidia.nvimgcodec")}


def _describe(c: dict[str, bool]) -> str:
    return ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in c.items())


def choose_device(requested: str, components: Optional[dict[str, bool]] = None) -> str:
    """`cuda` needs CuPy with a usable device and a GPU runtime (TensorRT or ONNX Runtime's CUDA
    provider): an error naming what is missing otherwise, never a silent fallback. `auto` picks
    cuda when that holds and logs the choice and why, once per run."""
    if requested == "cpu":
        return "cpu"
    c = components if components is not None else gpu_components()
    usable = c["cupy"] and (c["tensorrt"] or c["onnxruntime-cuda"])
    if requested == "cuda":
        if not usable:
            missing = (["a usable NVIDIA GPU seen by CuPy (pip install 'sladd[gpu]'; check nvidia-smi)"]
                       if not c["cupy"] else [])
            if not (c["tensorrt"] or c["onnxruntime-cuda"]):
                missing.append("a GPU model runtime: TensorRT (NVIDIA's image, see Dockerfile.gpu) or "
                               "onnxruntime-gpu with its CUDA provider")
            raise RuntimeError(f"--device cuda: missing {' and '.join(missing)} ({_describe(c)}); "
                               "or run with --device cpu")
        LOG.info("device cuda (%s)", _describe(c))
        return "cuda"
    if requested != "auto":
        raise ValueError(f"unknown device {requested!r}; valid: auto, cpu, cuda")
    if usable:
        LOG.info("device auto -> cuda (%s)", _describe(c))
        return "cuda"
    LOG.info("device auto -> cpu (%s)", _describe(c))
    return "cpu"


def choose_decoder(requested: str, device: str, components: Optional[dict[str, bool]] = None) -> tuple[str, str]:
    """(decoder name, DALI device). `auto`: DALI decoding into GPU memory on cuda when DALI is
    installed, else TurboJPEG (faster than DALI's CPU mode on the host: 49 vs 31-35 img/s)."""
    if requested == "auto":
        c = components if components is not None else gpu_components()
        requested = "dali" if device == "cuda" and c["dali"] else "turbojpeg"
        LOG.info("decoder auto -> %s", "dali (nvJPEG, frames stay in GPU memory)" if requested == "dali"
                 else "turbojpeg (host)")
    return requested, ("mixed" if device == "cuda" else "cpu")


def choose_runtime(requested: str, device: str, components: Optional[dict[str, bool]] = None) -> str:
    """`tensorrt` needs cuda; `auto` takes TensorRT on cuda when it is installed, else ONNX Runtime
    (its CUDA provider on cuda)."""
    if requested == "tensorrt" and device != "cuda":
        raise RuntimeError("engine.runtime tensorrt needs a GPU (--device cuda)")
    if requested != "auto":
        return requested
    if device == "cuda":
        c = components if components is not None else gpu_components()
        if c["tensorrt"]:
            LOG.info("runtime auto -> tensorrt")
            return "tensorrt"
        LOG.info("runtime auto -> onnxruntime (CUDA provider; TensorRT is not installed)")
    return "onnxruntime"


def choose_encoder(requested: str, device: str, components: Optional[dict[str, bool]] = None) -> str:
    """`auto`: nvImageCodec on cuda when installed (masked device frames are encoded on the GPU;
    only the JPEG comes back), else TurboJPEG on the host."""
    if requested != "auto":
        return requested
    c = components if components is not None else gpu_components()
    name = "nvimagecodec" if device == "cuda" and c.get("nvimagecodec") else "turbojpeg"
    LOG.info("encoder auto -> %s", "nvimagecodec (nvJPEG on the GPU)" if name == "nvimagecodec" else "turbojpeg (host)")
    return name


class UsageError(ValueError):
    """The command line or configuration cannot work; nothing was touched (exit 2)."""


def _same_or_inside(inner: Path, outer: Path) -> bool:
    """True when `inner` is `outer` or lies below it: by resolved path, and by device and inode
    for each of inner's ancestors (bind mounts and aliases that resolve() cannot see)."""
    inner, outer = inner.resolve(), outer.resolve()
    if inner == outer or outer in inner.parents:
        return True
    try:
        o = os.stat(outer)
    except OSError:
        return False                     # does not exist (yet): cannot contain an existing folder
    for d in (inner, *inner.parents):
        try:
            s = os.stat(d)
        except OSError:
            continue
        if (s.st_dev, s.st_ino) == (o.st_dev, o.st_ino):
            return True
    return False


def check_roots(input_dir: Path, output_dir: Path, archive_dir: Optional[Path]) -> None:
    """Refuse, before anything is written, trees whose outputs would land on the inputs.

    Output i goes to OUTPUT/<rel>, so with OUTPUT == INPUT every original is overwritten, and with
    INPUT inside OUTPUT an input folder can be a mirror target (INPUT = OUT/x and a file x/a.jpg
    in the input maps onto OUT/x/a.jpg = INPUT/a.jpg). The archive and the error tree
    (OUTPUT_error) follow the same rule. An output inside the input is fine: the walk skips it.
    """
    from engine.walk import error_root

    targets = [("-o/--output", output_dir), ("the error tree", error_root(Path(output_dir).resolve()))]
    if archive_dir is not None:
        targets.append(("-a/--archive", archive_dir))
    for what, root in targets:
        if _same_or_inside(Path(input_dir), Path(root)):
            raise UsageError(f"{what} {root} is the input folder {input_dir} or contains it: outputs would "
                             "overwrite the originals; choose a folder outside the input tree")
    if archive_dir is not None and Path(archive_dir).resolve() == Path(output_dir).resolve():
        raise UsageError("-a/--archive must differ from -o/--output")


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
        config_file: Optional[Path] = None, notifier=None, wait_lock: bool = False) -> RunStats:
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    try:
        check_run_config(cfg, archive_dir)
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if cfg.delete_input and archive_dir is None:
        raise UsageError("delete_input: true needs an archive folder (-a ARCHIVE), as in the reference: the "
                         "original is kept there before the input is removed")
    if not input_dir.exists():
        from engine.fsutil import PathNotReachable, wait_for_path
        try:
            wait_for_path(input_dir, cfg.file_access_retry_seconds, cfg.file_access_timeout_seconds, "input folder")
        except PathNotReachable as exc:
            raise FileNotFoundError(str(exc)) from None
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} is not a folder")
    check_roots(input_dir, output_dir, archive_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Taken before the models load, so a second run on the same output is refused at once.
    lock = RunLock(output_dir, wait=wait_lock).acquire()
    try:
        return _run_locked(cfg, input_dir, output_dir, archive_dir, force=force, retry_failed=retry_failed,
                           progress=progress, config_file=config_file, notifier=notifier)
    finally:
        lock.release()


def _run_locked(cfg: Config, input_dir: Path, output_dir: Path, archive_dir: Optional[Path], *, force: bool,
                retry_failed: bool, progress, config_file, notifier) -> RunStats:
    components = gpu_components() if cfg.engine.device != "cpu" else None
    device = choose_device(cfg.engine.device, components)
    if cfg.engine.batch_size is None:
        # auto: batches pay on a GPU; on a few CPU cores batch 1 is as fast and uses less memory.
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"batch_size": GPU_BATCH if device == "cuda" else 1})})
    decoder_name, dali_device = choose_decoder(cfg.engine.decoder, device, components)
    encoder_name = choose_encoder(cfg.output.encoder, device, components)
    create_encoder(encoder_name, device)          # fails here, not once per image, if it cannot start
    runtime_name = choose_runtime(cfg.engine.runtime, device, components)
    trt_opts = ({"precision": cfg.engine.precision, "calibration_images": cfg.engine.calibration_images,
                 "max_batch": cfg.engine.batch_size} if runtime_name == "tensorrt" else {})
    runtime = create_runtime(runtime_name, device=device, threads=cfg.engine.inference_threads, **trt_opts)
    slots, names = build_models(cfg, runtime)
    detector = Detector(cfg, slots, names)
    tree = Tree(input_dir, output_dir, archive_dir, cfg.output.extensions, follow_symlinks=cfg.input_follow_symlinks)
    ledger = Ledger(ledger_path(output_dir))

    def make_decoder():
        return _ScaledDecoder(detector, cfg.engine.max_image_pixels, decoder_name, dali_device=dali_device,
                              batch=cfg.engine.decode_batch)

    meta = MetaContext.from_config(cfg, config_file or CONFIG_DIR / "default.yml")
    db = None
    if cfg.write_exif_to_db:
        from engine.db.connect import sink_from_config

        db = sink_from_config(cfg, output_dir, ledger_path(output_dir).parent / "db_spool.sqlite")
        if not cfg.data_eier and any(c.formatter == "Dataeier" and c.not_null for c in db.table.columns):
            LOG.warning("data_eier is null but column Dataeier is NOT NULL: every database row will be rejected "
                        "(the images and JSON are still written); set data_eier")
    pipe = Pipeline(tree=tree, ledger=ledger, make_decoder=make_decoder, detector=detector,
                    make_writer=lambda: Writer(cfg, make_decoder(), encoder=create_encoder(encoder_name, device),
                                               meta=meta, db=db is not None),
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
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM (docker stop, systemd, Kubernetes): the images in flight were
        # finished or left to the next run; report what was done.
        pipe.stats.fatal = pipe.stats.fatal or f"interrupted ({INTERRUPTED.reason or 'SIGINT'}); rerun to continue"
        return pipe.stats
    finally:
        ledger.close()
        if db is not None:
            db.close()


class _ScaledDecoder:
    """The configured decoder; with TurboJPEG the DCT scale is chosen per image from what the
    models need (DALI always decodes at full resolution)."""

    def __init__(self, detector: Detector, max_pixels: int, name: str = "turbojpeg", *, dali_device: str = "cpu",
                 batch: int = 8):
        # DALI's own worker threads (Huffman decoding on the host for nvJPEG's hybrid path).
        kw = {"device": dali_device, "batch": batch, "threads": max(2, min(8, os.cpu_count() or 2))} \
            if name == "dali" else {}
        self._inner = create_decoder(name, min_scale=1.0, max_pixels=max_pixels, **kw)
        self.name = name
        self.detector = detector
        if hasattr(self._inner, "decode_batch"):
            self.decode_batch = self._inner.decode_batch     # DALI: several images per run
            self.batch = self._inner.batch

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
    from engine.fsutil import escape_line

    rate = stats.processed / stats.seconds if stats.seconds > 0 else 0.0
    lines = [
        "Anonymisation finished",
        f"Input folder: {escape_line(input_dir)}",
        f"Output folder: {escape_line(output_dir)}",
        f"Archive folder: {escape_line(archive_dir) if archive_dir else '-'}",
        f"Identified images: {stats.found}",
        f"Anonymised (pixels masked): {stats.anonymised}",
        f"Nothing to mask (copied unchanged): {stats.unchanged}",
        f"Skipped, done earlier: {stats.skipped_done}",
        f"Skipped, failed earlier (use --retry-failed): {stats.skipped_failed}",
        f"Skipped, symbolic links or not regular files: {len(stats.skipped_links)}",
        f"Failed: {stats.failed}" + (f" (of which {stats.no_space} found no space to be written; the next run "
                                     "tries them again)" if stats.no_space else ""),
        f"DB rows written {stats.db_written}, rejected {stats.db_rejected}, pending {stats.db_pending}",
        f"Objects found: {', '.join(f'{k} {v}' for k, v in sorted(stats.detections.items())) or 'none'}",
        f"Total time spent: {stats.seconds:.1f} s ({rate:.2f} images/s)",
        f"Ledger: {escape_line(ledger)}",
    ]
    if stats.unlisted:
        # Paths in stats.unlisted are already escaped for one line (Tree.paths).
        lines.append(f"Run incomplete: {len(stats.unlisted)} folder(s) could not be listed; their images were "
                     "not processed (fix the access rights, then rerun):")
        lines += [f"  cannot list folder {folder}: {reason}" for folder, reason in stats.unlisted[:20]]
        if len(stats.unlisted) > 20:
            lines.append(f"  ... and {len(stats.unlisted) - 20} more (see the log)")
    if stats.fatal:
        lines.append(f"Run stopped early: {stats.fatal}")
    if stats.failed > stats.no_space:
        lines.append(f"Failed images are listed in the ledger and copied to "
                     f"{escape_line(Path(output_dir).resolve())}_error")
    return lines


def is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
