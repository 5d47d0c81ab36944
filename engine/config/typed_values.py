"""The value checks behind engine.config.typed: a value against a field's type and rules, in
pydantic's lax mode for the types sladd's configuration uses, and the errors as pydantic's
`errors()` gives them (its types and message texts). engine.config.typed has the why."""
from __future__ import annotations

import copy
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

__all__ = ["FieldInfo", "Field", "AfterValidator", "StrictBool", "ValidationError", "check", "MISSING", "FAIL",
           "value_error", "err"]

MISSING = object()
FAIL = object()
_STRICT = object()                  # Annotated metadata: no lax coercion
StrictBool = Annotated[bool, _STRICT]
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


class FieldInfo:
    """A field's default and rules (`Field(...)`)."""

    __slots__ = ("default", "default_factory", "rules")

    def __init__(self, default=MISSING, default_factory=None, **rules):
        self.default, self.default_factory = default, default_factory
        self.rules = {k: v for k, v in rules.items() if v is not None}

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.default_factory is None

    def make_default(self):
        if self.default_factory is not None:
            return self.default_factory()
        # Mutable defaults and default sections (which hold lists) are copied, as pydantic copies them.
        mutable = isinstance(self.default, (list, dict, set)) or getattr(self.default, "__sladd_section__", False)
        return copy.deepcopy(self.default) if mutable else self.default


def Field(default: Any = MISSING, *, default_factory=None, ge=None, le=None, gt=None, lt=None, pattern=None,
          min_length=None) -> Any:     # noqa: N802 - pydantic's name
    return FieldInfo(default, default_factory, ge=ge, le=le, gt=gt, lt=lt, pattern=pattern, min_length=min_length)


class AfterValidator:
    """Annotated metadata: `fn(value)` after the type's validation (a ValueError is an error)."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn


class ValidationError(ValueError):
    """Every problem found in one validation: `errors()` as pydantic gives them."""

    def __init__(self, title: str, errors: list[dict]):
        self.title, self._errors = title, errors
        super().__init__(str(self))

    def __reduce__(self):                # pickled whole (a Ray actor's error reaches the driver)
        return ValidationError, (self.title, self._errors)

    def errors(self) -> list[dict]:
        return [dict(e) for e in self._errors]

    def __str__(self) -> str:
        n = len(self._errors)
        lines = [f"{n} validation error{'s' if n != 1 else ''} for {self.title}"]
        for e in self._errors:
            lines.append(".".join(str(p) for p in e["loc"]) or "(top level)")
            lines.append(f"  {e['msg']} [type={e['type']}, input_value={e.get('input')!r:.60}]")
        return "\n".join(lines)


def err(errors: list, type_: str, loc: tuple, msg: str, value) -> object:
    errors.append({"type": type_, "loc": loc, "msg": msg, "input": value})
    return FAIL


def value_error(errors: list, loc: tuple, exc: Exception, value) -> object:
    return err(errors, "value_error", loc, f"Value error, {exc}", value)


def _or_list(vals) -> str:
    r = [repr(v) for v in vals]
    return r[0] if len(r) == 1 else ", ".join(r[:-1]) + " or " + r[-1]


# In pydantic's order (NaN fails `le` first).
_NUMBER_RULES = (("le", "less_than_equal", "less than or equal to", lambda v, b: v <= b),
                 ("lt", "less_than", "less than", lambda v, b: v < b),
                 ("ge", "greater_than_equal", "greater than or equal to", lambda v, b: v >= b),
                 ("gt", "greater_than", "greater than", lambda v, b: v > b))
_INT_TEXT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?")
_INT_RANGE = 2 ** 63          # pydantic reads floats into 64-bit integers


def _bound(b) -> str:
    return str(int(b)) if isinstance(b, float) and b.is_integer() else str(b)


def _pattern(p: str) -> str:
    """The pattern as pydantic's (Rust) regex reads it: a final `$` is the end of the text, where
    Python's also matches before a final newline."""
    return p[:-1] + r"\Z" if p.endswith("$") and not p.endswith("\\$") else p


