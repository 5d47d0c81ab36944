"""engine.config.typed (the configuration's sections without pydantic) against pydantic itself:
the same field types and rules, translated to pydantic, must accept the same values with the
same results, and refuse the same ones with the same error types, locations and messages."""
from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Annotated, Literal, Optional, get_args, get_origin

import pytest

pydantic = pytest.importorskip("pydantic", reason="pydantic is the oracle (it comes with the service extra)")

from engine.config.fields import RGB, Blur, Dilation  # noqa: E402
from engine.config.typed import (AfterValidator, Field, FieldInfo, Section, StrictBool, ValidationError,  # noqa: E402
                                 field_validator, model_validator)
from engine.config.typed_values import _STRICT  # noqa: E402


class Inner(Section):
    a: int
    b: str = "x"


def _to_pydantic(tp, mirrors: dict):
    """The same annotation for pydantic (its StrictBool, Field rules, AfterValidator, models)."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        out = []
        for m in meta:
            if m is _STRICT:
                out.append(pydantic.Strict())
            elif isinstance(m, FieldInfo):
                out.append(pydantic.Field(**m.rules))
            elif isinstance(m, AfterValidator):
                out.append(pydantic.AfterValidator(m.fn))
        return Annotated[(_to_pydantic(base, mirrors), *out)]
    if isinstance(tp, type) and issubclass(tp, Section):
        if tp not in mirrors:
            hints = tp._schema().fields
            mirrors[tp] = pydantic.create_model(
                tp.__name__, __config__=pydantic.ConfigDict(extra="forbid", frozen=True),
                **{n: (_to_pydantic(t, mirrors), ... if info.required else info.default) for n, (t, info) in hints.items()})
        return mirrors[tp]
    if origin is not None and origin is not Literal:
        args = tuple(_to_pydantic(a, mirrors) if a is not Ellipsis else a for a in get_args(tp))
        return origin[args] if origin in (tuple, list) else Optional[args[0]] if len(args) == 2 and type(None) in args \
            else __import__("typing").Union[args]
    return tp


def _outcome_typed(tp, rules, value):
    cls = type("One", (Section,), {"__annotations__": {"v": tp}, "v": Field(**rules)})
    try:
        return "ok", cls.model_validate({"v": value}).v
    except ValidationError as exc:
        return "error", [(e["type"], e["loc"], e["msg"]) for e in exc.errors()]


def _outcome_pydantic(tp, rules, value):
    model = pydantic.create_model("One", v=(_to_pydantic(tp, {}), pydantic.Field(**rules)))
    try:
        return "ok", model.model_validate({"v": value}).v
    except pydantic.ValidationError as exc:
        return "error", [(e["type"], e["loc"], e["msg"]) for e in exc.errors()]


CASES = [
    (int, {}, [3, True, 2.0, 2.5, "5", " 7 ", "x", None, [1], float("inf"), "1.0", "1_000", "+3", -0.0, "1.5", "1e2", "nan", "1.", "2.00", ".0", "-4.0", 1e300, 2.0 ** 63, 2.0 ** 62,
               -2.0 ** 63, b"5", "\u0663", "\uff11\uff12", " 12 .0", "00012", "12.000", "0x10", "1__0", 10 ** 30, "9" * 4300,
               "9" * 4301, "-" + "9" * 5000, "1_" * 3000 + "1"]),
    (float, {}, [3, "1.5", True, "abc", None, 2.5, [1], "1e3", " 2 ", "1_0", 10 ** 400, b"5", "\u0663", " 1_000 ",
                 "inf", "nan", "+1.5", ".5", "5.", "1__0", "_1", "0x10"]),
    (str, {}, [5, "a", None, b"x", b"\xff"]),
    (bool, {}, [True, "yes", "no", "off", "TRUE", 1, 0, 2, "maybe", None, 1.0, " yes ", "Yes", "1", 0.5, "on", [1], {},
                10 ** 30, 2.0, 3.0, -1.0, 0.0, -1, "2", b"yes", "y", b"x", 1e300, 9.3e18, 4e18, 10 ** 400]),
    (StrictBool, {}, [True, False, "true", 1, None]),
    (tuple[int, int], {}, [[1, 2], (3, 4), [1], [1, 2, 3], "ab", [1, "2"], [1.5, 2], None]),
    (tuple[float, ...], {}, [[1, 2], [], ["x"], "ab"]),
    (tuple[int, ...], {}, [[160, 256], [1.5]]),
    (list[str], {}, [("a",), "ab", [1], [], ["a", "b"]]),
    (int | Literal["auto"], {}, [5, "5", "x", "auto", 2.0, None]),
    (Literal["a", "b", "c"], {}, ["d", 1, "a", None]),
    (Literal["Planar", "360"], {}, ["360", 360, "planar"]),
    (Optional[int], {"ge": 1}, [0, None, 1, "3", 2.0]),
    (Optional[float], {"gt": 0, "lt": 1}, [0, 1, 0.5, None, "0.2"]),
    (Optional[tuple[int, int]], {}, [None, [1, 2], [1]]),
    (Optional[Literal["nms", "wbf", "envelope"]], {}, [None, "nms", "x"]),
    (Optional[str], {}, [None, "s", 3]),
    (Optional[StrictBool], {}, [None, True, "yes"]),
    (float, {"gt": 0, "le": 4}, [0, 4, 4.1, "2", -1]),
    (int, {"ge": 1, "le": 100}, [0, 101, 50, 1, 100]),
    (int, {"ge": 1}, [0, 10 ** 12]),
    (str, {"pattern": r"^[A-Za-z0-9_.]{1,64}$"}, ["abc", "a b", "", "sladd\n"]),
    (float, {"ge": 0.0, "le": 2.0}, [3, float("nan"), -1, "3"]),
    (int, {"ge": 1, "le": 1024}, ["0", 2000.0]),
    (list[str], {"min_length": 1}, [[], ["x"]]),
    (Path, {}, ["a/b", 5, None]),
    (Blur, {}, [0, 1, 1000, 1001, 15.0, "20"]),
    (Dilation, {}, [-1, 0]),
    (RGB, {}, [[0, 255, 0], [0, 300, 0], [1, 2], "red"]),
    (Optional[RGB], {}, [None, [1, 2, 3], [1, 2, 256]]),
    (Inner, {}, [{"a": 1}, {"a": "2", "b": "y"}, "x", {"zz": 1}, {}, {"a": 1, "b": 2}, None]),
    (list[Inner], {}, [[{"a": 1}, {"a": 2}], [{"a": 1}, {"b": "q"}], "x"]),
    (Optional[Inner], {}, [None, {"a": 3}, {"a": "q"}]),
]


@pytest.mark.parametrize("tp,rules,values", CASES, ids=[str(c[0]).replace("typing.", "")[:40] for c in CASES])
def test_fields_validate_as_pydantic_validates_them(tp, rules, values):
    for value in values:
        mine, theirs = _outcome_typed(tp, rules, value), _outcome_pydantic(tp, rules, value)
        assert mine[0] == theirs[0], (value, mine, theirs)
        if mine[0] == "ok":
            got, want = mine[1], theirs[1]
            if isinstance(want, pydantic.BaseModel):
                want = want.model_dump()
                got = got.model_dump()
            elif isinstance(want, list) and want and isinstance(want[0], pydantic.BaseModel):
                want, got = [w.model_dump() for w in want], [g.model_dump() for g in got]
            same = got == want or (isinstance(want, float) and want != want and got != got)    # NaN
            assert same and type(got) is type(want), (value, got, want)
        else:
            assert mine[1] == theirs[1], value


class _Sec(Section):
    name: str
    size: tuple[int, int] = (1, 2)
    tags: list[str] = []
    inner: Inner = Inner(a=1)
    level: Optional[int] = Field(None, ge=0)

    @field_validator("name", mode="before")
    @classmethod
    def _strip(cls, v):
        return v.strip() if isinstance(v, str) else v

    @field_validator("tags")
    @classmethod
    def _lower(cls, v, info):
        if "bad" in v:
            raise ValueError(f"{info.field_name} holds bad")
        return [t.lower() for t in v]

    @model_validator(mode="after")
    def _cross(self):
        if self.level == 7:
            raise ValueError("level 7 needs tags")
        return self


def test_sections_are_frozen_copied_dumped_compared_and_pickled():
    s = _Sec.model_validate({"name": " n ", "tags": ["A"], "size": [3, 4]})
    assert (s.name, s.tags, s.size, s.inner) == ("n", ["a"], (3, 4), Inner(a=1))
    assert s.model_fields_set == {"name", "tags", "size"}
    with pytest.raises(AttributeError):
        s.name = "x"
    t = s.model_copy(update={"level": 3})
    assert t.level == 3 and s.level is None and t.model_fields_set == {"name", "tags", "size", "level"}
    assert s.model_dump() == {"name": "n", "size": (3, 4), "tags": ["a"], "inner": {"a": 1, "b": "x"}, "level": None}
    assert s.model_dump(mode="json")["size"] == [3, 4]
    assert s.model_dump(include={"name"}) == {"name": "n"}
    assert pickle.loads(pickle.dumps(s)) == s and copy.deepcopy(s) == s and s != t
    deep = s.model_copy(deep=True)
    assert deep == s and deep.tags is not s.tags
    assert _Sec(name="n", tags=["a"], size=(3, 4)) == s
    assert list(_Sec.model_fields) == ["name", "size", "tags", "inner", "level"]
    # a mutable default is not shared between instances
    assert _Sec(name="a").tags is not _Sec(name="b").tags


def test_validators_and_collected_errors():
    with pytest.raises(ValidationError) as e:
        _Sec.model_validate({"name": 3, "tags": ["bad"], "level": -1, "extra": 1, "inner": {"a": "z"}})
    got = {(x["type"], x["loc"]) for x in e.value.errors()}
    assert got == {("string_type", ("name",)), ("value_error", ("tags",)), ("greater_than_equal", ("level",)),
                   ("extra_forbidden", ("extra",)), ("int_parsing", ("inner", "a"))}
    assert any(x["msg"] == "Value error, tags holds bad" for x in e.value.errors())
    with pytest.raises(ValidationError) as e:
        _Sec.model_validate({"name": "x", "level": 7})
    assert [(x["type"], x["loc"], x["msg"]) for x in e.value.errors()] == [
        ("value_error", (), "Value error, level 7 needs tags")]
    with pytest.raises(ValidationError, match="name"):
        _Sec.model_validate({})


def test_errors_pickle_defaults_are_not_shared_and_nan_equals_itself():
    """Found in review: an error raised in a Ray actor must pickle; a default section's lists
    must not be shared between configurations; a section holding NaN equals its copies."""
    from engine.config import Config

    with pytest.raises(ValidationError) as e:
        _Sec.model_validate({"name": 1})
    back = pickle.loads(pickle.dumps(e.value))
    assert back.errors() == e.value.errors() and str(back) == str(e.value)
    a, b = Config.model_validate({}), Config.model_validate({})
    a.email.to_addresses.append("x@example.org")
    assert b.email.to_addresses == [] and Config.model_validate({}).email.to_addresses == []

    class N(Section):
        x: float = 0.0
    n = N(x=float("nan"))
    assert n == copy.deepcopy(n) and n == n.model_copy()


def test_validators_run_as_pydantic_runs_them_overridden_ordered_or_undecorated():
    calls = []

    class Base(Section):
        v: str = ""

        @field_validator("v", mode="before")
        @classmethod
        def _one(cls, v):
            calls.append("one")
            return v

        @field_validator("v", mode="before")
        def _two(cls, v):                           # no @classmethod: pydantic takes it as one
            calls.append("two")
            return v + "!"

        @model_validator(mode="after")
        def _after(self):
            raise ValueError("base")

    class Child(Base):
        @model_validator(mode="after")
        def _after(self):                           # the override replaces the base's
            return self

    assert Child.model_validate({"v": "a"}).v == "a!" and calls == ["two", "one"]
    with pytest.raises(ValidationError, match="base"):
        Base.model_validate({"v": "a"})
