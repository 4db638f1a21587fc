"""An item's key: a hash of the job, its options and the contents of its input (a file's bytes; a folder's relative
paths, sizes and bytes; a built-in's name) and of any path-valued option that names a file. The item's id is not
part of it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from headforge.batch.jobs import JOBS
from headforge.batch.manifest import BatchItem, Manifest

KEY_VERSION = 1



def _hash_path(h: hashlib._Hash, path: Path) -> None:
    if path.is_file():
        h.update(b"F")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return
    h.update(b"D")
    for sub in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = sub.relative_to(path).as_posix()
        h.update(f"{rel}\0{sub.stat().st_size}\0".encode())
        _hash_path(h, sub)


def input_path(manifest: Manifest, item: BatchItem) -> Path:
    return (manifest.base / item.input).resolve()


def is_builtin_input(item: BatchItem) -> bool:
    return not JOBS[item.job].input_is_path and (item.input == "builtin" or item.input.startswith("builtin:"))


def item_key(manifest: Manifest, item: BatchItem) -> str:
    """The item's key (see the module docstring); the input must exist (or be a built-in)."""
    h = hashlib.sha256()
    config = {"key_version": KEY_VERSION, "job": item.job.value, "options": item.argv_options()}
    h.update(json.dumps(config, sort_keys=True).encode())
    if is_builtin_input(item):
        h.update(b"builtin\0" + item.input.encode())
    else:
        _hash_path(h, input_path(manifest, item))
    for name, value in sorted(item.options.items()):
        if isinstance(value, Path):
            path = (manifest.base / value).resolve()
            if path.exists():
                h.update(f"\0option {name}\0".encode())
                _hash_path(h, path)
    return h.hexdigest()
