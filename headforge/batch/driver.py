"""The batch driver: read the manifest, decide per item what to do (skip, run, continue, redo), hand attempts to an
executor, retry, show progress, write ``batch.json`` and ``index.html``. It holds no job logic: items are CLI
commands run by :mod:`headforge.batch.child`.

Per item, from its record (``records.py``) and its key:

| record                                   | action                                                        |
|------------------------------------------|---------------------------------------------------------------|
| done, same key                           | skipped (reused)                                              |
| running / interrupted, same key          | continued: ``--resume`` from its checkpoint, or only finished |
|                                          | when the job's last file is there; else run again             |
| failed (input error), same key           | reported again without running (the same input fails again)   |
| failed (crash, lost, timeout), same key  | run again (from its checkpoint when it has one)               |
| any, other key (config or input changed) | redone (``--overwrite``: the old output stays until replaced) |
| none                                     | run                                                           |
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from headforge.atomic import check_output_path, write_text
from headforge.batch.attempt import record_failure
from headforge.batch.executors import Executor, Finished
from headforge.batch.jobs import JOBS
from headforge.batch.keys import input_path, is_builtin_input, item_key
from headforge.batch.manifest import BatchItem, Manifest, read_manifest
from headforge.batch.progress import Progress, duration
from headforge.batch.records import (
    RETRIED,
    FailureKind,
    ItemError,
    ItemRecord,
    ItemState,
    host,
    item_dir,
    now,
    parse_time,
    read_record,
    write_record,
)
from headforge.batch.spec import AttemptSpec
from headforge.errors import HeadforgeError, InputError
from headforge.validation import Checked, Count, NonNegativeInt, Seconds

OWNER = "batch_owner.json"
MAX_BACKOFF = 300.0


class BatchIncomplete(HeadforgeError):
    """Some items failed (each is reported in batch.json and index.html); the CLI exits 3."""


@dataclass(frozen=True)
class Plan:
    item: BatchItem
    key: str
    resume: bool = False  # continue from the output's checkpoints (else an existing output is overwritten)
    finish_only: bool = False
    reused: ItemRecord | None = None  # done (or failed for good) before: not run


@dataclass
class Queued:
    plan: Plan
    attempt: int
    not_before: float = 0.0
    retries_used: int = 0


def check_owner(out: Path, manifest: Manifest, resume: bool, force: bool) -> None:
    """Refuse an output folder that holds another manifest's batch (unless ``force``), or an earlier batch of this
    one without ``resume``; then record this manifest as the owner."""
    check_output_path(out, directory=True)
    owner_file = out / OWNER
    if out.is_dir() and any(out.iterdir()):
        if not owner_file.is_file():
            if not force:
                raise InputError("the output folder exists and is not a headforge batch", path=out,
                                 fix="choose a new --out, or pass --force to use it anyway")
        else:
            owner = json.loads(owner_file.read_text()).get("manifest")
            if owner != str(manifest.path) and not force:
                raise InputError(f"the output folder belongs to another manifest ({owner})", path=out,
                                 fix="choose another --out, or pass --force to run this manifest there (items "
                                     "with the same id and key are kept)")
            if owner == str(manifest.path) and not resume and not force:
                raise InputError("the output folder holds an earlier run of this batch", path=out,
                                 fix="pass --resume to continue it (done items are kept, changed ones redone), "
                                     "or choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text(owner_file, json.dumps({"manifest": str(manifest.path), "host": host(), "time": now()}, indent=2))


def missing_input_key(item: BatchItem) -> str:
    return "missing-" + hashlib.sha256(json.dumps([item.job.value, item.input, item.argv_options()],
                                                  sort_keys=True).encode()).hexdigest()


def plan_item(out: Path, manifest: Manifest, item: BatchItem) -> Plan:
    """What to do with one item (the table in the module docstring). A missing input is the item's failure."""
    folder = item_dir(out, item.id)
    if not is_builtin_input(item) and not input_path(manifest, item).exists():
        error = ItemError(FailureKind.INPUT, "InputError", f"{input_path(manifest, item)}: the input does not "
                          f"exist. Fix: correct line {item.line} of the manifest, or add the file", None)
        record = ItemRecord(id=item.id, job=item.job.value, key=missing_input_key(item), state=ItemState.FAILED,
                            finished=now(), error=error)
        write_record(folder, record)
        return Plan(item, record.key, reused=record)
    key = item_key(manifest, item)
    record = read_record(folder)
    output = folder / "output"
    if record is not None and record.key == key:
        if record.state is ItemState.DONE:
            return Plan(item, key, reused=record)
        if record.state is ItemState.FAILED and record.error is not None and record.error.kind is FailureKind.INPUT:
            return Plan(item, key, reused=record)
        if record.state is ItemState.RUNNING or (record.error and record.error.kind is FailureKind.INTERRUPTED):
            last = finished_file(item, output)
            if record.started and last.exists() and last.stat().st_mtime >= parse_time(record.started) - 1.0:
                return Plan(item, key, finish_only=True)  # (filesystem times may be coarser than our clock)
        # interrupted, timed out or crashed in training: continue from the checkpoints
        return Plan(item, key, resume=can_continue(item, output))
    return Plan(item, key)


def finished_file(item: BatchItem, output: Path) -> Path:
    """What exists once the item's job has finished: the file it writes last, or its (atomic) output folder."""
    job = JOBS[item.job]
    return output / job.last_file if job.last_file else output


def can_continue(item: BatchItem, output: Path) -> bool:
    """Whether the item's job can continue an unfinished output from its checkpoints (``--resume``)."""
    checkpoints = output / "checkpoints"
    return (JOBS[item.job].resumable and checkpoints.is_dir() and any(checkpoints.glob("*.pt"))
            and not finished_file(item, output).exists())


