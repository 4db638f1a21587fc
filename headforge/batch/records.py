"""What a batch keeps on disk, per item, so that it can be killed at any moment and resumed.

``OUT/items/<id>/``::

    status.json     the item's record (written whole, by rename): state, key, attempt, timings, error, metrics
    attempts.jsonl  one line per attempt start and end (appended): the history the resume bench counts
    output/         the job's own output folder (written atomically by the job)
    log.txt         the attempt's stdout and stderr
    traceback.txt   the last failure's traceback
    thumbs/         input.png and render.png for the index

The **key** is a hash of the job, its options and the contents of its input (a file's bytes; a folder's relative
paths, sizes and bytes; a built-in's name) and of any path-valued option that names a file: an unchanged item is
skipped on a rerun, a changed one is redone.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headforge.atomic import write_text
from headforge.batch.jobs import JOBS
from headforge.batch.manifest import BatchItem, Manifest

STATUS = "status.json"
ATTEMPTS = "attempts.jsonl"
HEARTBEAT_SECONDS = 5.0
KEY_VERSION = 1


class ItemState(enum.StrEnum):
    PENDING = "pending"  # not started (or its record was removed)
    RUNNING = "running"  # an attempt is under way (heartbeat), or was when the batch died
    DONE = "done"
    FAILED = "failed"


class FailureKind(enum.StrEnum):
    """Why an attempt failed; decides whether it is retried."""

    INPUT = "input"  # the item's input or options are wrong (a HeadforgeError): not retried, it would fail again
    TIMEOUT = "timeout"  # over its time limit, stopped: not retried
    CRASH = "crash"  # the job raised a bug or its process died (signal, out of memory): retried
    LOST = "lost"  # the worker running it was lost (Ray worker or node died): retried
    INTERRUPTED = "interrupted"  # the batch was stopped while it ran: continued on --resume


RETRIED = frozenset({FailureKind.CRASH, FailureKind.LOST})


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class ItemError:
    kind: FailureKind
    error_class: str
    message: str
    traceback: str | None = None  # file name in the item folder

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "class": self.error_class, "message": self.message,
                "traceback": self.traceback}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ItemError:
        return cls(kind=FailureKind(data["kind"]), error_class=data["class"], message=data["message"],
                   traceback=data.get("traceback"))


@dataclass(frozen=True)
class ItemRecord:
    """``status.json``."""

    id: str
    job: str
    key: str
    state: ItemState
    attempt: int = 0  # attempts started so far for this key
    started: str | None = None
    finished: str | None = None
    heartbeat: str | None = None
    seconds: float | None = None  # the successful (or last) attempt's wall time
    pid: int | None = None
    host: str | None = None
    resumed: bool = False  # the last attempt continued from a checkpoint
    error: ItemError | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # label -> path relative to the item folder
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["error"] = None if self.error is None else self.error.to_json()
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ItemRecord:
        data = dict(data)
        data["state"] = ItemState(data["state"])
        data["error"] = None if data.get("error") is None else ItemError.from_json(data["error"])
        data["notes"] = tuple(data.get("notes", ()))
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


def item_dir(out: Path, item_id: str) -> Path:
    return out / "items" / item_id


def read_record(folder: Path) -> ItemRecord | None:
    """The item's record, or None when there is none or it cannot be read (then the item runs again)."""
    path = folder / STATUS
    try:
        return ItemRecord.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a record torn by a crash of the disk, not of a rename: run the item again


def write_record(folder: Path, record: ItemRecord) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / STATUS, json.dumps(record.to_json(), indent=2))


def log_attempt(folder: Path, event: str, record: ItemRecord) -> None:
    """Append one line to ``attempts.jsonl`` (an ``O_APPEND`` write of one line: whole or absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"event": event, "time": now(), "attempt": record.attempt, "key": record.key,
                       "state": record.state.value, "pid": record.pid, "host": record.host,
                       "error": None if record.error is None else record.error.error_class}) + "\n"
    fd = os.open(folder / ATTEMPTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_attempts(folder: Path) -> list[dict[str, Any]]:
    path = folder / ATTEMPTS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def host() -> str:
    return socket.gethostname()


# ----------------------------------------------------------------------------------------------------------- keys


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
