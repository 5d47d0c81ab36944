"""Typed, validated configuration.

The keys and defaults are the reference system's (REFERENCE_NPRA.md §9) with its fixes, plus a
few sladd sections (`models`, `output`, `engine`). Loading happens at the edge (CLI): the
shipped profile (`config/default.yml` or `config/360.yml`) is read first, then a `-k` file
overrides only the keys it names (fix 17). Keys that meant something only to the reference
system are accepted with a deprecation warning; unknown keys and invalid values are errors
that name the key, the rule, the value seen and the fix.

A config file is untrusted input: it is read as UTF-8 of at most 1 MiB, its YAML alias expansion
is bounded before anything is built (no "billion laughs"), booleans must be real booleans,
SQL identifiers and str.format templates are checked here, at load, and no message echoes more
than a short, redacted prefix of a value.
"""
from __future__ import annotations

import logging
import os
import re
import string
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

__all__ = ["Config", "ConfigError", "load_config", "CONFIG_DIR", "DEPRECATED_KEYS", "safe_load_yaml", "read_yaml_file",
           "check_identifier", "check_template", "TEMPLATE_FIELDS", "redacted_dump"]

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


# --- rules for values that reach SQL, file names and str.format ------------------------------
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}", re.ASCII)
IDENT_RULE = "an SQL identifier: ASCII letters, digits and _, not starting with a digit, 1..63 characters"


def check_identifier(value: Any, what: str) -> str:
    """`value` if it is a plain SQL identifier (table, schema, column), else ValueError naming
    `what`. Plain names need no quoting in any dialect, cannot be paths and keep the embedded
    SQLite file (OUTPUT/.sladd/<table_name>.sqlite) inside OUTPUT/.sladd."""
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise ValueError(f"{what} must be {IDENT_RULE}, got {short_repr(value)}; use a plain name such as VEGBILDER")
    return value


# The fields each str.format template of the configuration is given (REFERENCE_NPRA.md §1.6, §8),
# with a sample value of the type it has at run time, for the trial format at load.
TEMPLATE_FIELDS: dict[str, dict[str, Any]] = {
    "exif_mappenavn": {"aar": 2022, "maaned": 6, "dag": 1, "fylke": "50", "vegkat": "E", "vegstat": "V",
                       "vegnr": "6", "meter": "1234.57", "feltkode": "1", "strekningreferanse": "S1/D1",
                       "hp": "5", "relative_input_dir": "2022/Planar/EV00006"},
    "log_file_name": {"datetime": "2022-06-01_120000", "hostname": "host"},
}
_MAX_WIDTH = 64                 # widths and precisions of a format spec
_MAX_TEMPLATE = 512
_SPEC = re.compile(r"(?:[^{}\n]?[<>=^])?[-+ ]?z?#?0?(?P<width>\d+)?[,_]?(?:\.(?P<prec>\d+))?[bcdeEfFgGnosxX%]?")


def check_template(template: Any, key: str) -> str:
    """`template` if it is a str.format template using only the documented fields of config key
    `key` (TEMPLATE_FIELDS), by name, without attribute or index access and with widths and
    precisions of at most 64; else ValueError saying which rule it breaks. `log_file_name`
    must also give a plain file name (no `/`, `\\` or `..`): the log stays inside `-l`."""
    fields = TEMPLATE_FIELDS[key]
    allowed = ", ".join("{" + f + "}" for f in fields)
    if not isinstance(template, str):
        raise ValueError(f"must be a text template using {allowed}")
    if len(template) > _MAX_TEMPLATE:
        raise ValueError(f"must be at most {_MAX_TEMPLATE} characters long")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"is not a valid template ({exc}; write a literal brace as {{{{ or }}}})") from None
    for literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in fields:
            raise ValueError(f"may use only the fields {allowed} (by name, no attribute or index access), "
                             f"found {{{short_text(name, 40)}}}")
        if conversion not in (None, "s", "r", "a"):
            raise ValueError(f"field {{{name}}}: unknown conversion !{short_text(conversion, 5)}")
        m = _SPEC.fullmatch(spec or "")
        if m is None:
            raise ValueError(f"field {{{name}}}: format spec {short_text(spec, 40)!r} is not a plain "
                             "[[fill]align][sign][0][width][,][.precision][type] spec")
        for what in ("width", "prec"):
            if m.group(what) is not None and int(m.group(what)) > _MAX_WIDTH:
                raise ValueError(f"field {{{name}}}: {'precision' if what == 'prec' else 'width'} "
                                 f"{short_text(m.group(what), 12)} is more than {_MAX_WIDTH}")
    try:
        sample = template.format(**fields)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"cannot be formatted ({short_text(str(exc), 80)})") from None
    if key == "log_file_name":
        literal = "".join(p[0] for p in parts)
        if any(c in literal for c in "/\\\0") or ".." in template or sample in ("", ".", ".."):
            raise ValueError("must be a plain file name inside the log folder (-l): no `/`, `\\`, `..` "
                             "or absolute path")
    return template


