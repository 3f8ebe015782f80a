"""The field types of the config schema (bstar_jax/config/schema.py): a field's type, default,
bounds, choices and condition, how one value is checked (one line naming the field when it is
bad) and how a field is written in docs/config.md. Pure Python.
"""
from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Callable

from bstar_jax.core.errors import ConfigValueError


@dataclasses.dataclass(frozen=True)
class When:
    """A condition on the whole config: a field under it is checked only when it holds."""

    test: Callable[[Any], bool]
    doc: str


@dataclasses.dataclass(frozen=True)
class Derived:
    """A default that follows from the other fields of its section (`fn` gets them by name)."""

    fn: Callable[[types.SimpleNamespace], Any]
    doc: str


_UNSET = object()


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field. kind: int, float, bool, str or tuple (of `item`); the bounds apply to a
    number, or to every item of a tuple of numbers."""

    kind: type
    doc: str
    default: Any = _UNSET
    unit: str = ""
    item: type | None = None
    choices: tuple = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    nonempty: bool = False  # a str or tuple must not be empty
    when: When | None = None
    or_number: bool = False  # a str that may also be a finite number written as text ("0.0")


def Int(doc, default=_UNSET, **kw) -> Field:
    """An integer field; `kw` are Field's bounds, choices, unit and condition."""
    return Field(int, doc, default, **kw)


def Float(doc, default=_UNSET, **kw) -> Field:
    """A finite-number field; `kw` are Field's bounds, choices, unit and condition."""
    return Field(float, doc, default, **kw)


def Bool(doc, default=_UNSET, **kw) -> Field:
    """A True/False field; `kw` are Field's bounds, choices, unit and condition."""
    return Field(bool, doc, default, **kw)


def Str(doc, default=_UNSET, **kw) -> Field:
    """A string field; `kw` are Field's bounds, choices, unit and condition."""
    return Field(str, doc, default, **kw)


def ChoiceOrNumber(doc, default=_UNSET, **kw) -> Field:
    """A string that is one of `choices` or a finite number written as text, e.g. "fitted" or
    "0.0" (text because a config field keeps one type); the bounds apply to the number."""
    return Field(str, doc, default, or_number=True, **kw)


def _number_or_choice(value: str) -> float | str:
    """The value of a ChoiceOrNumber field: its number as a float, or the choice's text."""
    try:
        return float(value)
    except ValueError:
        return value


def Tuple(item: type, doc, default=_UNSET, **kw) -> Field:
    """A non-empty tuple of distinct `item`s; bounds and choices apply to every item."""
    return Field(tuple, doc, default, item=item, nonempty=True, **kw)


@dataclasses.dataclass(frozen=True)
class Section:
    """A nested ConfigDict: its fields and subsections in order; `when` applies to all its fields."""

    doc: str
    fields: dict
    when: When | None = None


# ----------------------------------------------------------------------------- checking

def fail(path: str, value, want: str):
    """Raises the one-line error of a bad field: its dotted path, value and what it must be."""
    raise ConfigValueError(f"config.{path}={value!r}: {want}; set --config.{path}=<value>")


def lookup(config, path: str):
    """The value at a dotted path; a missing field is a ConfigValueError naming it."""
    node = config
    for part in path.split("."):
        if part not in node:
            raise ConfigValueError(f"config.{path} is missing; the config file must define it (docs/config.md)")
        node = node[part]
    return node


