"""Write outputs so that a failed run never leaves something that looks complete.

One mechanism, three shapes, all built on a staging name beside the final one and ``os.replace``
(atomic on one filesystem), so a reader sees the old output, nothing, or the complete new output:

* :func:`atomic_path`: one file, written under a staging name and renamed into place.
* :func:`atomic_directory`: a whole directory, built under a staging name beside it and swapped in
  at the end; an existing directory (``overwrite=True``) is replaced only then, so a failed run
  leaves it as it was.
* :func:`atomic_merge`: files staged in a staging directory inside an existing directory and moved
  in one by one, the completion marker (``last``, e.g. ``metrics.json``) removed first and moved
  last. For jobs that continue in place (``--resume``).

Staging names are ``NAME.partial-<host>-<uuid4>``: unique across processes and across the hosts of
a cluster that share a filesystem (pids repeat from host to host). Files are created by their
writers under these fresh names with the process umask, as any new file; nothing here reads or
changes the umask. A process killed mid-write leaves only ``*.partial-*`` entries behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from headforge.errors import InputError


def staging_name(name: str, kind: str = "partial") -> str:
    """``NAME.<kind>-<host>-<uuid4 hex>``: a fresh name no other process or host will pick."""
    host = re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())[:40] or "host"
    return f"{name}.{kind}-{host}-{uuid.uuid4().hex}"


def check_output_path(path: str | Path, *, directory: bool) -> Path:
    """Refuse, before any work, an output that cannot be written: a directory where a file is
    wanted (or the reverse), or a path under an existing file."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputError("the output path is a symlink that leads nowhere (dangling, or a loop)", path=path,
                         fix="remove the link, or choose another output path")
    if path.exists() and path.is_dir() != directory:
        what = "a file" if directory else "a directory"
        raise InputError(f"the output path is {what}", path=path,
                         fix=f"give a path for a new {'directory' if directory else 'file'}, or remove it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"the output path lies under a file ({parent})", path=path,
                                 fix="choose an output inside a directory")
            break
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a fresh staging path beside ``path`` for a writer to create; on success rename it to
    ``path``, else delete it. The staging name keeps the suffix for writers that choose a format
    by extension."""
    path = check_output_path(path, directory=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(staging_name(path.stem) + path.suffix)
    try:
        yield tmp
        if not tmp.is_file():
            raise RuntimeError(f"the writer created no file at {tmp}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "xb") as f:  # exclusive create: the staging name is ours
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def _swap_in(staging: Path, path: Path) -> None:
    """Move the finished ``staging`` directory to ``path``, replacing what is there."""
    if path.exists():
        old = path.with_name(staging_name(path.name, "old"))
        os.replace(path, old)
        os.replace(staging, path)
        shutil.rmtree(old)
    else:
        os.replace(staging, path)


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging directory that becomes ``path`` only when the block finishes without error.

    If ``path`` exists and ``overwrite`` is false, nothing is touched and an ``InputError`` names
    it. On failure the staging directory is removed and any previous ``path`` is left as it was.
    """
    path = check_output_path(path, directory=True)
    if path.exists() and not overwrite:
        raise InputError("output directory already exists", path=path,
                         fix="choose another --out or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(staging_name(path.name))
    staging.mkdir()
    try:
        yield staging
        if path.exists() and not overwrite:  # created by someone else while we worked
            raise InputError("output directory appeared while this run was writing", path=path,
                             fix="choose another --out or pass --overwrite")
        _swap_in(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


@contextlib.contextmanager
def atomic_merge(path: str | Path, *, last: str | None = None) -> Iterator[Path]:
    """Yield a staging directory inside the directory ``path`` (created if missing); on success move
    each entry into ``path``, replacing same-named entries. An existing ``last`` is deleted before
    anything moves and the new one moves last, so ``path`` never shows a stale ``last`` beside new
    files. On failure the staging directory is removed and ``path`` keeps its entries."""
    path = check_output_path(path, directory=True)
    path.mkdir(parents=True, exist_ok=True)
    staging = path / staging_name("final")
    staging.mkdir()
    try:
        yield staging
        if last is not None:
            (path / last).unlink(missing_ok=True)
        for item in sorted(staging.iterdir(), key=lambda p: (p.name == last, p.name)):
            target = path / item.name
            if target.is_dir():
                _swap_in(item, target)
            else:
                os.replace(item, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
