"""``headforge batch`` on this machine (the local executor), with real items: failures are per item, reruns skip
what is done and redo what changed, a crashed item is retried, a hanging one stopped, and a batch killed with
``kill -9`` resumes: done items are not redone, the interrupted reconstruction continues from its checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest
from batch_fixtures import (
    alive,
    completions,
    make_tiny_capture,
    reconstruct_item,
    record,
    render_item,
    start_batch,
    wait_for,
    write_manifest,
)

from headforge.cli import main


@pytest.fixture(scope="module")
def tiny_capture(tmp_path_factory):
    return make_tiny_capture(tmp_path_factory.mktemp("batch_capture"))


def images(out, item_id):
    return sorted((out / "items" / item_id / "output").rglob("images/*.png"))


def test_failures_are_per_item_and_reruns_skip_done_items(tiny_capture, capsys):
    folder = tiny_capture
    not_a_capture = folder / "notes"
    not_a_capture.mkdir(exist_ok=True)
    (not_a_capture / "readme.txt").write_text("no cameras here")
    rows = [render_item("r4", views=4), render_item("r3", views=3),
            {"id": "gone", "input": "missing.jpg", "job": "photo"},
            {"id": "notcap", "input": "notes", "job": "reconstruct"}]
    manifest = write_manifest(folder, *rows)
    out = folder / "out_rerun"
    assert main(["batch", str(manifest), "--out", str(out), "--workers", "2"]) == 3
    err = capsys.readouterr().err
    assert "2 of 4 item(s) failed: gone (InputError), notcap (InputError)" in err
    summary = json.loads((out / "batch.json").read_text())
    assert summary["counts"] == {"items": 4, "done": 2, "failed": 2, "reused": 0, "run_here": 3}
    by_id = {i["id"]: i for i in summary["items"]}
    assert by_id["gone"]["error"]["kind"] == "input" and "does not exist" in by_id["gone"]["error"]["message"]
    assert not (out / "items" / "gone" / "log.txt").exists()  # not run
    assert "no camera file found" in by_id["notcap"]["error"]["message"]
    assert (out / by_id["notcap"]["folder"] / "traceback.txt").is_file()
    assert len(images(out, "r4")) == 4 and len(images(out, "r3")) == 3
    assert (out / by_id["r4"]["outputs"]["render_thumb"]).is_file()
    assert (out / "index.html").is_file()

    # the same batch again: refused without --resume; with it nothing is redone
    assert main(["batch", str(manifest), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["batch", str(manifest), "--out", str(out), "--resume"]) == 3
    summary = json.loads((out / "batch.json").read_text())
    assert summary["counts"]["reused"] == 2 and summary["counts"]["run_here"] == 0
    assert [completions(out, i) for i in ("r4", "r3")] == [1, 1]

    # a changed option redoes that item only, replacing its output
    rows[1] = render_item("r3", views=5)
    write_manifest(folder, *rows)
    assert main(["batch", str(manifest), "--out", str(out), "--resume"]) == 3
    assert [completions(out, i) for i in ("r4", "r3")] == [1, 2]
    assert len(images(out, "r3")) == 5 and record(out, "r3").attempt == 1

    # another manifest may not take the folder over without --force
    other = write_manifest(folder, render_item("r4", views=4), name="other.jsonl")
    assert main(["batch", str(other), "--out", str(out), "--resume"]) == 2
    assert "belongs to another manifest" in capsys.readouterr().err
    assert main(["batch", str(other), "--out", str(out), "--force"]) == 0
    assert completions(out, "r4") == 1  # same id, same key: kept


def test_a_killed_item_is_retried_and_a_hanging_one_is_stopped(tiny_capture):
    folder = tiny_capture
    rows = [reconstruct_item("victim", steps=300), reconstruct_item("hang", steps=1_000_000, timeout=12)]
    manifest = write_manifest(folder, *rows, name="crash.jsonl")
    out = folder / "out_crash"
    proc = start_batch(manifest, out, "--workers", "2", "--retries", "1", "--backoff", "1")
    try:
        victim = wait_for(lambda: (r := record(out, "victim")) and r.state == "running" and r.pid and r, 120,
                          "the victim's first attempt to start")
        os.kill(victim.pid, signal.SIGKILL)  # the item's process dies mid-job (as on an out-of-memory kill)
        assert proc.wait(240) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
    final = record(out, "victim")
    assert final.state == "done" and final.attempt == 2, final
    lines = [json.loads(x) for x in (out / "items" / "victim" / "attempts.jsonl").read_text().splitlines()]
    ends = [(e["attempt"], e["state"], e["error"]) for e in lines if e["event"] == "end"]
    assert ends == [(1, "failed", "ProcessDied"), (2, "done", None)]
    hang = record(out, "hang")
    assert hang.state == "failed" and hang.error.kind == "timeout" and hang.attempt == 1  # not retried
    assert "12 s" in hang.error.message
    assert not alive(hang.pid)


def test_kill_9_of_the_batch_then_resume(tiny_capture):
    folder = tiny_capture
    rows = [render_item("first", views=2), render_item("second", views=3), reconstruct_item("long")]
    manifest = write_manifest(folder, *rows, name="kill.jsonl")
    out = folder / "out_kill"
    proc = start_batch(manifest, out, "--workers", "1")
    checkpoints = out / "items" / "long" / "output" / "checkpoints"
    try:
        wait_for(lambda: checkpoints.is_dir() and len(list(checkpoints.glob("*.pt"))) >= 2, 180,
                 "the reconstruction's second checkpoint")
        child = record(out, "long").pid
        proc.send_signal(signal.SIGKILL)  # the driver dies without a word ...
        proc.wait(10)
        wait_for(lambda: not alive(child), 10, "the item's process to die with the driver")  # ... and takes its item
    finally:
        if proc.poll() is None:
            proc.kill()
    assert record(out, "long").state == "running"  # what a killed batch leaves
    assert [completions(out, i) for i in ("first", "second", "long")] == [1, 1, 0]
    assert main(["batch", str(manifest), "--out", str(out), "--resume"]) == 0
    assert [completions(out, i) for i in ("first", "second", "long")] == [1, 1, 1]
    long = record(out, "long")
    assert long.resumed and long.attempt == 2
    log = (out / "items" / "long" / "log.txt").read_text().replace("\r", "\n")
    second = log[log.index("=== attempt 2"):]
    first_step = int(re.search(r"train gaussians:.*?\| *(\d+)/300", second).group(1))
    assert first_step >= 50  # continued from the second checkpoint (or a later one), not from step 0
    metrics = json.loads((out / "items" / "long" / "output" / "metrics.json").read_text())
    assert metrics["steps"] == 300
    summary = json.loads((out / "batch.json").read_text())
    assert summary["counts"] == {"items": 3, "done": 3, "failed": 0, "reused": 2, "run_here": 1}
    assert not list(out.rglob("*.partial-*"))