def _apply_rules(rules: dict, v, loc: tuple, errors: list, given):
    """`v` (validated from `given`) within `rules`; an error reports `given`, as pydantic's do."""
    for key, type_, words, ok in _NUMBER_RULES:
        if key in rules and not ok(v, rules[key]):
            return err(errors, type_, loc, f"Input should be {words} {_bound(rules[key])}", given)
    if "pattern" in rules and not re.search(_pattern(rules["pattern"]), v):
        return err(errors, "string_pattern_mismatch", loc, f"String should match pattern '{rules['pattern']}'",
                   given)
    if "min_length" in rules and len(v) < rules["min_length"]:
        n = rules["min_length"]
        return err(errors, "too_short", loc, f"List should have at least {n} item{'s' if n != 1 else ''} after "
                                              f"validation, not {len(v)}", given)
    return v


def _text(v):
    """A str or bytes input as number text (ASCII; surrounding white space only without
    underscores, as pydantic reads them), else None."""
    if isinstance(v, (bytes, bytearray)):
        try:
            v = bytes(v).decode("ascii")
        except UnicodeDecodeError:
            return None
    t = v.strip()
    return t if t.isascii() and (t == v or "_" not in t) else None


def _int(v, loc, errors, strict):
    if isinstance(v, bool):
        return err(errors, "int_type", loc, "Input should be a valid integer", v) if strict else int(v)
    if isinstance(v, int):
        return v
    if strict:
        return err(errors, "int_type", loc, "Input should be a valid integer", v)
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return err(errors, "finite_number", loc, "Input should be a finite number", v)
        if not v.is_integer():
            return err(errors, "int_from_float", loc,
                        "Input should be a valid integer, got a number with a fractional part", v)
        if not -_INT_RANGE < v < _INT_RANGE:
            return err(errors, "int_parsing_size", loc,
                       "Unable to parse input string as an integer, exceeded maximum size", v)
        return int(v)
    if isinstance(v, (str, bytes, bytearray)):
        t = _text(v)
        if t is not None and _INT_TEXT.fullmatch(t):           # "12", "1_000", and "12.0" as pydantic reads them
            whole = t.partition(".")[0]
            if sum(c.isdigit() for c in whole) > 4300:         # Python's (and pydantic's) limit
                return err(errors, "int_parsing_size", loc,
                           "Unable to parse input string as an integer, exceeded maximum size", v)
            return int(whole)
        return err(errors, "int_parsing", loc, "Input should be a valid integer, unable to parse string as an "
                                                    "integer", v)
    return err(errors, "int_type", loc, "Input should be a valid integer", v)


def _float(v, loc, errors, strict):
    if isinstance(v, (int, float)) and not (strict and isinstance(v, bool)):
        try:
            return float(v)
        except OverflowError:                                 # an integer of over 308 digits
            return err(errors, "float_type", loc, "Input should be a valid number", v)
    if isinstance(v, (str, bytes, bytearray)) and not strict:
        t = _text(v)
        try:
            if t is not None:
                return float(t)
        except ValueError:
            pass
        return err(errors, "float_parsing", loc, "Input should be a valid number, unable to parse string as a "
                                                  "number", v)
    return err(errors, "float_type", loc, "Input should be a valid number", v)


def _bool(v, loc, errors, strict):
    if isinstance(v, bool):
        return v
    if strict:
        return err(errors, "bool_type", loc, "Input should be a valid boolean", v)
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    text = v
    if isinstance(v, (bytes, bytearray)):
        try:
            text = bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            return err(errors, "bool_parsing", loc, "Input should be a valid boolean, unable to interpret input", v)
    if isinstance(text, str) and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    if isinstance(text, str) or (isinstance(v, (int, float)) and -_INT_RANGE < v < _INT_RANGE
                                 and (isinstance(v, int) or v.is_integer())):
        return err(errors, "bool_parsing", loc, "Input should be a valid boolean, unable to interpret input", v)
    return err(errors, "bool_type", loc, "Input should be a valid boolean", v)


def _tag(tp) -> str:
    """pydantic's name of a union member in an error's location."""
    if get_origin(tp) is Literal:
        return "literal[" + ",".join(repr(a) for a in get_args(tp)) + "]"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _exact(tp, v) -> bool:
    """Whether `v` is already of union member `tp` (pydantic's smart union takes that member)."""
    base = get_args(tp)[0] if get_origin(tp) is Annotated else tp
    if get_origin(base) is Literal:
        return any(v == a and type(v) is type(a) for a in get_args(base))
    if base in (int, float, str, bool):
        return type(v) is base
    return isinstance(base, type) and isinstance(v, base)


