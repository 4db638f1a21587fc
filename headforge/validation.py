"""Option values checked where they are declared: one mechanism for config fields and command-line options.

A field or option declares its type and its allowed values once, beside it, with ``annotated_types``
metadata (the constraint vocabulary pydantic uses; it is plain metadata, checked here)::

    resolution: Annotated[int, Ge(8), Le(MAX_IMAGE_SIDE)] = 512      # or a named alias: ImageSide
    fov_deg: Annotated[float, Gt(0), Lt(180)] = 30.0

* A config dataclass derives from :class:`Checked`: constructing it checks every field (type, range,
  finiteness) before the class's own ``__post_init__`` checks relations between fields.
* A command (``headforge.cli``) is wrapped by :func:`checked_command`: its arguments are checked against
  the same annotations before its body runs, so a bad value is refused at the door, before any file is read.

Every refusal is an :class:`OptionError` that names the option, the value, what is allowed and where the
value came from: a command-line flag (``--resolution``), a preset file and key (``FILE: steps``), or the
config class (``GaussianTrainConfig.steps``) when code built it. Floats must be finite unless declared
otherwise (no NaN or inf slips through a range); ``bool`` is not accepted as a number.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at

from headforge.errors import InputError

__all__ = ["MAX_IMAGE_SIDE", "Checked", "Count", "Fraction", "ImageSide", "NonNegative", "NonNegativeInt",
           "OptionError", "Positive", "Seconds", "allowed_text", "check_value", "check_values", "checked_command",
           "constraints_of"]

# Images: an 8192 x 8192 RGBA float32 image is 1 GiB; a capture of 32 such views does not fit this project's
# 24 GiB machines, and no head capture needs more (NeRSemble: 2200 x 3208).
MAX_IMAGE_SIDE = 8192

Count = Annotated[int, at.Ge(1)]  # how many of something (steps, views, points): at least one
NonNegativeInt = Annotated[int, at.Ge(0)]
Positive = Annotated[float, at.Gt(0)]
NonNegative = Annotated[float, at.Ge(0)]
Fraction = Annotated[float, at.Ge(0), at.Le(1)]
Seconds = Annotated[float, at.Gt(0)]
ImageSide = Annotated[int, at.Ge(8), at.Le(MAX_IMAGE_SIDE)]  # pixels


class OptionError(InputError, ValueError):
    """A config field or command-line option holds a value outside what it declares (or two options that
    contradict each other). A ``ValueError`` too, as the hand-written checks it replaces raised."""

    def __init__(self, option: str, value: Any, allowed: str, *, path: str | Path | None = None,
                 fix: str | None = None):
        self.option, self.value, self.allowed = option, value, allowed
        super().__init__(f"{option} = {value!r} is not allowed", path=path,
                         fix=fix or f"give {option} a value that is {allowed}")

    def relocated(self, option: str, path: str | Path | None = None) -> OptionError:
        """The same refusal, named as the user wrote it (a flag, or a key in ``path``)."""
        return OptionError(option, self.value, self.allowed, path=path)


def constraints_of(hint: Any) -> tuple[list[Any], Any]:
    """(annotated_types constraints, the bare type) of an annotation; ``Optional`` metadata is looked into."""
    metadata: list[Any] = []
    while typing.get_origin(hint) is Annotated:
        metadata += list(hint.__metadata__)
        hint = hint.__origin__
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        inner = [constraints_of(a) for a in args]
        metadata += [c for cs, _ in inner for c in cs]
        hint = functools.reduce(lambda a, b: a | b, [bare for _, bare in inner])
    flat = []  # annotated_types constraints only (other metadata, such as tyro's markers, is not ours)
    for m in metadata:
        if isinstance(m, at.GroupedMetadata):
            flat += list(m)
        elif isinstance(m, at.BaseMetadata):
            flat.append(m)
    return flat, hint


def allowed_text(hint: Any, *, none: bool = False) -> str:
    """What an annotation allows, in words: ``an integer >= 1 and <= 8192``; ``none=True`` mentions that
    an optional field may also be left unset (neither TOML nor a flag can spell None, so by default not)."""
    constraints, bare = constraints_of(hint)
    args = typing.get_args(bare) if typing.get_origin(bare) in (typing.Union, types.UnionType) else (bare,)
    optional = type(None) in args
    if optional:
        bare = functools.reduce(lambda a, b: a | b, [a for a in args if a is not type(None)])
    words = [("none, or " if optional and none else "") + _type_words(bare)]
    for c in constraints:
        for cls, sign, attr in ((at.Gt, ">", "gt"), (at.Ge, ">=", "ge"), (at.Lt, "<", "lt"), (at.Le, "<=", "le")):
            if isinstance(c, cls):
                words.append(f"{sign} {getattr(c, attr)}")
        if isinstance(c, at.MinLen):
            words.append(f"with at least {c.min_length} item(s)")
        if isinstance(c, at.Predicate):
            words.append(f"satisfying {getattr(c.func, '__name__', 'its check')}")
    return words[0] + (" " + " and ".join(words[1:]) if len(words) > 1 else "")


def _type_words(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_words(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "none"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    names = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string", Path: "a path"}
    if tp in names:
        return names[tp]
    if typing.get_origin(tp) is tuple:
        return "a list"
    return getattr(tp, "__name__", str(tp))


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_ok(value, tp.__origin__)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is Any or isinstance(tp, typing.TypeVar):
        return True
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args, strict=True))
    if origin is not None:  # other generics (Callable, dict[...]): the origin's type only
        return isinstance(value, origin) if isinstance(origin, type) else True
    return isinstance(value, tp) if isinstance(tp, type) else True


def _constraint_ok(value: Any, c: Any) -> bool:
    if value is None:  # Optional fields: None means "not set"; the constraints are on the value
        return True
    checks = {at.Gt: lambda v: v > c.gt, at.Ge: lambda v: v >= c.ge, at.Lt: lambda v: v < c.lt,
              at.Le: lambda v: v <= c.le, at.MinLen: lambda v: len(v) >= c.min_length,
              at.MaxLen: lambda v: len(v) <= c.max_length, at.Predicate: lambda v: bool(c.func(v))}
    for cls, check in checks.items():
        if isinstance(c, cls):
            return check(value)
    raise TypeError(f"unsupported constraint {c!r}")  # a programming error: declare only supported ones


def check_value(option: str, value: Any, hint: Any) -> None:
    """Raise :class:`OptionError` unless ``value`` has the annotation's type and meets its constraints
    (the items of a tuple against the item annotation too)."""
    constraints, bare = constraints_of(hint)
    if not _type_ok(value, hint) or not all(_constraint_ok(value, c) for c in constraints):
        raise OptionError(option, value, allowed_text(hint))
    item = _item_hint(bare) if isinstance(value, tuple) else None
    if item is not None:
        for i, v in enumerate(value):
            check_value(f"{option}[{i}]", v, item)


def _item_hint(bare: Any) -> Any:
    """The item annotation of ``tuple[X, ...]`` (or of an optional one), else None."""
    union = typing.get_origin(bare) in (typing.Union, types.UnionType)
    for tp in typing.get_args(bare) if union else (bare,):
        args = typing.get_args(tp) if typing.get_origin(tp) is tuple else ()
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def coerce_enum(option: str, value: Any, hint: Any) -> Any:
    """A string given for a field declared as an enum (or an optional one) -> that enum's member; anything
    else is returned as it is. The one place strings become ``StrEnum`` members."""
    _, bare = constraints_of(hint)
    members = [a for a in (typing.get_args(bare) or (bare,)) if isinstance(a, type) and issubclass(a, enum.Enum)]
    if not isinstance(value, str) or not members or isinstance(value, enum.Enum):
        return value
    try:
        return members[0](value)
    except ValueError:
        raise OptionError(option, value, allowed_text(members[0])) from None


def check_values(obj: Any) -> None:
    """Check every field of a (frozen) dataclass instance against its declaration, turning strings given
    for enum fields into members first (errors name ``Class.field``)."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        option = f"{type(obj).__name__}.{f.name}"
        value = coerce_enum(option, getattr(obj, f.name), hints[f.name])
        if value is not getattr(obj, f.name):
            object.__setattr__(obj, f.name, value)
        check_value(option, value, hints[f.name])


class Checked:
    """Mixin for config dataclasses: fields are checked at construction, then ``__post_init__`` of the
    subclass (which must call ``super().__post_init__()`` first) checks the relations between them."""

    def __post_init__(self) -> None:
        check_values(self)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def checked_command(fn: Callable) -> Callable:
    """Wrap a CLI command so that its arguments are checked against its annotations before it runs;
    a refusal names the flag (``--fov-deg``), or the positional argument's name in capitals."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        hints = typing.get_type_hints(fn, include_extras=True)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        for name, value in bound.arguments.items():
            positional = any(repr(m) == "Positional" for m in getattr(hints.get(name), "__metadata__", ()))
            option = name.upper() if positional else flag(name)
            check_value(option, value, hints.get(name, Any))
        return fn(*args, **kwargs)

    return wrapper
