"""One guarded way to read files: every failure becomes an ``InputError`` naming the file.

Readers of camera files, images, meshes, presets, splat PLYs, checkpoints and ``field.pt`` go through
these helpers instead of ``open`` / ``json.loads`` / ``torch.load``, so that a missing file, a folder
where a file was expected, a symlink loop, a file without read permission, an empty file, bytes that
are not UTF-8, malformed JSON or TOML, a value of the wrong JSON type, a corrupt torch file and
non-finite or empty data are all refused with ``InputError(problem, path=..., fix=...)``, which the
CLI prints as ``headforge: error: FILE: problem`` plus ``Fix: ...``.

``what`` names the file in messages ("camera file", "splat PLY", "checkpoint"); ``fix`` overrides the
suggested fix. Every helper returns the path as the caller spelled it (never the resolved one), so
messages name what the user wrote.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import tomllib
import zipfile
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from headforge.errors import InputError

PathLike = str | Path


class InputKind(StrEnum):
    """What a path must be."""

    FILE = "file"
    DIRECTORY = "directory"
    ANY = "any"  # a file or a directory


def is_missing(path: PathLike) -> bool:
    """Whether nothing at all is at ``path`` (a broken link counts as missing). A symlink loop, in the path
    itself or in a folder above it, and a permission problem count as present, so that a caller that words
    "missing" its own way still hands them to :func:`resolve_input` to be named."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return False


def resolve_input(path: PathLike, *, kind: InputKind = InputKind.FILE, what: str = "file",
                  fix: str | None = None) -> Path:
    """``path`` after checking that it exists, is of ``kind``, is readable and is no symlink loop."""
    path = Path(path)
    try:
        path.resolve(strict=True)  # RuntimeError (Python < 3.13) or OSError(ELOOP) on a loop
        mode = path.stat().st_mode  # follows links; every component must be reachable
    except RuntimeError:
        raise InputError(f"{what} is a symlink loop", path=path,
                         fix=fix or "point the link at a real file or folder") from None
    except FileNotFoundError:
        broken = f" (a broken symlink to {os.readlink(path)})" if path.is_symlink() else ""
        raise InputError(f"{what} not found{broken}", path=path,
                         fix=fix or "check the path (and the working directory)") from None
    except PermissionError:
        raise InputError(f"{what} cannot be read: permission denied", path=path,
                         fix=fix or "make the file (and the folders above it) readable") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{what} is a symlink loop", path=path,
                             fix=fix or "point the link at a real file or folder") from None
        if e.errno == errno.ENOTDIR:
            raise InputError(f"{what} not found: a folder in its path is a file", path=path,
                             fix=fix or "check the path") from None
        raise InputError(f"{what} cannot be read ({e.strerror})", path=path, fix=fix or "check the path") from None
    is_dir = os.path.isdir(path)
    if kind is InputKind.FILE and is_dir:
        raise InputError(f"{what} is a folder, not a file", path=path, fix=fix or "give the file itself")
    if kind is InputKind.DIRECTORY and not is_dir:
        raise InputError(f"{what} is not a folder", path=path, fix=fix or "give the folder that holds it")
    if not is_dir and not os.path.isfile(path):
        raise InputError(f"{what} is not a regular file (mode {mode:o})", path=path,
                         fix=fix or "give a regular file")
    if not os.access(path, os.R_OK | (os.X_OK if is_dir else 0)):
        raise InputError(f"{what} cannot be read: permission denied", path=path,
                         fix=fix or "make it readable (chmod u+r)")
    return path


def read_bytes(path: PathLike, what: str = "file", *, fix: str | None = None, allow_empty: bool = False) -> bytes:
    """The bytes of a readable, non-empty (unless ``allow_empty``) file."""
    path = resolve_input(path, kind=InputKind.FILE, what=what, fix=fix)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{what} cannot be read ({e.strerror or e})", path=path,
                         fix=fix or "check the file and its permissions") from None
    if not data and not allow_empty:
        raise InputError(f"{what} is empty", path=path, fix=fix or "restore or re-export the file")
    return data


def read_text(path: PathLike, what: str = "text file", *, fix: str | None = None, allow_empty: bool = False) -> str:
    """UTF-8 text (a leading byte-order mark is dropped); other encodings name the first bad byte."""
    data = read_bytes(path, what, fix=fix, allow_empty=allow_empty)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"{what} is not UTF-8 text (byte {e.start}, line {line})", path=path,
                         fix=fix or "save it as UTF-8") from None


def _type_name(value: Any) -> str:
    return {dict: "a JSON object", list: "a JSON list"}.get(type(value), f"a {type(value).__name__}")


def read_json(path: PathLike, what: str = "JSON file", *, expect: type = dict, fix: str | None = None) -> Any:
    """Parsed JSON whose top level is an ``expect`` (dict: an object, list: a list)."""
    text = read_text(path, what, fix=fix)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", path=path,
                         fix=fix or "repair the JSON (a trailing comma or a missing bracket is common)") from None
    if not isinstance(value, expect):
        raise InputError(f"{what} holds {_type_name(value)} at the top level, not {_type_name(expect())}",
                         path=path, fix=fix or "check the file's structure")
    return value