def check(tp, v, loc: tuple, errors: list, strict: bool = False, rules: dict | None = None):
    """`v` as type `tp` (pydantic's lax mode), or FAIL with the problems added to `errors`."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        strict = strict or _STRICT in meta
        more = {k: r for m in meta if isinstance(m, FieldInfo) for k, r in m.rules.items()}
        out = check(base, v, loc, errors, strict, {**more, **(rules or {})})
        for m in meta:
            if out is not FAIL and isinstance(m, AfterValidator):
                try:
                    out = m.fn(out)
                except ValueError as exc:
                    return value_error(errors, loc, exc, v)
        return out
    out = _check_type(tp, origin, v, loc, errors, strict)
    return _apply_rules(rules, out, loc, errors, v) if rules and out is not FAIL and out is not None else out


def _check_type(tp, origin, v, loc, errors, strict):
    if tp is Any:
        return v
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if v is None and len(members) < len(get_args(tp)):
            return None
        if len(members) == 1:
            return check(members[0], v, loc, errors, strict)
        for m in members:                              # smart mode: an exact match first
            if _exact(m, v):
                return check(m, v, loc, errors, strict)
        tried = []
        for m in members:
            got = check(m, v, (*loc, _tag(m)), tried, strict)
            if got is not FAIL:
                return got
        errors.extend(tried)
        return FAIL
    if v is None:
        kind = {int: ("int", "integer"), float: ("float", "number"), str: ("string", "string"),
                bool: ("bool", "boolean")}.get(tp)
        if kind is not None:
            return err(errors, f"{kind[0]}_type", loc, f"Input should be a valid {kind[1]}", v)
    if origin is Literal:
        vals = get_args(tp)
        if any(v == a and type(v) is type(a) for a in vals):
            return v
        return err(errors, "literal_error", loc, f"Input should be {_or_list(vals)}", v)
    if tp is bool:
        return _bool(v, loc, errors, strict)
    if tp is int:
        return _int(v, loc, errors, strict)
    if tp is float:
        return _float(v, loc, errors, strict)
    if tp is str:
        if isinstance(v, str):
            return v
        if isinstance(v, (bytes, bytearray)) and not strict:
            try:
                return bytes(v).decode("utf-8")
            except UnicodeDecodeError:
                return err(errors, "string_unicode", loc, "Input should be a valid string, unable to parse raw data "
                                                          "as a unicode string", v)
        return err(errors, "string_type", loc, "Input should be a valid string", v)
    if tp is Path:
        if isinstance(v, (str, Path)):
            return Path(v)
        return err(errors, "path_type", loc, "Input is not a valid path for <class 'pathlib.Path'>", v)
    if origin is tuple:
        return _tuple(get_args(tp), v, loc, errors, strict)
    if origin is list:
        if not isinstance(v, (list, tuple)):
            return err(errors, "list_type", loc, "Input should be a valid list", v)
        (item,) = get_args(tp)
        n = len(errors)
        out = [check(item, x, (*loc, i), errors, strict) for i, x in enumerate(v)]
        return out if len(errors) == n else FAIL
    if isinstance(tp, type) and getattr(tp, "__sladd_section__", False):
        if isinstance(v, tp):
            return v
        if not isinstance(v, dict):
            return err(errors, "model_type", loc, f"Input should be a valid dictionary or instance of {tp.__name__}",
                        v)
        return tp._validate(v, loc, errors)
    raise TypeError(f"engine.config.typed cannot validate fields of type {tp!r}")


def _tuple(args, v, loc, errors, strict):
    if not isinstance(v, (list, tuple)):
        return err(errors, "tuple_type", loc, "Input should be a valid tuple", v)
    n = len(errors)
    if len(args) == 2 and args[1] is Ellipsis:
        out = tuple(check(args[0], x, (*loc, i), errors, strict) for i, x in enumerate(v))
    else:
        if len(v) > len(args):
            return err(errors, "too_long", loc, f"Tuple should have at most {len(args)} items after validation, "
                                                 f"not {len(v)}", v)
        out = tuple(check(a, x, (*loc, i), errors, strict) for i, (a, x) in enumerate(zip(args, v)))
        for i in range(len(v), len(args)):
            err(errors, "missing", (*loc, i), "Field required", v)
    return out if len(errors) == n else FAIL
