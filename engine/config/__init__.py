"""Typed, validated configuration, loaded at the edge (CLI, build_engine.py), never at import.

model.py holds every key, its rule and its default (the one source of defaults); the shipped
profiles under config/ hold only what differs (360.yml). load.py reads YAML as untrusted input,
merges the profile, the user's `-k` file and overrides, and turns validation errors into
messages that name the key, the rule, a short redacted prefix of the value and the fix.
reference.py maps the reference system's keys; checks.py checks values that reach SQL, file
names and str.format.
"""
from engine.config.checks import (TEMPLATE_FIELDS, ConfigError, check_identifier, check_template, redacted_dump,
                                  short_repr, short_text)
from engine.config.fields import IMAGE_TYPES, MASK_MODES
from engine.config.load import CONFIG_DIR, PROFILES, load_config, read_yaml_file, safe_load_yaml
from engine.config.model import (Config, DatabaseSpec, EmailSpec, EngineSpec, MaskSpec, MetadataSpec, ModelSpec,
                                 OutputSpec)
from engine.config.reference import DEPRECATED_KEYS

__all__ = ["Config", "ConfigError", "load_config", "CONFIG_DIR", "PROFILES", "DEPRECATED_KEYS", "safe_load_yaml",
           "read_yaml_file", "check_identifier", "check_template", "TEMPLATE_FIELDS", "redacted_dump", "short_text",
           "short_repr", "ModelSpec", "OutputSpec", "MaskSpec", "MetadataSpec", "DatabaseSpec", "EmailSpec",
           "EngineSpec", "IMAGE_TYPES", "MASK_MODES"]
