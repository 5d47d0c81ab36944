"""Typed, frozen configuration sections: the subset of pydantic's model API that sladd's
configuration and model cards use, without pydantic.

Why: importing pydantic and building its validators for the configuration's fourteen classes
took ~70 ms of every `sladd run`'s start, on the one core that the start keeps busy (a 12-image
faces-only run takes ~0.9 s). The service (FastAPI) still uses pydantic for its own requests.

What it keeps of pydantic (v2, lax mode), so that the sections read as before:
- a section is a class with annotated fields; a default is a class attribute or
  `Field(default, ge=, le=, gt=, lt=, pattern=, min_length=, default_factory=)`; a field without
  one is required. `Annotated[T, Field(...), AfterValidator(f)]` and `StrictBool` as in pydantic.
- unknown keys are errors, instances are frozen; `field_validator(*names, mode=)` and
  `model_validator(mode=)` run as pydantic runs them.
- the coercions of pydantic's lax mode for the types used: an int from an integral float or a
  numeric string, a float from an int or a numeric string, a bool from yes/no/on/off/true/false/
  0/1 (not for `StrictBool`), tuples and lists from either, Path from str; a str is only a str.
- errors are collected, one dict per error as pydantic's `errors()` gives them (`type`, `loc`,
  `msg`, `input`) with its message texts, in `ValidationError`.
- `model_validate`, `model_copy(update=, deep=)`, `model_dump(mode=, include=)`, `model_fields`,
  `model_fields_set`; equality by type and values; pickling and deep copies.
tests/test_config_typed.py checks the coercions and the errors against pydantic itself.
"""
from __future__ import annotations

import copy
import functools
import typing
from pathlib import Path
from typing import Any

from engine.config.typed_values import (FAIL, MISSING, AfterValidator, Field, FieldInfo, StrictBool, ValidationError, check,
                                        err, value_error)

__all__ = ["Section", "Field", "FieldInfo", "StrictBool", "AfterValidator", "field_validator", "model_validator",
           "ValidationError"]


def field_validator(*names: str, mode: str = "after"):
    """Decorates a classmethod `(cls, value[, info])` run before or after the named fields'
    own validation; `info.field_name` names the field."""
    def mark(f):
        (f.__func__ if isinstance(f, classmethod) else f).__sladd_field__ = (names, mode)
        return f
    return mark


def model_validator(*, mode: str):
    """`mode="before"`: a classmethod `(cls, data) -> data` on the raw input; `mode="after"`:
    a method `(self) -> self` on the built section."""
    def mark(f):
        (f.__func__ if isinstance(f, classmethod) else f).__sladd_model__ = mode
        return f
    return mark


class _Info:
    __slots__ = ("field_name",)

    def __init__(self, name: str):
        self.field_name = name


class _Schema:
    """A section class's fields (name -> (type, FieldInfo)) and validators, built at its first use."""

    def __init__(self, cls):
        hints = typing.get_type_hints(cls, include_extras=True)
        self.fields: dict[str, tuple] = {}
        for name, info in cls.model_fields.items():
            self.fields[name] = (hints[name], info)
        self.before, self.after, self.field_before, self.field_after = [], [], {}, {}
        names: list[str] = []                      # in definition order, bases first
        for klass in reversed(cls.__mro__):
            names += [a for a in vars(klass) if a not in names]
        for attr in names:
            obj = next(vars(k)[attr] for k in cls.__mro__ if attr in vars(k))    # the override wins
            fn = obj.__func__ if isinstance(obj, classmethod) else obj
            mode, marks = getattr(fn, "__sladd_model__", None), getattr(fn, "__sladd_field__", None)
            if not callable(fn) or not (mode or marks):
                continue
            on_class = functools.partial(fn, cls)      # a classmethod, or a function taken as one (as pydantic)
            if mode == "before":
                self.before.append(on_class)
            elif mode == "after":
                self.after.append(fn)
            if marks:
                names_, fmode = marks
                for n in names_:
                    (self.field_before if fmode == "before" else self.field_after).setdefault(n, []).append(
                        (on_class, fn.__code__.co_argcount))
        for n in self.field_before:                # pydantic runs "before" validators last-defined first
            self.field_before[n].reverse()


