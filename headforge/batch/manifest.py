"""Batch manifests: JSONL or CSV, one item a line (``id``, ``input``, ``job``, the job's options, optional
``timeout``), or a folder of photos (one ``photo`` item per image). Everything is checked before anything runs:
the file's format, unique ids, known jobs, every option against the command's declared type and range. A refusal
is a :class:`ManifestError` naming the file, the line and the fix. Inputs are not opened here: a missing input is
the item's failure, reported with the others, not the batch's.

Types: JSONL values must already have the option's type (``"steps": 300``, not ``"300"``); CSV cells are text and
are read as the option's type (an empty cell leaves the option at its default). Tuple options (export's
``format``) take a JSON list, or in CSV items separated by ``;``. Relative paths are relative to the manifest's
folder (items run there).
"""

from __future__ import annotations

import csv
import enum
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headforge.batch.jobs import BATCH_OWNED, JOBS, JobKind, job_names
from headforge.errors import InputError
from headforge.validation import OptionError, check_value, coerce_enum, constraints_of

RESERVED = ("id", "input", "job", "timeout")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic")


class ManifestError(InputError):
    """A manifest that cannot run as written (format, ids, jobs, options)."""


@dataclass(frozen=True)
class BatchItem:
    id: str
    input: str  # as written (relative to Manifest.base)
    job: JobKind
    options: dict[str, Any] = field(hash=False)  # typed values, only those the item gave
    timeout: float | None  # seconds; None: the batch's --timeout
    line: int  # 1-based line in the manifest (0 for a folder of photos)

    def argv_options(self) -> dict[str, Any]:
        """Options as JSON-able values (enums by value, tuples as lists, paths as text)."""
        return {k: _jsonable(v) for k, v in self.options.items()}


@dataclass(frozen=True)
class Manifest:
    path: Path  # the manifest file, or the folder of photos
    base: Path  # relative inputs and paths are relative to this folder
    items: tuple[BatchItem, ...]


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def read_manifest(path: str | Path) -> Manifest:
    """Read and check a manifest (``.jsonl`` / ``.csv``) or a folder of photos."""
    path = Path(path)
    if path.is_dir():
        return _photo_folder(path)
    if not path.is_file():
        raise ManifestError("manifest not found", path=path,
                            fix="give a .jsonl or .csv manifest, or a folder of photos")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"cannot read the manifest as UTF-8 text ({error})", path=path,
                            fix="write the manifest as UTF-8 JSONL or CSV") from None
    if suffix == ".jsonl":
        rows = _jsonl_rows(path, text)
    elif suffix == ".csv":
        rows = _csv_rows(path, text)
    else:
        raise ManifestError(f"a manifest must be .jsonl or .csv, not {suffix or 'a file without a suffix'}",
                            path=path, fix="write one JSON object per line (.jsonl) or a CSV with a header row "
                                           "id,input,job,... (.csv), or give a folder of photos")
    items = tuple(_item(path, line, row, from_text=suffix == ".csv") for line, row in rows)
    if not items:
        raise ManifestError("the manifest has no items", path=path, fix="add one item per line")
    _check_unique(path, items)
    return Manifest(path=path.resolve(), base=path.resolve().parent, items=items)


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ManifestError(f"line {number} is not JSON ({error.msg})", path=path,
                                fix="write one JSON object per line, e.g. "
                                    '{"id": "anna", "input": "anna.jpg", "job": "photo"}') from None
        if not isinstance(row, dict):
            raise ManifestError(f"line {number} is a JSON {type(row).__name__}, not an object", path=path,
                                fix="write one JSON object per line")
        rows.append((number, row))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    lines = text.splitlines()
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise ManifestError("the CSV manifest is empty", path=path,
                            fix="start with a header row: id,input,job") from None
    header = [h.strip() for h in header]
    missing = [k for k in ("id", "input", "job") if k not in header]
    if missing:
        raise ManifestError(f"the CSV header lacks {', '.join(missing)} (it has {', '.join(header) or 'nothing'})",
                            path=path, fix="start with a header row naming id,input,job and then the options")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise ManifestError(f"the CSV header repeats {', '.join(dupes)}", path=path, fix="name each column once")
    rows = []
    for cells in reader:
        number = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise ManifestError(f"line {number} has {len(cells)} cells, the header {len(header)}", path=path,
                                fix="give every row one cell per header column (empty cells leave defaults)")
        rows.append((number, {h: c.strip() for h, c in zip(header, cells, strict=True) if c.strip() != ""}))
    return rows


