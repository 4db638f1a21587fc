"""Run one attempt of one item in a child process and return its final record; the same function runs in the
local executor's threads and inside a Ray task.

The child (``headforge.batch.child``) gets its own process group (a timeout stops the job and anything it
started) and asks the kernel to kill it when the thread that started it dies (``PR_SET_PDEATHSIG``): a driver or
Ray worker killed with ``kill -9`` takes its items with it, so no orphan keeps writing after the batch is gone.

Stopping: past the timeout, or when ``cancel`` is set, the group gets SIGTERM (training writes a checkpoint),
then SIGKILL after ``grace`` seconds. A child that dies without writing its final record (killed, out of memory)
is recorded as a crash with the end of its log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from headforge.batch.records import (
    FailureKind,
    ItemError,
    ItemRecord,
    ItemState,
    host,
    log_attempt,
    now,
    read_record,
    write_record,
)
from headforge.batch.spec import ATTEMPT_FILE, PARENT_ENV, AttemptSpec

GRACE_SECONDS = 20.0
POLL_SECONDS = 0.25
LOG_TAIL = 1500


PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding this headforge package


def child_environment(threads: int) -> dict[str, str]:
    """The child's environment: its thread count, our pid (``die_with_parent``), and this headforge first on the
    path (the child runs the same code as the driver, even when another copy is installed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["HEADFORGE_THREADS"] = env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    env[PARENT_ENV] = str(os.getpid())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _stop(proc: subprocess.Popen, grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _log_tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-LOG_TAIL:].strip()


def remove_leftovers(folder: Path) -> list[Path]:
    """Staging entries (``*.partial-*``, headforge/atomic.py) a killed attempt left in the item folder and its output;
    no other process writes there (the batch holds its lock and runs one attempt of an item at a time)."""
    found = list(folder.glob("output.partial-*"))
    output = folder / "output"
    if output.is_dir():
        found += list(output.rglob("*.partial-*"))
    found = [p for p in found if not any(q in p.parents for q in found)]
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return found


def run_attempt(spec: AttemptSpec, cancel: threading.Event | None = None, grace: float = GRACE_SECONDS) -> dict:
    """Run the attempt to its end; returns the item's final record (``ItemRecord.to_json()``)."""
    folder = spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    leftovers = remove_leftovers(folder)
    (folder / ATTEMPT_FILE).write_text(json.dumps(spec.to_json(), indent=2))
    log = folder / "log.txt"
    start = time.perf_counter()
    with open(log, "ab") as sink:
        sink.write(f"\n=== attempt {spec.attempt} on {host()} at {now()} ===\n".encode())
        for path in leftovers:
            sink.write(f"removed {path.relative_to(folder)}, left by an attempt that was killed\n".encode())
        sink.flush()
        proc = subprocess.Popen([sys.executable, "-m", "headforge.batch.child", str(folder / ATTEMPT_FILE)],
                                cwd=spec.base, env=child_environment(spec.threads), stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        stopped: FailureKind | None = None
        try:
            while True:
                try:
                    proc.wait(POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if spec.timeout is not None and time.perf_counter() - start > spec.timeout:
                    stopped = FailureKind.TIMEOUT
                elif cancel is not None and cancel.is_set():
                    stopped = FailureKind.INTERRUPTED
                if stopped is not None:
                    _stop(proc, grace)
                    break
        finally:
            if proc.poll() is None:  # the caller is unwinding (ctrl-C): take the child down too
                _stop(proc, grace)
    seconds = round(time.perf_counter() - start, 3)
    record = read_record(folder)
    if stopped is None and _this_attempt(record, spec) and record.state in (ItemState.DONE, ItemState.FAILED):
        return record.to_json()
    if stopped is FailureKind.TIMEOUT:
        error = ItemError(FailureKind.TIMEOUT, "Timeout", f"stopped after {spec.timeout:g} s (the item's time "
                          "limit); raise --timeout or the item's timeout to let it finish", None)
    elif stopped is FailureKind.INTERRUPTED:
        error = ItemError(FailureKind.INTERRUPTED, "Interrupted", "the batch was stopped while the item ran", None)
    else:
        code = proc.returncode
        how = f"killed by signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exited with {code}"
        error = ItemError(FailureKind.CRASH, "ProcessDied", f"the item's process {how} before it finished; "
                          f"the end of its log:\n{_log_tail(log)}", None)
    return record_failure(spec, error, seconds).to_json()


def _this_attempt(record: ItemRecord | None, spec: AttemptSpec) -> bool:
    return record is not None and record.key == spec.key and record.attempt == spec.attempt


def record_failure(spec: AttemptSpec, error: ItemError, seconds: float | None = None) -> ItemRecord:
    """Write the final record of an attempt that could not write its own (stopped, died, its worker lost): the
    attempt's running record (pid, start, thumbnails) turned failed, or a new one when it never wrote any."""
    record = read_record(spec.folder)
    if not _this_attempt(record, spec):
        record = ItemRecord(id=spec.id, job=spec.job, key=spec.key, state=ItemState.RUNNING, attempt=spec.attempt,
                            started=now(), host=host())
    final = replace(record, state=ItemState.FAILED, finished=now(), heartbeat=None, error=error,
                    seconds=seconds if seconds is not None else record.seconds)
    write_record(spec.folder, final)
    log_attempt(spec.folder, "end", final)
    return final
