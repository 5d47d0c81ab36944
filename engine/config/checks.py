"""Checks of configuration values that reach SQL, file names and str.format, and the short,
redacted forms in which a value may appear in a message or the log.

A config file is untrusted input: SQL identifiers and str.format templates are checked at load,
and no message echoes more than a short, redacted prefix of a value.
"""
from __future__ import annotations

import re
import string
from typing import Any

from engine.redact import redact_text

__all__ = ["ConfigError", "IDENT_RULE", "check_identifier", "check_template", "TEMPLATE_FIELDS", "short_text",
           "short_repr", "redacted_dump"]


class ConfigError(ValueError):
    """Invalid configuration; the message names the key, the rule, the value and the fix."""


def short_text(text: Any, limit: int = 60) -> str:
    """`text` cut to `limit` characters, saying how long it was (never echo a huge value)."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def short_repr(value: Any, limit: int = 60) -> str:
    """A short, redacted repr of a config value for messages."""
    if isinstance(value, (dict, list, tuple)) and len(value) > 20:
        return f"<{type(value).__name__} of {len(value)} items>"
    return short_text(redact_text(repr(value)), limit)


# --- SQL identifiers ---------------------------------------------------------------------------
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}", re.ASCII)
IDENT_RULE = "an SQL identifier: ASCII letters, digits and _, not starting with a digit, 1..63 characters"


def check_identifier(value: Any, what: str) -> str:
    """`value` if it is a plain SQL identifier (table, schema, column), else ValueError naming
    `what`. Plain names need no quoting in any dialect, cannot be paths and keep the embedded
    SQLite file (OUTPUT/.sladd/<table_name>.sqlite) inside OUTPUT/.sladd."""
    if not isinstance(value, str) or not IDENT.fullmatch(value):
        raise ValueError(f"{what} must be {IDENT_RULE}, got {short_repr(value)}; use a plain name such as VEGBILDER")
    return value


# --- str.format templates ----------------------------------------------------------------------
# The fields each str.format template of the configuration is given (docs/reference.md §1.6, §8),
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
    for _literal, name, spec, conversion in parts:
        if name is not None:
            _check_field(name, spec, conversion, fields, allowed)
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


def _check_field(name: str, spec, conversion, fields: dict, allowed: str) -> None:
    """One replacement field of a template: a known name, a plain conversion and format spec."""
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


# --- the configuration dump of the log ----------------------------------------------------------
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token", re.IGNORECASE)


def redacted_dump(cfg) -> dict[str, Any]:
    """cfg (a Config) as JSON-able data for the log's configuration dump, with secrets replaced
    by ***: the password in any URL (scheme://user:PASSWORD@host) and the value of any key that
    holds one (`password`, `secret`, `token`; `*_env` keys name a variable and are kept)."""
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