def short_text(text: Any, limit: int = 60) -> str:
    """`text` cut to `limit` characters, saying how long it was (never echo a huge value)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def short_repr(value: Any, limit: int = 60) -> str:
    """A short, redacted repr of a config value for messages."""
    from engine.logs import redact_text

    if isinstance(value, (dict, list, tuple)) and len(value) > 20:
        return f"<{type(value).__name__} of {len(value)} items>"
    return short_text(redact_text(repr(value)), limit)


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
    tta_flip: Optional[StrictBool] = None   # also run on the mirrored image (test-time augmentation)
    merge: Optional[Literal["nms", "wbf", "envelope"]] = None   # see the model card's `merge`
    optional: StrictBool = False            # a missing model file is a warning, not an error


class OutputSpec(_Strict):
    # "auto" matches the input's JPEG quality (estimated from its quantisation tables); fix 13.
    quality: int | Literal["auto"] = "auto"
    min_quality: int = Field(75, ge=1, le=100)
    # Images with nothing to mask are copied byte for byte: no generational loss, metadata exact.
    copy_unmasked: StrictBool = True
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
    create_table: StrictBool = True             # CREATE TABLE IF NOT EXISTS on SQLite/PostgreSQL


class EmailSpec(_Strict):
    # The reference kept these in config/email_config.py; here they are config keys.
    smtp_host: Optional[str] = None
    port: int = Field(25, ge=1, le=65535)
    from_address: str = "sladd@localhost"
    to_addresses: list[str] = []
    starttls: StrictBool = False
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
    force_fylke: StrictBool = False
    image_type: str = "Planar"
    draw_mask: StrictBool = True
    delete_input: StrictBool = False
    file_access_retry_seconds: float = Field(10, gt=0)
    file_access_timeout_seconds: float = Field(60, ge=0)
    datetime_format: str = "%Y-%m-%d %H.%M.%S"
    log_file_name: str = "{datetime}_{hostname}.log"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "DEBUG"
    application_version: str = "0.2"
    exif_mappenavn: str = "Vegbilder/{relative_input_dir}"
    exif_top_dir: str = "tilSladding"
    remove_imagetype_filepath: StrictBool = False
    flip_wkt: StrictBool = False
    remote_json: StrictBool = True
    local_json: StrictBool = False
    archive_json: StrictBool = False
    remote_preview: StrictBool = False
    local_preview: StrictBool = False
    archive_preview: StrictBool = False
    separate_preview_directory: Optional[str] = None
    preview_dim: Optional[tuple[int, int]] = (2520, 1400)
    preview_center: tuple[float, float] = (0.45, 0.5)
    mask_dilation_pixels: int = Field(4, ge=0, le=1000)
    max_num_pixels: int = Field(1_000_000_000, ge=1)
    use_cutouts: StrictBool = False
    cutout_step_factor: tuple[int, int] = (1500, 1300)
    cutout_dim_downscale: tuple[int, int] = (3, 2)
    mask_color: Optional[tuple[int, int, int]] = None
    blur: Optional[int] = Field(15, ge=1, le=1000)
    gray_blur: StrictBool = True
    normalized_gray_blur: StrictBool = True
    uncaught_exception_email: StrictBool = False
    processing_error_email: StrictBool = False
    finished_email: StrictBool = False
    email_attach_log_file: StrictBool = False
    write_exif_to_db: StrictBool = False
    db_max_n_accumulated_rows: int = Field(100, ge=1)
    db_max_n_errors: int = Field(1000, ge=0)
    db_max_cache_size: int = Field(1000, ge=0)
    table_name: Optional[str] = "VEGBILDER"
    table_primary_key: str = "bildeid"
    # --- sladd sections ----------------------------------------------------------------------
    # Follow symbolic links met while walking the input root (the walk decides the details).
    input_follow_symlinks: StrictBool = False
    models: list[ModelSpec] = [ModelSpec(card="centerface-fast"), ModelSpec(card="nanodet", optional=True)]
    output: OutputSpec = OutputSpec()
    mask: MaskSpec = MaskSpec()
    metadata: MetadataSpec = MetadataSpec()
    database: DatabaseSpec = DatabaseSpec()
    email: EmailSpec = EmailSpec()
    engine: EngineSpec = EngineSpec()

    def redacted_dump(self) -> dict[str, Any]:
        """The configuration for the log, secrets replaced by *** (see `redacted_dump`)."""
        return redacted_dump(self)

    @field_validator("table_name")
    @classmethod
    def _table_name(cls, v):
        if v is not None and not _IDENT.fullmatch(v):
            raise ValueError(f"must be {IDENT_RULE}")
        return v

    @field_validator("exif_mappenavn", "log_file_name")
    @classmethod
    def _template(cls, v, info):
        return check_template(v, info.field_name)

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
    "table_name": "a plain name such as VEGBILDER (it names the table and OUTPUT/.sladd/<table_name>.sqlite)",
    "exif_mappenavn": "a template such as \"Vegbilder/{aar}/{relative_input_dir}\"",
    "log_file_name": "a file name template such as \"{datetime}_{hostname}.log\"",
    "blur": "an integer 1..1000 (kernel = blur/1000 x image width), or null for colour fill",
    "mask_dilation_pixels": "an integer 0..1000",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR",
    "device": "one of auto, cpu, cuda",
}


_MAX_ERRORS = 20


def _format_error(err: ValidationError, source: str) -> str:
    """One line per error: key, rule, a short redacted prefix of the value seen, the fix."""
    errors = err.errors()
    lines = [f"invalid configuration in {source}:"]
    for e in errors[:_MAX_ERRORS]:
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        seen = short_repr(e.get("input"))
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key `{short_text(key, 80)}` (value {seen}): remove it or check its spelling "
                         f"against config/default.yml")
            continue
        leaf = str(e["loc"][-1]) if e["loc"] else ""
        if e["type"] == "bool_type":
            # A quoted "false" is a string: lax parsing would read it as False and, for
            # draw_mask, publish images unmasked without a word.
            lines.append(f"  `{key}`: must be a YAML boolean, got {seen}; write `{leaf}: true` or "
                         f"`{leaf}: false` without quotes (yes/no and on/off also work)")
            continue
        fix = _FIXES.get(leaf)
        msg = short_text(e["msg"].replace("Value error, ", ""), 300)
        line = f"  `{key}`: {msg}, got {seen}"
        if fix:
            line += f"; expected {fix}"
        lines.append(line)
    if len(errors) > _MAX_ERRORS:
        lines.append(f"  ... and {len(errors) - _MAX_ERRORS} more errors")
    return "\n".join(lines)


# Bounds on a config file: real ones are a few KiB and a few hundred YAML nodes. Aliases are
# counted as the nodes they expand to, so nested anchors ("billion laughs") fail in
# microseconds instead of building gigabytes.
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_NODES = 10_000
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes of the document with every alias expanded, memoised per node (linear in the
    composed graph); ConfigError past `limit` or on a recursive alias."""
    memo: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            memo[id(node)] = total = 1 + sum(memo[id(c)] for c in children)
            open_nodes.discard(id(node))
            if total > limit:
                raise ConfigError(f"expands to more than {limit} YAML nodes (nested anchors and aliases?)")
            continue
        if id(node) in memo:
            continue
        if id(node) in open_nodes:
            raise ConfigError("holds a recursive alias (an anchor used inside itself)")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in memo)
    return memo[id(root)]