class Section:
    """Base of a configuration section: annotated fields, unknown keys refused, frozen."""

    __sladd_section__ = True
    model_fields: dict[str, FieldInfo] = {}
    __schema: _Schema | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        fields = {}
        for klass in reversed(cls.__mro__):
            for name in vars(klass).get("__annotations__", {}):
                if name.startswith("_") or name in ("model_fields",):
                    continue
                default = vars(klass).get(name, MISSING)
                fields[name] = default if isinstance(default, FieldInfo) else FieldInfo(default)
        cls.model_fields = fields
        cls._Section__schema = None

    @classmethod
    def _schema(cls) -> _Schema:
        s = cls.__dict__.get("_Section__schema")
        if s is None:
            s = _Schema(cls)
            cls._Section__schema = s
        return s

    def __init__(self, **data):
        object.__setattr__(self, "__dict__", type(self).model_validate(data).__dict__)

    @classmethod
    def model_validate(cls, data):
        if isinstance(data, cls):
            return data
        errors: list = []
        out = cls._validate(data, (), errors)
        if out is FAIL:
            raise ValidationError(cls.__name__, errors)
        return out

    @classmethod
    def _validate(cls, data, loc: tuple, errors: list):
        s = cls._schema()
        for before in s.before:
            try:
                data = before(data)
            except ValidationError as exc:
                errors.extend({**e, "loc": (*loc, *e["loc"])} for e in exc.errors())
                return FAIL
            except ValueError as exc:
                return value_error(errors, loc, exc, data)
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            return err(errors, "model_type", loc, f"Input should be a valid dictionary or instance of {cls.__name__}",
                        data)
        n = len(errors)
        values: dict[str, Any] = {}
        for name, (tp, info) in s.fields.items():
            at = (*loc, name)
            if name not in data:
                if info.required:
                    err(errors, "missing", at, "Field required", data)
                else:
                    values[name] = info.make_default()
                continue
            v = data[name]
            for fn, argc in s.field_before.get(name, ()):
                try:
                    v = fn(v, _Info(name)) if argc == 3 else fn(v)
                except ValueError as exc:
                    v = value_error(errors, at, exc, v)
                    break
            if v is FAIL:
                continue
            v = check(tp, v, at, errors, rules=info.rules or None)
            for fn, argc in s.field_after.get(name, ()) if v is not FAIL else ():
                try:
                    v = fn(v, _Info(name)) if argc == 3 else fn(v)
                except ValueError as exc:
                    v = value_error(errors, at, exc, data[name])
                    break
            if v is not FAIL:
                values[name] = v
        for key in data:
            if key not in s.fields:
                err(errors, "extra_forbidden", (*loc, key), "Extra inputs are not permitted", data[key])
        if len(errors) > n:
            return FAIL
        obj = cls._build(values, frozenset(k for k in data if k in s.fields))
        for after in s.after:
            try:
                obj = after(obj)
            except ValueError as exc:
                return value_error(errors, loc, exc, data)
        return obj

    @classmethod
    def _build(cls, values: dict, fields_set: frozenset):
        obj = object.__new__(cls)
        object.__setattr__(obj, "__dict__", values)
        object.__setattr__(obj, "_Section__set", fields_set)
        return obj

    # --- what pydantic's models offer and sladd uses ----------------------------------------
    @property
    def model_fields_set(self) -> set[str]:
        return set(self.__dict__.get("_Section__set", ()))

    def model_copy(self, update: dict | None = None, deep: bool = False):
        """A copy with `update`'s values (not validated, as pydantic's)."""
        values = {k: v for k, v in self.__dict__.items() if k != "_Section__set"}
        if deep:
            values = copy.deepcopy(values)
        values.update(update or {})
        return type(self)._build(values, frozenset(self.model_fields_set | set(update or ())))

    def model_dump(self, mode: str = "python", include: set | None = None) -> dict[str, Any]:
        return {k: _dump(getattr(self, k), mode) for k in type(self).model_fields if include is None or k in include}

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is frozen: `{name}` cannot be set (use model_copy(update=...))")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        names = type(self).model_fields                # tuples compare identity first (NaN equals itself)
        return tuple(getattr(self, k) for k in names) == tuple(getattr(other, k) for k in names)

    def __hash__(self):
        return hash((type(self), *(getattr(self, k) for k in type(self).model_fields)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in type(self).model_fields) + ")"


def _dump(v, mode: str):
    if isinstance(v, Section):
        return v.model_dump(mode)
    if isinstance(v, (list, tuple)):
        out = [_dump(x, mode) for x in v]
        return out if mode == "json" or isinstance(v, list) else tuple(out)
    if isinstance(v, dict):
        return {k: _dump(x, mode) for k, x in v.items()}
    if mode == "json" and isinstance(v, Path):
        return str(v)
    return v
