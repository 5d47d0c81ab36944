"""Loading a configuration: the shipped profile, then the user's `-k` file, then overrides.

A `-k` file overrides only the keys it names (fix 17); nested sections merge key by key. Keys
that meant something only to the reference system are accepted with a deprecation warning;
unknown keys and invalid values are errors that name the key, the rule, the value seen and the
fix. A config file is untrusted input: it is read as UTF-8 of at most 1 MiB, its YAML alias
expansion is bounded before anything is built (no "billion laughs"), and booleans must be real
booleans.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml

from engine.config.checks import ConfigError, short_repr, short_text
from engine.config.model import Config
from engine.config.reference import DEPRECATED_KEYS, map_flat_mask_keys
from engine.config.typed import ValidationError

__all__ = ["CONFIG_DIR", "PROFILES", "load_config", "safe_load_yaml", "read_yaml_file", "MAX_CONFIG_BYTES",
           "MAX_YAML_NODES"]

LOG = logging.getLogger("sladd")


def _config_dir() -> Path:
    """config/ of the checkout, or the copy a wheel installs as engine.config_data."""
    checkout = Path(__file__).resolve().parents[2] / "config"
    if (checkout / "default.yml").is_file():
        return checkout
    import importlib.util

    spec = importlib.util.find_spec("engine.config_data")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("sladd's configuration files are missing (config/ or engine.config_data): reinstall sladd")
    return Path(list(spec.submodule_search_locations)[0])


CONFIG_DIR = _config_dir()
# The shipped profiles: CONFIG_DIR/<name>.yml (`--profile NAME`), each holding only what differs
# from the model's defaults (default.yml holds no keys; its date still dates `versjon` when no
# -k file is given). Read from the files, so a profile shipped is a profile offered.
PROFILES = ("default", *sorted(p.stem for p in CONFIG_DIR.glob("*.yml") if p.stem != "default"))
DEFAULT_SERVICE_PROFILE = "faces-plates"   # `sladd serve`: what Panoramax expects of SGBlur (faces and plates)

_FIXES = {
    "table_name": "a plain name such as VEGBILDER (it names the table and OUTPUT/.sladd/<table_name>.sqlite)",
    "exif_mappenavn": "a template such as \"Vegbilder/{aar}/{relative_input_dir}\"",
    "log_file_name": "a file name template such as \"{datetime}_{hostname}.log\"",
    "blur": "an integer 1..1000 (kernel = blur/1000 x image width), or null for colour fill",
    "mask.blur": "an integer 1..1000 (kernel = blur/1000 x image width)",
    "mask_dilation_pixels": "an integer 0..1000",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR",
    "device": "one of auto, cpu, cuda",
    "image_type": "\"Planar\" or \"360\" (the reference's values, as written in exif_imagetype)",
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
                         f"against the keys of engine/config/model.py")
            continue
        leaf = str(e["loc"][-1]) if e["loc"] else ""
        if e["type"] == "bool_type":
            # A quoted "false" is a string: lax parsing would read it as False and, for
            # draw_mask, publish images unmasked without a word.
            lines.append(f"  `{key}`: must be a YAML boolean, got {seen}; write `{leaf}: true` or "
                         f"`{leaf}: false` without quotes (yes/no and on/off also work)")
            continue
        fix = None if e["type"] == "mask_conflict" else _FIXES.get(key, _FIXES.get(leaf))
        msg = short_text(e["msg"].replace("Value error, ", ""), 300)
        line = f"  `{key}`: {msg}, got {seen}"
        if fix:
            line += f"; expected {fix}"
        lines.append(line)
    if len(errors) > _MAX_ERRORS:
        lines.append(f"  ... and {len(errors) - _MAX_ERRORS} more errors")
    return "\n".join(lines)


# --- reading YAML ------------------------------------------------------------------------------
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


# --- merging -----------------------------------------------------------------------------------
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


def _mapped(data: dict[str, Any], source: str) -> dict[str, Any]:
    """One source's keys with the reference's flat masking keys moved into `mask`, before
    merging, so that a later source's flat key overrides an earlier source's `mask` key and
    the other way round."""
    try:
        return map_flat_mask_keys(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


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

    `profile` is one of PROFILES ("default", "360", "faces-plates", ...); when None it is "360"
    if the user file sets `image_type: "360"`, else "default".
    """
    user: dict[str, Any] = {}
    user_path = Path(path) if path else None
    if user_path is not None:
        user = _mapped(_drop_deprecated(_read_yaml(user_path), str(user_path), warn=True), str(user_path))
    if profile is None:
        profile = "360" if str(user.get("image_type", "")) == "360" else "default"
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
    base_path = CONFIG_DIR / f"{profile}.yml"
    merged = _mapped(_drop_deprecated(_read_yaml(base_path), str(base_path), warn=False), str(base_path))
    merged = _merge(merged, user)
    if overrides:
        merged = _merge(merged, _mapped(overrides, "overrides"))
    try:
        cfg = Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, str(user_path or base_path))) from None
    return cfg, (user_path or base_path)
