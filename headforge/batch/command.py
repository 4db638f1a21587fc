"""``headforge batch MANIFEST --out DIR``: the command, and ``batch.json``, the batch's summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import tyro

from headforge.atomic import write_text
from headforge.batch.driver import BatchIncomplete, BatchOptions, BatchOutcome, check_owner, run_items
from headforge.batch.manifest import Manifest, read_manifest
from headforge.batch.progress import Progress, duration
from headforge.batch.records import ItemState, now
from headforge.errors import InputError
from headforge.locks import output_lock
from headforge.validation import Count, NonNegativeInt, Seconds

SUMMARY = "batch.json"
INDEX = "index.html"
SUMMARY_FORMAT = "headforge-batch/1"


def batch(manifest: Annotated[Path, tyro.conf.Positional], out: Path, workers: Count = 1, ray: str | None = None,
          retries: NonNegativeInt = 2, timeout: Seconds | None = None, resume: bool = False, force: bool = False,
          item_threads: Count | None = None, backoff: Seconds = 5.0) -> None:
    """Run many items (photo, reconstruct, fit-rig, avatar, export, render-capture) from a manifest, each in its own
    process (or Ray task) with its own output folder: OUT/items/<id>/ (status.json, output/, log.txt), then
    OUT/batch.json and OUT/index.html. A bad item is reported, never stops the batch; exit status 3 when any failed.

    Args:
        manifest: A .jsonl or .csv manifest (id, input, job, the job's options, optional timeout), or a folder of
            photos (one photo item each).
        out: The batch's output folder.
        workers: Items run at once on this machine (each with cores / workers threads).
        ray: Run items as Ray tasks: auto (a local Ray cluster) or the head node's HOST:PORT.
        retries: Retry an item that crashed (or lost its worker) this many times, with backoff.
        timeout: Stop an item after this many seconds (an item's own timeout wins).
        resume: Continue an earlier run of this batch in OUT: done items are kept, interrupted ones continue from
            their checkpoints, items whose input or options changed are redone.
        force: Use an OUT that belongs to another manifest (or is not a batch folder).
        item_threads: Threads per item (default: the cores divided by --workers; on Ray, 1). (The global
            --threads sets the driver's own.)
        backoff: Seconds before the first retry; each further retry waits twice as long.
    """
    from headforge.batch.executors import LocalExecutor
    from headforge.threads import available_cores

    parsed = read_manifest(manifest)
    cores = available_cores()
    if ray is None and workers > cores:
        raise InputError(f"--workers {workers} is more than the {cores} core(s) this process may use",
                         fix=f"give --workers {cores} or less (each item gets cores / workers threads)")
    if ray is not None and workers != 1:
        raise InputError("--workers is for this machine; with --ray the cluster's CPUs decide",
                         fix="drop --workers, or drop --ray")
    per_item = item_threads if item_threads is not None else (1 if ray is not None else max(1, cores // workers))
    if ray is None and per_item * workers > cores:
        raise InputError(f"{workers} worker(s) x {per_item} thread(s) oversubscribe the {cores} core(s)",
                         fix="lower --item-threads or --workers")
    with output_lock(out):
        check_owner(out, parsed, resume, force)
        if ray is not None:
            from headforge.batch.ray_executor import RayExecutor

            executor = RayExecutor(ray, per_item, cores)
        else:
            executor = LocalExecutor(workers)
        print(f"batch: {len(parsed.items)} item(s) from {parsed.path} on {executor.describe()}, into {out}",
              flush=True)
        progress = Progress(len(parsed.items))
        started, t0 = now(), time.monotonic()
        options = BatchOptions(retries=retries, timeout=timeout, backoff=backoff, threads=per_item)
        cancelled = True
        try:
            outcome = run_items(parsed, out, executor, options, progress)
            cancelled = False
        finally:
            executor.close(cancel=cancelled)
            if cancelled:
                print(f"batch: stopped; continue with --resume (records in {out}/items)", flush=True)
        progress.close()
        write_summary(parsed, outcome, executor.describe(), started, time.monotonic() - t0)
    failed = outcome.failed
    print(f"batch: {len(parsed.items) - len(failed)} done, {len(failed)} failed in {duration(outcome.seconds)}; "
          f"{out / SUMMARY}, {out / INDEX}")
    if failed:
        raise BatchIncomplete(f"{len(failed)} of {len(parsed.items)} item(s) failed: "
                              + ", ".join(f"{r.id} ({r.error.error_class if r.error else r.state})" for r in failed),
                              path=out / INDEX, fix="read each failure's reason in index.html or items/<id>/"
                                                    "status.json, fix the input, then rerun with --resume")


def summary_json(manifest: Manifest, outcome: BatchOutcome, executor: str, started: str, seconds: float) -> dict:
    items = []
    for item in manifest.items:
        record = outcome.records[item.id]
        folder = f"items/{item.id}"
        items.append({
            "id": item.id, "job": item.job.value, "input": item.input, "line": item.line,
            "state": record.state.value, "seconds": record.seconds, "attempt": record.attempt,
            "resumed": record.resumed, "reused": item.id not in outcome.run_here,
            "error": None if record.error is None else record.error.to_json(),
            "metrics": record.metrics, "notes": list(record.notes), "folder": folder,
            "outputs": {label: f"{folder}/{rel}" for label, rel in record.outputs.items()},
        })
    done = sum(1 for i in items if i["state"] == ItemState.DONE.value)
    return {"format": SUMMARY_FORMAT, "manifest": str(manifest.path), "out": str(outcome.out.resolve()),
            "executor": executor, "started": started, "finished": now(), "seconds": round(seconds, 3),
            "counts": {"items": len(items), "done": done, "failed": len(items) - done,
                       "reused": sum(1 for i in items if i["reused"] and i["state"] == "done"),
                       "run_here": len(outcome.run_here)},
            "items": items}


def write_summary(manifest: Manifest, outcome: BatchOutcome, executor: str, started: str, seconds: float) -> None:
    from headforge.batch.index_html import write_index

    data = summary_json(manifest, outcome, executor, started, seconds)
    write_text(outcome.out / SUMMARY, json.dumps(data, indent=2))
    write_index(outcome.out / INDEX, data)