def read_toml(path: PathLike, what: str = "TOML file", *, fix: str | None = None) -> dict:
    """A parsed TOML document (an empty file is an empty table)."""
    text = read_text(path, what, fix=fix, allow_empty=True)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"invalid TOML: {e}", path=path, fix=fix or "fix the syntax") from None


def image_header(path: PathLike, what: str = "image", *, fix: str | None = None) -> tuple[int, int, str]:
    """(width, height, PIL mode) from an image's header, without decoding the pixels."""
    path = resolve_input(path, what=what, fix=fix)
    try:
        with Image.open(path) as im:
            return im.size[0], im.size[1], im.mode
    except UnidentifiedImageError:
        raise InputError(f"{what} is not an image (or in a format that cannot be read)", path=path,
                         fix=fix or "re-export it as PNG or JPEG") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{what} cannot be read ({e})", path=path, fix=fix or "re-export it as PNG or JPEG") from None


def read_pil_image(path: PathLike, what: str = "image", *, fix: str | None = None) -> Image.Image:
    """A fully decoded PIL image; truncated files and files that are not images are refused."""
    path = resolve_input(path, what=what, fix=fix)
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except UnidentifiedImageError:
        raise InputError(f"{what} is not an image (or in a format that cannot be read)", path=path,
                         fix=fix or "re-export it as PNG or JPEG") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL: "image file is truncated", bad chunks, ...
        raise InputError(f"{what} is corrupt or truncated ({e})", path=path,
                         fix=fix or "re-export it as PNG or JPEG") from None


# torch.load's failures on a file that is not a torch file, or a damaged one: random bytes raise
# UnpicklingError, a cut zip RuntimeError or BadZipFile, a cut legacy pickle EOFError; a pickle naming
# classes this install lacks raises AttributeError / ImportError.
_TORCH_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError, zipfile.BadZipFile,
                 AttributeError, ImportError, UnicodeDecodeError)


def load_torch(path: PathLike, what: str, fix: str, *, device: str | torch.device = "cpu",
               expect: type = dict) -> Any:
    """``torch.load`` of one of headforge's own files (a checkpoint, ``field.pt``) whose top level is ``expect``.

    ``weights_only=False``: the payloads hold ``dataclasses.asdict`` configs whose values are StrEnum members
    and Paths, which the weights-only unpickler refuses (tests/test_io_files.py checks that it still does).
    Unpickling runs code, so load only files you trust, as with any pickle."""
    path = resolve_input(path, what=what, fix=fix)
    if path.stat().st_size == 0:
        raise InputError(f"{what} is empty", path=path, fix=fix)
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except _TORCH_ERRORS as e:
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise InputError(f"{what} is not a readable torch file ({type(e).__name__}: {detail})", path=path,
                         fix=fix) from None
    if not isinstance(payload, expect):
        raise InputError(f"{what} holds a {type(payload).__name__}, not a {expect.__name__}", path=path, fix=fix)
    return payload


def read_npz(path: PathLike, what: str, keys: tuple[str, ...], *, fix: str) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of a ``.npz`` (no pickled objects); a damaged archive or a missing key is an
    ``InputError`` naming the keys the file does have."""
    path = resolve_input(path, what=what, fix=fix)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise InputError(f"{what} lacks the keys {missing} (it has {sorted(z.files)})", path=path, fix=fix)
            return {k: z[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read npz ({type(e).__name__}: {e})", path=path, fix=fix) from None


def _as_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def require_finite(values: np.ndarray | torch.Tensor, path: PathLike | None, what: str, *, items: str = "values",
                   item_axes: int = 0, fix: str | None = None) -> None:
    """Refuse NaN / Inf, with their count. The last ``item_axes`` axes make one item (1 for pixels of an
    [H, W, C] image, for splats of an [N, K] table); an item is bad when any of its values is."""
    a = _as_numpy(values)
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.complexfloating):
        return
    good = np.isfinite(a)
    if item_axes:
        good = good.all(axis=tuple(range(a.ndim - item_axes, a.ndim)))
    bad = int(good.size - np.count_nonzero(good))
    if bad:
        raise InputError(f"{what} has {bad} of {good.size} {items} with NaN or Inf", path=path,
                         fix=fix or "re-export the data; every value must be a finite number")


def require_nonempty(values: Any, path: PathLike | None, what: str, *, fix: str | None = None) -> None:
    """Refuse an empty array, tensor or collection."""
    size = values.size if isinstance(values, np.ndarray) else (
        values.numel() if isinstance(values, torch.Tensor) else len(values))
    if size == 0:
        raise InputError(f"{what} is empty", path=path, fix=fix or "restore or re-export the file")
