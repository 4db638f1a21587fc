"""One attempt of one item, in its own process: ``python -m headforge.batch.child ITEM_DIR/attempt.json``.

The process runs in the manifest's folder (relative paths are the manifest's), with the thread count the batch gave
it, writes ``status.json`` as ``running`` with a heartbeat every few seconds, runs the job's command (checked
against its declared types, as the CLI does), then writes the item's pictures, its report page and the final
record: ``done`` with headline metrics and outputs, or ``failed`` with the error's kind, class, message and
``traceback.txt``. Exit status: 0 done, 2 the item's input or options are wrong, 1 a bug, 128 + N stopped by
signal N (training writes a checkpoint first).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from headforge.batch.jobs import JOBS, REPORTED, JobKind, first_match, headline_metrics
from headforge.batch.manifest import option_value
from headforge.batch.records import (
    HEARTBEAT_SECONDS,
    FailureKind,
    ItemError,
    ItemRecord,
    ItemState,
    host,
    log_attempt,
    now,
    write_record,
)
from headforge.batch.spec import PARENT_ENV, AttemptSpec
from headforge.errors import HeadforgeError, Interrupted, Terminated, raise_terminated
from headforge.validation import checked_command

THUMB_SIZE = (320, 240)


def typed_options(job: JobKind, options: dict[str, Any]) -> dict[str, Any]:
    """JSON option values (``BatchItem.argv_options``) back to the command's types, as the manifest read them."""
    params = JOBS[job].parameters()
    return {name: option_value(name, raw, params[name][0]) for name, raw in options.items()}


class Heartbeat:
    """Rewrites the running record every few seconds until stopped (the only writer while the attempt runs)."""

    def __init__(self, folder: Path, record: ItemRecord):
        self.folder, self.record = folder, record
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        write_record(self.folder, self.record)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            write_record(self.folder, replace(self.record, heartbeat=now()))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def thumbnail(source: Path, target: Path) -> str | None:
    """A small PNG of an image (a GIF's first frame); None when the source is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            image.seek(0)
            small = image.convert("RGBA")
            small.thumbnail(THUMB_SIZE)
            target.parent.mkdir(parents=True, exist_ok=True)
            small.save(target)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return target.name


def input_picture(spec: AttemptSpec) -> Path | None:
    """The picture of an item's input: the photo, a capture's first view, a run's first render."""
    if spec.input_path is None:
        return None
    path = Path(spec.input_path)
    if path.is_file():
        return path
    if path.is_dir():
        globs = ("images/*.png", "images/*.jpg", "*/images/*.png", "timesteps/*/images/*.png", "images/*/*.png",
                 "*.png", "*.jpg", "turntable.gif", "renders/*.png")
        return first_match(path, globs)
    return None


def finish(spec: AttemptSpec, record: ItemRecord) -> ItemRecord:
    """Pictures, report and outputs of a finished job (a report that fails is a note, not a failure)."""
    job = JOBS[JobKind(spec.job)]
    thumbs = spec.folder / "thumbs"
    outputs: dict[str, str] = {}
    notes = list(record.notes)
    render = first_match(spec.output, job.renders)
    if render is not None and thumbnail(render, thumbs / "render.png"):
        outputs["render_thumb"] = "thumbs/render.png"
    if job.kind in REPORTED:
        from headforge.pipeline.report_job import write_report

        try:
            write_report(spec.output, spec.output / "report.html", overwrite=True)
        except HeadforgeError as error:
            notes.append(f"no report page: {error}")
    for label, pattern in job.links:
        hit = first_match(spec.output, (pattern,))
        if hit is not None:
            outputs[label] = hit.relative_to(spec.folder).as_posix()
    outputs["output"] = "output"
    outputs.update({k: v for k, v in record.outputs.items() if k == "input_thumb"})
    if "input_thumb" not in outputs and (spec.output / "input.png").is_file():  # a built-in photo, as the job read it
        if thumbnail(spec.output / "input.png", thumbs / "input.png"):
            outputs["input_thumb"] = "thumbs/input.png"
    return replace(record, state=ItemState.DONE, finished=now(), heartbeat=None, outputs=outputs,
                   metrics=headline_metrics(job, spec.output), notes=tuple(notes))


def run(spec: AttemptSpec) -> int:
    job = JOBS[JobKind(spec.job)]
    folder = spec.folder
    start = time.perf_counter()
    record = ItemRecord(id=spec.id, job=spec.job, key=spec.key, state=ItemState.RUNNING, attempt=spec.attempt,
                        started=now(), heartbeat=now(), pid=os.getpid(), host=host(), resumed=spec.resume)
    picture = input_picture(spec)
    if picture is not None and thumbnail(picture, folder / "thumbs" / "input.png"):
        record = replace(record, outputs={"input_thumb": "thumbs/input.png"})
    log_attempt(folder, "start", record)
    code, error = 0, None
    with Heartbeat(folder, record):
        try:
            if not spec.finish_only:
                kwargs = dict(typed_options(job.kind, spec.options), out=spec.output, overwrite=spec.overwrite)
                if job.resumable:
                    kwargs["resume"] = spec.resume
                given = Path(spec.input) if job.input_is_path else spec.input
                checked_command(job.command)(given, **kwargs)
            final = finish(spec, record)
        except Interrupted as stopped:
            code, kind, error = 128 + stopped.signum, FailureKind.INTERRUPTED, stopped
        except HeadforgeError as bad:
            code, kind, error = 2, FailureKind.INPUT, bad
        except Exception as bug:  # the item's bug is recorded; the batch goes on
            code, kind, error = 1, FailureKind.CRASH, bug
    if error is not None:
        (folder / "traceback.txt").write_text("".join(traceback.format_exception(error)))
        final = replace(record, state=ItemState.FAILED, finished=now(), heartbeat=None,
                        error=ItemError(kind, type(error).__name__, str(error), "traceback.txt"))
    final = replace(final, seconds=round(time.perf_counter() - start, 3))
    write_record(folder, final)
    log_attempt(folder, "end", final)
    print(f"headforge batch: item {spec.id} {final.state.value}" + (f": {error}" if error else ""), flush=True)
    return code


def die_with_parent() -> None:
    """In the child: be killed when the thread that started us dies; leave now if it already has."""
    expected = os.environ.get(PARENT_ENV)
    if expected is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(expected):
        os._exit(137)


def main(argv: list[str]) -> int:
    die_with_parent()
    spec = AttemptSpec(**json.loads(Path(argv[0]).read_text()))
    os.chdir(spec.base)
    signal.signal(signal.SIGTERM, raise_terminated)  # a timeout's first signal
    from headforge.threads import configure_threads

    configure_threads(spec.threads)
    try:
        return run(spec)
    except Terminated:
        return 143


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