def _item(path: Path, line: int, row: dict[str, Any], *, from_text: bool) -> BatchItem:
    where = f"line {line}"
    for key in ("id", "input", "job"):
        if key not in row or row[key] in ("", None):
            raise ManifestError(f"{where} has no {key!r}", path=path, fix="give every item an id, an input and a job")
        if not isinstance(row[key], str):
            raise ManifestError(f"{where}: {key!r} must be a string, not {row[key]!r}", path=path,
                                fix=f"write {key} as a JSON string")
    item_id = row["id"]
    if not ID_PATTERN.match(item_id):
        raise ManifestError(f"{where}: id {item_id!r} is not a safe folder name", path=path,
                            fix="use letters, digits, '.', '_' and '-' (at most 128, not starting with '.' or '-')")
    try:
        job = JobKind(row["job"])
    except ValueError:
        raise ManifestError(f"{where}: unknown job {row['job']!r}", path=path,
                            fix=f"use one of {job_names()}") from None
    spec = JOBS[job]
    timeout = row.get("timeout")
    if timeout is not None:
        timeout = _timeout(path, where, timeout)
    params = spec.parameters()
    options: dict[str, Any] = {}
    for raw_key, raw in row.items():
        if raw_key in RESERVED:
            continue
        key = raw_key.replace("-", "_")
        if key in BATCH_OWNED:
            raise ManifestError(f"{where}: {raw_key!r} is set by the batch, not by an item", path=path,
                                fix="drop it (each item writes OUT/items/<id>/output; --resume and changed "
                                    "configs are handled by the batch)")
        if key not in params:
            known = ", ".join(sorted(params)) or "none"
            raise ManifestError(f"{where}: {job.value} has no option {raw_key!r}", path=path,
                                fix=f"use the options of `headforge {job.value}`: {known}")
        hint = params[key][0]
        option = f"{where}: {raw_key}"
        try:
            value = option_value(option, raw, hint, from_text=from_text)
        except OptionError as error:
            raise ManifestError(str(error.problem), path=path, fix=error.fix) from None
        options[key] = value
    return BatchItem(id=item_id, input=row["input"], job=job, options=options, timeout=timeout, line=line)


def _timeout(path: Path, where: str, value: Any) -> float:
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ManifestError(f"{where}: timeout = {value!r} is not a number of seconds > 0", path=path,
                            fix="give timeout in seconds, e.g. 600, or leave it out for the batch's --timeout")
    return seconds


def _bare_types(hint: Any) -> tuple[Any, ...]:
    _, bare = constraints_of(hint)
    if typing.get_origin(bare) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(bare) if a is not type(None))
    return (bare,)


def _item_hint(hint: Any) -> Any:
    for tp in _bare_types(hint):
        args = typing.get_args(tp) if typing.get_origin(tp) is tuple else ()
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return Any


def option_value(option: str, raw: Any, hint: Any, *, from_text: bool = False) -> Any:
    """A manifest value (JSON, or a CSV cell's text) as the option's declared type (enum members, tuples, paths),
    checked against its declaration; raises :class:`OptionError` naming ``option``."""
    value = coerce_enum(option, _from_text(raw, hint) if from_text else _from_json(raw, hint), hint)
    if isinstance(value, tuple):
        value = tuple(coerce_enum(option, v, _item_hint(hint)) for v in value)
    check_value(option, value, hint)
    return value


def _from_json(raw: Any, hint: Any) -> Any:
    """JSON values keep their type; lists become tuples, text becomes a path where a path is declared."""
    bare = _bare_types(hint)
    if isinstance(raw, list):
        return tuple(raw)
    if isinstance(raw, str) and Path in bare and str not in bare:
        return Path(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and float in bare and int not in bare:
        return float(raw)
    return raw


def _from_text(raw: str, hint: Any) -> Any:
    """A CSV cell read as the declared type (the first that fits: bool, int, float, enum, path, text)."""
    for tp in _bare_types(hint):
        if typing.get_origin(tp) is tuple:
            return tuple(part.strip() for part in raw.split(";") if part.strip())
        if tp is bool:
            low = raw.lower()
            if low in ("true", "yes", "1"):
                return True
            if low in ("false", "no", "0"):
                return False
        elif tp is int:
            if re.fullmatch(r"[+-]?\d+", raw):
                return int(raw)
        elif tp is float:
            try:
                return float(raw)
            except ValueError:
                continue
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            return raw
        elif tp is Path:
            return Path(raw)
        elif tp is str:
            return raw
    return raw  # check_value refuses it, naming what is allowed


def _check_unique(path: Path, items: tuple[BatchItem, ...]) -> None:
    seen: dict[str, int] = {}
    for item in items:
        key = item.id.lower()  # folders differ only by case on some filesystems
        if key in seen:
            raise ManifestError(f"id {item.id!r} is used on lines {seen[key]} and {item.line}", path=path,
                                fix="give every item its own id (ids name the item folders; case does not count)")
        seen[key] = item.line


def _photo_folder(folder: Path) -> Manifest:
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise ManifestError("the folder holds no photos", path=folder,
                            fix=f"give a folder of {', '.join(PHOTO_SUFFIXES)} files, or a manifest")
    items, used = [], set()
    for photo in photos:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", photo.stem).lstrip(".-_") or "photo"
        item_id, n = base[:120], 2
        while item_id.lower() in used:
            item_id, n = f"{base[:110]}-{n}", n + 1
        used.add(item_id.lower())
        items.append(BatchItem(id=item_id, input=photo.name, job=JobKind.PHOTO, options={}, timeout=None, line=0))
    return Manifest(path=folder.resolve(), base=folder.resolve(), items=tuple(items))
