"""Load typed dataclass configs from TOML presets (strictly: unknown keys are errors).

The shipped presets are package data, ``headforge/presets/<name>.toml``, read through ``importlib.resources``
so that they are found from a wheel or a non-editable install as well as from the source tree.

Nested dataclasses are tables; enums are given by value; tuples as arrays. A preset only lists the
fields it changes; everything else keeps the dataclass default.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from headforge.errors import InputError
from headforge.io.files import is_missing, read_toml
from headforge.validation import OptionError

T = TypeVar("T")

PRESETS_PACKAGE = "headforge.presets"


def preset_dir() -> Path:
    """The folder of the shipped presets (a plain directory: headforge is installed unzipped)."""
    return Path(str(resources.files(PRESETS_PACKAGE)))


def preset_names() -> list[str]:
    """The shipped presets' names, e.g. ``gaussians_fast``."""
    return sorted(p.name.removesuffix(".toml") for p in resources.files(PRESETS_PACKAGE).iterdir()
                  if p.name.endswith(".toml"))


def _convert(value: Any, tp: Any, where: str, path: Path) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, args[0], where, path) if len(args) == 1 else value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(f"{where} must be a table", path=path, fix=f"write it as [{where}] (or under it)")
        return from_dict(tp, value, path, f"{where}.")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in tp)
            raise InputError(f"{where} = {value!r} is not one of: {choices}", path=path,
                             fix="use one of the listed values") from None
    if origin is tuple:
        if not isinstance(value, list | tuple):  # TOML arrays; tuples from a saved config (asdict)
            raise OptionError(where, value, "an array", path=path)
        return tuple(value)
    if tp is Path:
        if not isinstance(value, str):
            raise OptionError(where, value, "a path (a string)", path=path)
        return Path(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value  # its type and range are checked by the config class (headforge.validation)


def from_dict(cls: type[T], data: dict, path: Path, prefix: str = "") -> T:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(prefix + k for k in unknown)} for {cls.__name__}",
                         path=path, fix=f"valid options: {', '.join(sorted(fields))}")
    kwargs = {k: _convert(v, hints[k], f"{prefix}{k}", path) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except OptionError as e:  # the declared ranges (headforge.validation): name the file and the key
        raise e.relocated(prefix + e.option.removeprefix(f"{cls.__name__}."), path) from None
    except ValueError as e:  # a hand-written check of the dataclass: name the file
        raise InputError(str(e), path=path, fix=f"fix the value{' under ' + prefix.rstrip('.') if prefix else ''}") \
            from None


def config_path(path: str | Path) -> Path:
    """A preset's file: a path as given, or a bare name like ``fields_fast`` looked up in the shipped presets."""
    path = Path(path)
    return preset_dir() / f"{path}.toml" if not path.suffix and not path.exists() else path


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a TOML preset into ``cls``; a bare name like ``gaussians_fast`` is a shipped preset."""
    path = config_path(path)
    if is_missing(path):
        raise InputError("config file not found", path=path,
                         fix=f"give a TOML file, or one of the shipped presets: {', '.join(preset_names())}")
    return from_dict(cls, read_toml(path, "config file"), path)  # folders, loops, not UTF-8, bad TOML
