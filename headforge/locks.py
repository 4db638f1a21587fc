"""One writer per output folder: ``OUT.lock`` beside ``OUT``, held while a command writes ``OUT``.

:func:`output_lock` is taken by every command that writes an output folder (``run``, ``reconstruct``,
``render-capture``, ``extract-mesh``) before it writes or deletes anything there, ``--overwrite`` and
``--resume`` included. The lock file sits beside the output (``OUT.lock``), so it survives the swap of
``OUT`` by :func:`headforge.atomic.atomic_directory`.

Mutual exclusion is the kernel's: the holder keeps an exclusive ``fcntl.flock`` on the lock file, which
the kernel drops when the holder dies, however it dies. The file also holds a JSON record (pid, host,
start time, command line) for the messages:

* held (the flock is taken): refused with an ``InputError`` naming the holder's pid, host and start;
* a record left by a dead process of this host (the flock is free): taken over with a one-line note;
* a record written by another host: refused, with how to remove the file once that run has ended (a
  filesystem shared between hosts may not carry flocks across them).

After taking the flock the holder checks that the path still names the file it locked (a releasing
holder unlinks the file first), so two racing processes never both win. POSIX only (``fcntl``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from headforge.atomic import check_output_path
from headforge.errors import InputError

LOCK_SUFFIX = ".lock"


@dataclass(frozen=True)
class LockRecord:
    pid: int
    host: str
    started: str  # ISO 8601, UTC
    command: str  # the holder's command line

    @classmethod
    def ours(cls) -> LockRecord:
        return cls(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "?")

    @classmethod
    def parse(cls, text: str) -> LockRecord | None:
        """The record in a lock file's text; None if empty or unreadable (a holder killed mid-write)."""
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["started"]), str(data["command"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started}: {self.command}"


def lock_path(out: str | Path) -> Path:
    """``OUT.lock``, beside the output folder ``OUT``."""
    out = Path(out)
    return out.with_name(out.name + LOCK_SUFFIX)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(fd: int) -> LockRecord | None:
    os.lseek(fd, 0, os.SEEK_SET)
    return LockRecord.parse(os.read(fd, 1 << 16).decode("utf-8", "replace"))


def _acquire(path: Path, out: Path) -> int:
    """An fd of ``path`` holding its exclusive flock and our record; raises ``InputError`` if held."""
    for _ in range(100):  # retried only when a releasing holder unlinked the file under us
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                who = holder.describe() if holder is not None else "a process that is starting (no record yet)"
                raise InputError(f"another headforge run is writing this output folder ({who})", path=out,
                                 fix="wait for it to finish, or choose another --out") from None
            try:
                same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if not same_file:
                os.close(fd)
                continue
            previous = _read(fd)
            if previous is not None and previous.host != socket.gethostname():
                raise InputError(f"the output folder is locked by a run on another host ({previous.describe()})",
                                 path=out, fix=f"if that run has ended, delete {path} and start again")
            if previous is not None:
                state = "still running, but it does not hold the lock" if pid_alive(previous.pid) else "not running"
                print(f"headforge: note: taking over the stale lock {path} of pid {previous.pid} ({state})",
                      file=sys.stderr)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(asdict(LockRecord.ours())).encode())
            os.fsync(fd)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise RuntimeError(f"could not lock {path}: it was replaced 100 times while locking")


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[Path]:
    """Hold ``OUT.lock`` (see the module docstring) for the block; yields the lock file's path.

    Raises ``InputError`` naming the holder if another run holds it. On exit the lock file is removed."""
    out = check_output_path(out, directory=True)
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, out)
    try:
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)  # while still holding the flock: a waiter re-checks the inode
        finally:
            os.close(fd)
