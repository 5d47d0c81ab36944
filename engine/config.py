"""Typed, validated configuration.

The keys and defaults are the reference system's (REFERENCE_NPRA.md §9) with its fixes, plus a
few sladd sections (`models`, `output`, `engine`). Loading happens at the edge (CLI): the
shipped profile (`config/default.yml` or `config/360.yml`) is read first, then a `-k` file
overrides only the keys it names (fix 17). Keys that meant something only to the reference
system are accepted with a deprecation warning; unknown keys and invalid values are errors
that name the key, the rule, the value seen and the fix.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["Config", "ConfigError", "load_config", "CONFIG_DIR", "DEPRECATED_KEYS"]

LOG = logging.getLogger("sladd")
def _config_dir() -> Path:
    """config/ of the checkout, or the copy a wheel installs as engine.config_data."""
    checkout = Path(__file__).resolve().parent.parent / "config"
    if (checkout / "default.yml").is_file():
        return checkout
    import importlib.util

    spec = importlib.util.find_spec("engine.config_data")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("sladd's configuration files are missing (config/ or engine.config_data): reinstall sladd")
    return Path(list(spec.submodule_search_locations)[0])


CONFIG_DIR = _config_dir()

# Reference keys that no longer mean anything in sladd, with the reason shown to the user.
DEPRECATED_KEYS = {
    "force_remask": "reruns are driven by the ledger; use `sladd run --force` to redo finished images",
    "lazy_paths": "the input tree is always walked lazily (streamed)",
    "enable_async": "outputs are always written by a thread pool (see `engine.writers`)",
    "max_num_async_workers": "use `engine.writers` for the number of output threads",
    "model_type": "the TensorFlow Mask R-CNN models are gone; choose models under `models`",
}


class ConfigError(ValueError):
    """Invalid configuration; the message names the key, the rule, the value and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """One detector in the run. `card` is a shipped card name or a path to a card YAML."""

    card: str
    file: Optional[str] = None              # overrides the card's file (explicit path)
    score_threshold: Optional[float] = Field(None, ge=0.0, le=1.0)
    scale: Optional[float] = Field(None, gt=0.0, le=4.0)
    input_size: Optional[tuple[int, int]] = None
    classes: Optional[list[str]] = None     # overrides the card's anonymised classes
    tta_flip: Optional[bool] = None         # also run on the mirrored image (test-time augmentation)
    merge: Optional[Literal["nms", "wbf", "envelope"]] = None   # see the model card's `merge`
    optional: bool = False                  # a missing model file is a warning, not an error


class OutputSpec(_Strict):
    # "auto" matches the input's JPEG quality (estimated from its quantisation tables); fix 13.
    quality: int | Literal["auto"] = "auto"
    min_quality: int = Field(75, ge=1, le=100)
    # Images with nothing to mask are copied byte for byte: no generational loss, metadata exact.
    copy_unmasked: bool = True
    # auto: nvImageCodec (nvJPEG, device frames encoded on the GPU) on cuda when installed,
    # else TurboJPEG; nvimagecodec on cpu uses its CPU-only backend.
    encoder: Literal["auto", "turbojpeg", "nvimagecodec"] = "auto"
    extensions: list[str] = [".jpg", ".jpeg"]

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


class MaskSpec(_Strict):
    # Per-region kernel floor as a fraction of the region's shorter side (0 = the reference's
    # image-width kernel only). See kernels.draw.region_ksize.
    min_kernel_fraction: float = Field(0.5, ge=0.0, le=2.0)
    mode: Optional[Literal["pixelate"]] = None      # None = the reference keys decide


class MetadataSpec(_Strict):
    # "old": the pre-2022 variant (ImageProperties first; the reference's anonymise_old).
    format: Literal["v2", "old"] = "v2"


class DatabaseSpec(_Strict):
    # null: an embedded SQLite file, OUTPUT/.sladd/<table_name>.sqlite. Otherwise
    # postgresql://USER@HOST[:PORT]/DB or oracle://USER@HOST[:PORT]/SERVICE (or sqlite:///FILE).
    url: Optional[str] = None
    password_env: str = "SLADD_DB_PASSWORD"     # the password comes from this variable, never the file
    table_definition: Optional[str] = None      # shipped name or YAML path; default: table_name
    encrypted_config: Optional[str] = None      # the reference's db_config.py (Fernet, key in ORACLE_KEY)
    create_table: bool = True                   # CREATE TABLE IF NOT EXISTS on SQLite/PostgreSQL


class EmailSpec(_Strict):
    # The reference kept these in config/email_config.py; here they are config keys.
    smtp_host: Optional[str] = None
    port: int = Field(25, ge=1, le=65535)
    from_address: str = "sladd@localhost"
    to_addresses: list[str] = []
    starttls: bool = False
    cafile: Optional[str] = None                  # CA bundle to trust for STARTTLS (default: the system's)
    username: Optional[str] = None
    password_env: str = "SLADD_SMTP_PASSWORD"     # the SMTP password is read from this variable


