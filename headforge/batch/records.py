"""What a batch keeps on disk, per item, so that it can be killed at any moment and resumed.

``OUT/items/<id>/``::

    status.json     the item's record (written whole, by rename): state, key, attempt, timings, error, metrics
    attempts.jsonl  one line per attempt start and end (appended): the history the resume bench counts
    output/         the job's own output folder (written atomically by the job)
    log.txt         the attempt's stdout and stderr
    traceback.txt   the last failure's traceback
    thumbs/         input.png and render.png for the index

Each record carries the item's **key** (``keys.py``): an unchanged item is skipped on a rerun, a changed one is
redone. This module imports nothing heavy: Ray workers load it.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headforge.atomic import write_text

STATUS = "status.json"
ATTEMPTS = "attempts.jsonl"
HEARTBEAT_SECONDS = 5.0


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