def safe_load_yaml(text: str, source: str, *, max_nodes: int = MAX_YAML_NODES) -> Any:
    """yaml.safe_load with the alias expansion bounded before any object is built; every
    failure is a short ConfigError naming `source` (no traceback, no value echoed)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, max_nodes)
        return loader.construct_document(node)
    except ConfigError as exc:
        raise ConfigError(f"config file {source} {exc}: rejected") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {source} is not valid YAML: {short_text(exc, 400)}") from None
    except RecursionError:
        raise ConfigError(f"config file {source} is nested too deeply") from None
    except ValueError as exc:             # e.g. an integer of more than 4300 digits
        raise ConfigError(f"config file {source} has an unreadable value: {short_text(exc, 120)}") from None
    finally:
        loader.dispose()


def read_yaml_file(path: Path) -> Any:
    """A YAML file's data: UTF-8, at most MAX_CONFIG_BYTES, bounded alias expansion."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB: is it a config file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x}): "
                          "save it as UTF-8") from None
    return safe_load_yaml(text, str(path))


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token", re.IGNORECASE)


def redacted_dump(cfg: "Config") -> dict[str, Any]:
    """cfg as JSON-able data for the log's configuration dump, with secrets replaced by ***:
    the password in any URL (scheme://user:PASSWORD@host) and the value of any key that
    holds one (`password`, `secret`, `token`; `*_env` keys name a variable and are kept)."""
    from engine.logs import redact_text

    def walk(value, key: str = ""):
        if isinstance(value, dict):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if isinstance(value, str):
            if _SECRET_KEY.search(key) and not key.endswith("_env"):
                return "***"
            return redact_text(value)
        return value

    return walk(cfg.model_dump(mode="json"))


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
