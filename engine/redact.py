"""Redaction of secrets (database and SMTP passwords) from text bound for a log, a message or
the configuration dump. A module of its own so that the configuration checks and the logging
set-up both use it without importing each other."""
from __future__ import annotations

import re
from typing import Optional

__all__ = ["redact_text", "register_secret"]

# scheme://user:PASSWORD@host: the password runs to the last `@` before a space or quote, so a
# password with an unescaped `@` or `/` is still hidden whole (over-redacting beats leaking).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*):[^\s'\"]*@")
# libpq key=value strings and similar: password=..., pwd: ...
_KEY_PASSWORD = re.compile(r"(?P<head>\b(?:password|passwd|pwd)\s*[=:]\s*)(?P<q>['\"]?)[^\s'\",;]+",
                           re.IGNORECASE)
_SECRETS: set[str] = set()


def register_secret(value: Optional[str]) -> None:
    """Hide `value` (a password read from the environment or a db_config.py) in every later
    log record. Values under 4 characters are not registered: they would blank out words."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact_text(text: str) -> str:
    """`text` with URL passwords, password=... values and registered secrets replaced by ***."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + ":***@", text)
    text = _KEY_PASSWORD.sub(lambda m: m.group("head") + m.group("q") + "***", text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