@dataclass(frozen=True)
class BatchOptions(Checked):
    """How the driver runs attempts (``headforge batch``'s options)."""

    retries: NonNegativeInt = 2  # retries of a crashed item (or one whose worker was lost)
    timeout: Seconds | None = None  # per item, unless the item gives its own
    backoff: Seconds = 5.0  # before the first retry; doubled for each further one
    threads: Count = 1  # per item


@dataclass(frozen=True)
class BatchOutcome:
    out: Path
    records: dict[str, ItemRecord]
    run_here: tuple[str, ...]  # items attempted in this run
    seconds: float

    @property
    def failed(self) -> list[ItemRecord]:
        return [r for r in self.records.values() if r.state is not ItemState.DONE]


def run_items(manifest: Manifest, out: Path, executor: Executor, options: BatchOptions,
              progress: Progress) -> BatchOutcome:
    """Plan every item, run what must run, retry what may be retried; returns every item's final record."""
    start = time.monotonic()
    plans = [plan_item(out, manifest, item) for item in manifest.items]
    records: dict[str, ItemRecord] = {}
    queue: list[Queued] = []
    for plan in plans:
        if plan.reused is not None:
            records[plan.item.id] = plan.reused
            if plan.reused.state is ItemState.DONE:
                progress.done += 1
                progress.reused += 1
            else:
                progress.failed += 1
                progress.event(f"  {plan.item.id}: failed ({plan.reused.error.error_class}, not run: "
                               f"{_first_line(plan.reused.error.message)})")
        else:
            old = read_record(item_dir(out, plan.item.id))
            first = old.attempt + 1 if old is not None and old.key == plan.key else 1
            queue.append(Queued(plan, first))
    executor.check_gpus([q.plan.item.id for q in queue
                         if JOBS[q.plan.item.job].uses_gpu(q.plan.item.options, executor.gpus)])
    progress.draw(force=True)
    run_here: list[str] = []
    in_flight: dict[str, Queued] = {}
    try:
        while queue or in_flight:
            now_t = time.monotonic()
            ready = [q for q in queue if q.not_before <= now_t]
            while ready and executor.running() < executor.capacity:
                q = ready.pop(0)
                queue.remove(q)
                spec = _spec(manifest, out, q, options)
                gpu = JOBS[q.plan.item.job].uses_gpu(q.plan.item.options, executor.gpus)
                executor.submit(spec, gpu)
                in_flight[spec.id] = q
                run_here.append(spec.id)
            progress.running = len(in_flight)
            progress.retrying = sum(1 for q in queue if q.retries_used)
            for fin in executor.wait(0.5):
                q = in_flight.pop(fin.spec.id)
                progress.running = len(in_flight)
                record = _record_of(fin)
                records[fin.spec.id] = record
                _account(record, q, queue, options, progress)
            progress.draw()
    finally:
        progress.running = len(in_flight)
    return BatchOutcome(out, records, tuple(dict.fromkeys(run_here)), time.monotonic() - start)


def _record_of(fin: Finished) -> ItemRecord:
    if fin.record is not None:
        return ItemRecord.from_json(fin.record)
    return record_failure(fin.spec, ItemError(fin.kind, "WorkerLost" if fin.kind is FailureKind.LOST else "Timeout",
                                              fin.lost or "the worker was lost", None))


def _account(record: ItemRecord, q: Queued, queue: list[Queued], options: BatchOptions, progress: Progress) -> None:
    item = q.plan.item
    if record.state is ItemState.DONE:
        progress.done += 1
        progress.finished_here += 1
        seconds = f" in {duration(record.seconds)}" if record.seconds is not None else ""
        progress.event(f"  {item.id}: done{seconds}" + (" (continued)" if record.resumed else ""))
        return
    error = record.error
    kind = error.kind if error is not None else FailureKind.CRASH
    if kind in RETRIED and q.retries_used < options.retries:
        wait = min(MAX_BACKOFF, options.backoff * 2 ** q.retries_used)
        progress.event(f"  {item.id}: {error.error_class if error else 'failed'}; retry {q.retries_used + 1} of "
                       f"{options.retries} in {wait:.0f} s")
        queue.append(Queued(replace(q.plan, finish_only=False), q.attempt + 1, time.monotonic() + wait,
                            q.retries_used + 1))
        return
    progress.failed += 1
    progress.finished_here += 1
    what = f"{error.error_class}: {_first_line(error.message)}" if error else "failed"
    progress.event(f"  {item.id}: failed ({what})")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def _spec(manifest: Manifest, out: Path, q: Queued, options: BatchOptions) -> AttemptSpec:
    item = q.plan.item
    folder = item_dir(out, item.id)
    output = folder / "output"
    # a retry continues from the checkpoints the failed attempt left, when the job can
    resume = can_continue(item, output) if q.retries_used else q.plan.resume
    return AttemptSpec(
        id=item.id, job=item.job.value, input=item.input,
        input_path=None if is_builtin_input(item) else str(input_path(manifest, item)),
        options=item.argv_options(), base=str(manifest.base), item_dir=str(folder.resolve()), key=q.plan.key,
        attempt=q.attempt, threads=options.threads, overwrite=output.exists() and not resume,
        resume=resume, timeout=item.timeout if item.timeout is not None else options.timeout,
        finish_only=q.plan.finish_only)


__all__ = ["BatchIncomplete", "BatchOptions", "BatchOutcome", "Plan", "check_owner", "plan_item", "read_manifest",
           "run_items"]