class EngineSpec(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: DALI on cuda (frames decoded into GPU memory) when installed, else TurboJPEG;
    # dali on cpu runs DALI's CPU-only mode.
    decoder: Literal["auto", "turbojpeg", "dali"] = "auto"
    decode_batch: int = Field(8, ge=1, le=256)    # images per DALI decode run
    runtime: Literal["auto", "onnxruntime", "tensorrt"] = "auto"   # auto: tensorrt on cuda when installed
    precision: Literal["fp32", "fp16", "int8"] = "fp16"     # TensorRT plans only
    calibration_images: Optional[str] = None      # int8: a folder of sample JPEGs for calibration
    queue_size: int = Field(8, ge=1, le=1024)
    decoders: int = Field(1, ge=1, le=64)
    writers: int = Field(2, ge=1, le=64)
    inference_threads: Optional[int] = Field(None, ge=1, le=256)
    # Views (tiles, images) per model call; null = auto: 1 on the CPU (as fast on few cores),
    # 8 on cuda (frames and crops of several images per TensorRT/ONNX Runtime call).
    batch_size: Optional[int] = Field(None, ge=1, le=256)
    max_image_pixels: int = Field(200_000_000, ge=1)


class Config(_Strict):
    # --- reference keys (§9), defaults of config/default_config.yml with fixes -------------
    data_eier: Optional[str] = None
    fylkesnummer: Optional[int] = None
    force_fylke: bool = False
    image_type: str = "Planar"
    draw_mask: bool = True
    delete_input: bool = False
    file_access_retry_seconds: float = Field(10, gt=0)
    file_access_timeout_seconds: float = Field(60, ge=0)
    datetime_format: str = "%Y-%m-%d %H.%M.%S"
    log_file_name: str = "{datetime}_{hostname}.log"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "DEBUG"
    application_version: str = "0.2"
    exif_mappenavn: str = "Vegbilder/{relative_input_dir}"
    exif_top_dir: str = "tilSladding"
    remove_imagetype_filepath: bool = False
    flip_wkt: bool = False
    remote_json: bool = True
    local_json: bool = False
    archive_json: bool = False
    remote_preview: bool = False
    local_preview: bool = False
    archive_preview: bool = False
    separate_preview_directory: Optional[str] = None
    preview_dim: Optional[tuple[int, int]] = (2520, 1400)
    preview_center: tuple[float, float] = (0.45, 0.5)
    mask_dilation_pixels: int = Field(4, ge=0, le=1000)
    max_num_pixels: int = Field(1_000_000_000, ge=1)
    use_cutouts: bool = False
    cutout_step_factor: tuple[int, int] = (1500, 1300)
    cutout_dim_downscale: tuple[int, int] = (3, 2)
    mask_color: Optional[tuple[int, int, int]] = None
    blur: Optional[int] = Field(15, ge=1, le=1000)
    gray_blur: bool = True
    normalized_gray_blur: bool = True
    uncaught_exception_email: bool = False
    processing_error_email: bool = False
    finished_email: bool = False
    email_attach_log_file: bool = False
    write_exif_to_db: bool = False
    db_max_n_accumulated_rows: int = Field(100, ge=1)
    db_max_n_errors: int = Field(1000, ge=0)
    db_max_cache_size: int = Field(1000, ge=0)
    table_name: Optional[str] = "VEGBILDER"
    table_primary_key: str = "bildeid"
    # --- sladd sections ----------------------------------------------------------------------
    models: list[ModelSpec] = [ModelSpec(card="centerface-fast"), ModelSpec(card="nanodet", optional=True)]
    output: OutputSpec = OutputSpec()
    mask: MaskSpec = MaskSpec()
    metadata: MetadataSpec = MetadataSpec()
    database: DatabaseSpec = DatabaseSpec()
    email: EmailSpec = EmailSpec()
    engine: EngineSpec = EngineSpec()

    @field_validator("mask_color")
    @classmethod
    def _color(cls, v):
        if v is not None and any(not 0 <= c <= 255 for c in v):
            raise ValueError("each channel must be 0..255")
        return v

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


_FIXES = {
    "blur": "an integer 1..1000 (kernel = blur/1000 x image width), or null for colour fill",
    "mask_dilation_pixels": "an integer 0..1000",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR",
    "device": "one of auto, cpu, cuda",
}


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key `{key}` (value {e.get('input')!r}): remove it or check its spelling "
                         f"against config/default.yml")
            continue
        leaf = str(e["loc"][-1]) if e["loc"] else ""
        fix = _FIXES.get(leaf)
        msg = e["msg"].replace("Value error, ", "")
        line = f"  `{key}`: {msg}, got {e.get('input')!r}"
        if fix:
            line += f"; expected {fix}"
        lines.append(line)
    return "\n".join(lines)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def _drop_deprecated(data: dict[str, Any], source: str, warn: bool) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if key in DEPRECATED_KEYS:
            if warn:
                LOG.warning("config key `%s` in %s is deprecated and ignored: %s", key, source,
                            DEPRECATED_KEYS[key])
            continue
        out[key] = value
    return out


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Override only the keys named; nested sections merge key by key (lists are replaced)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | os.PathLike | None = None, *, profile: str | None = None,
                overrides: dict[str, Any] | None = None) -> tuple[Config, Path]:
    """Load the shipped profile, then the user's file on top. Returns (config, file for `versjon`).

    `profile` is "default" or "360"; when None it is "360" if the user file sets
    `image_type: "360"`, else "default".
    """
    user: dict[str, Any] = {}
    user_path = Path(path) if path else None
    if user_path is not None:
        user = _drop_deprecated(_read_yaml(user_path), str(user_path), warn=True)
    if profile is None:
        profile = "360" if str(user.get("image_type", "")) == "360" else "default"
    if profile not in ("default", "360"):
        raise ConfigError(f"unknown profile {profile!r}: use `default` or `360`")
    base_path = CONFIG_DIR / f"{profile}.yml"
    merged = _read_yaml(CONFIG_DIR / "default.yml")
    if profile != "default":
        merged = _merge(merged, _read_yaml(base_path))
    merged = _merge(_drop_deprecated(merged, str(base_path), warn=False), user)
    if overrides:
        merged = _merge(merged, overrides)
    try:
        cfg = Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, str(user_path or base_path))) from None
    return cfg, (user_path or base_path)