def _number(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def range_text(f: Field) -> str:
    """The bounds of a number field as text: "> 0", ">= 1", "in [0, 1)", "" when unbounded."""
    lo = (f"[{_number(f.ge)}" if f.ge is not None else f"({_number(f.gt)}" if f.gt is not None else None)
    hi = (f"{_number(f.le)}]" if f.le is not None else f"{_number(f.lt)})" if f.lt is not None else None)
    if lo and hi:
        return f"in {lo}, {hi}"
    if lo:
        return (">= " if f.ge is not None else "> ") + lo[1:]
    if hi:
        return ("<= " if f.le is not None else "< ") + hi[:-1]
    return ""


def _in_range(f: Field, x) -> bool:
    return ((f.ge is None or x >= f.ge) and (f.gt is None or x > f.gt) and (f.le is None or x <= f.le)
            and (f.lt is None or x < f.lt))


def _choice_text(options) -> str:
    return ", ".join('""' if x == "" else str(x) for x in options)


def _is(kind: type, x) -> bool:
    if kind is float:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    if kind is int:
        return isinstance(x, int) and not isinstance(x, bool)
    return isinstance(x, kind)


_KIND_TEXT = {int: "an integer", float: "a finite number", bool: "True or False", str: "a string"}


def check_field(path: str, f: Field, v) -> None:
    """Type, range and choices of one value; a ConfigValueError naming the field otherwise."""
    if v is None and isinstance(f.default, Derived):
        return  # follows from its section
    if f.kind is tuple:
        if isinstance(v, (str, bytes)) or not isinstance(v, (tuple, list)):
            fail(path, v, "must be a tuple, e.g. (a, b)")
        v = tuple(v)
        if f.nonempty and not v:
            fail(path, v, "must not be empty")
        if len(set(v)) != len(v):
            fail(path, v, "has repeated values")
        for x in v:
            if not _is(f.item, x):
                fail(path, v, f"{x!r} is not {_KIND_TEXT[f.item]}" if f.item is not bool else f"{x!r} is not a bool")
            if f.choices and x not in f.choices:
                fail(path, v, f"{x!r} is not one of {_choice_text(f.choices)}")
            if f.item in (int, float) and not _in_range(f, x):
                fail(path, v, f"every value must be {range_text(f)} ({x!r} is not)")
        return
    if not _is(f.kind, v):
        fail(path, v, "must be " + _KIND_TEXT[f.kind] + (" (a number as text, e.g. \"0.0\")" if f.or_number else ""))
    if f.or_number and v not in f.choices:
        x = _number_or_choice(v)
        if not _is(float, x):
            fail(path, v, f"must be one of {_choice_text(f.choices)} or a finite number written as text, e.g. \"0.0\"")
        if not _in_range(f, x):
            fail(path, v, f"must be {range_text(f)}")
        return
    if f.choices and v not in f.choices:
        fail(path, v, f"must be one of {_choice_text(f.choices)}")
    if f.nonempty and not v.strip():
        fail(path, v, "must not be empty")
    if f.kind in (int, float) and not _in_range(f, v):
        fail(path, v, f"must be {range_text(f)}")


# ----------------------------------------------------------------------------- docs/config.md

def default_text(f: Field) -> str:
    """The default as docs/config.md writes it (a derived one as its rule)."""
    d = f.default
    if isinstance(d, Derived):
        return d.doc
    if isinstance(d, tuple):
        return "(" + ", ".join(_value_text(x) for x in d) + ("," if len(d) == 1 else "") + ")"
    return _value_text(d)


def _value_text(x) -> str:
    return f'"{x}"' if isinstance(x, str) else _number(x)


def allowed_text(f: Field) -> str:
    """Choices and bounds as docs/config.md writes them."""
    parts = []
    if f.or_number:
        parts.append(f"{_choice_text(f.choices)}, or a number as text")
    elif f.choices:
        parts.append("one of " + _choice_text(f.choices))
    if range_text(f):
        parts.append(("each " if f.kind is tuple else "") + range_text(f))
    if f.nonempty:
        parts.append("not empty")
    return "; ".join(parts)


def type_text(f: Field) -> str:
    """The type's name in docs/config.md."""
    return f"tuple of {f.item.__name__}" if f.kind is tuple else f.kind.__name__


def cell(text: str) -> str:
    """Text made safe for a Markdown table cell."""
    return text.replace("|", "\\|").replace("<", "&lt;")
