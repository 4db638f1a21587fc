"""The output-folder lock: one writer per folder, across real processes; stale locks taken over, foreign ones not."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from headforge.errors import InputError
from headforge.locks import LockRecord, lock_path, output_lock, pid_alive

ROOT = Path(__file__).resolve().parents[1]

# A child that takes the lock on argv[1], says WON (or REFUSED and the message) and holds it until stdin closes.
HOLDER = """
import sys
from headforge.errors import InputError
from headforge.locks import output_lock
try:
    with output_lock(sys.argv[1]):
        print("WON", flush=True)
        sys.stdin.read()
except InputError as e:
    print("REFUSED", str(e).replace(chr(10), " "), flush=True)
"""


def child(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def test_a_second_process_is_refused_with_the_holders_pid_and_host(tmp_path):
    out = tmp_path / "run"
    holder = child(out)
    try:
        assert holder.stdout.readline().strip() == "WON"
        record = LockRecord.parse(lock_path(out).read_text())
        assert record is not None and record.pid == holder.pid and record.host == socket.gethostname()
        with pytest.raises(InputError, match=rf"another headforge run .*pid {holder.pid} on host "
                                             rf"{socket.gethostname()}") as refused:
            with output_lock(out):
                pass
        assert refused.value.path == out
        assert lock_path(out).is_file()  # the refused attempt left the holder's lock alone
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not lock_path(out).exists()  # released: removed
    with output_lock(out) as path:  # and free again
        assert LockRecord.parse(path.read_text()).pid == os.getpid()


def test_racing_processes_never_both_win(tmp_path):
    out = tmp_path / "run"
    procs = [child(out) for _ in range(4)]
    try:
        answers = [p.stdout.readline().split()[0] for p in procs]  # each answers while the winner holds on
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            p.wait(timeout=60)
    assert answers.count("WON") == 1 and answers.count("REFUSED") == 3


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    pid = dead_pid()
    stale = LockRecord(pid, socket.gethostname(), "2020-01-01T00:00:00Z", "headforge reconstruct cap --out run")
    lock_path(out).write_text(json.dumps(stale.__dict__))
    with output_lock(out) as path:
        assert LockRecord.parse(path.read_text()).pid == os.getpid()
    note = capsys.readouterr().err.strip()
    assert note == f"headforge: note: taking over the stale lock {lock_path(out)} of pid {pid} (not running)"
    assert not lock_path(out).exists()


def test_an_empty_lock_file_left_by_a_killed_holder_is_taken_over(tmp_path):
    out = tmp_path / "run"
    lock_path(out).write_text("")
    with output_lock(out):
        pass


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    out = tmp_path / "run"
    foreign = LockRecord(12345, socket.gethostname() + "-elsewhere", "2020-01-01T00:00:00Z", "headforge run")
    lock_path(out).write_text(json.dumps(foreign.__dict__))
    with pytest.raises(InputError, match=r"locked by a run on another host \(pid 12345 on host .*-elsewhere") as e:
        with output_lock(out):
            pass
    assert f"delete {lock_path(out)}" in str(e.value)
    assert LockRecord.parse(lock_path(out).read_text()) == foreign  # untouched


def test_the_lock_sits_beside_the_output_and_survives_its_swap(tmp_path):
    from headforge.atomic import atomic_directory

    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with output_lock(out) as path, atomic_directory(out, overwrite=True) as stage:
        assert path == tmp_path / "run.lock"
        (stage / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert [p.name for p in out.iterdir()] == ["new.txt"]


def test_an_output_path_under_a_file_is_refused_before_locking(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="lies under a file"):
        with output_lock(tmp_path / "file" / "run"):
            pass


def test_every_writing_command_takes_the_lock(tmp_path, sample_head, tiny_capture_dir):
    """Held by someone else: each command is refused before it writes or deletes anything."""
    from types import SimpleNamespace

    import torch

    from headforge.geometry.camera_rigs import RigConfig, RigKind
    from headforge.pipeline.main_job import MainJobConfig, run_main_job
    from headforge.pipeline.reconstruct import ReconstructConfig, run_reconstruct
    from headforge.stages.mesh_stage import extract_mesh_stage
    from headforge.stages.mesh_types import MeshExtractConfig
    from headforge.stages.render_capture import RenderCaptureConfig, render_capture

    field = SimpleNamespace(cfg=SimpleNamespace(sdf=True), bounds=(torch.full((3,), -0.2), torch.full((3,), 0.2)),
                            sdf=lambda p: p.norm(dim=-1, keepdim=True) - 0.1, color=lambda p, d: torch.ones_like(p))
    rig = RigConfig(kind=RigKind.RING, num_views=4, resolution=32)
    jobs = {
        "reconstruct": lambda out, overwrite: run_reconstruct(ReconstructConfig(tiny_capture_dir, out, progress=False,
                                                                                overwrite=overwrite)),
        "run": lambda out, overwrite: run_main_job(MainJobConfig(out=out, rig=rig, overwrite=overwrite,
                                                                 progress=False)),
        "render-capture": lambda out, overwrite: render_capture(sample_head.mesh, RenderCaptureConfig(rig=rig), out,
                                                                overwrite=overwrite, progress=False),
        "extract-mesh": lambda out, overwrite: extract_mesh_stage(field, MeshExtractConfig(progress=False), out,
                                                                  overwrite=overwrite),
    }
    for name, job in jobs.items():
        for existing in (False, True):
            out = tmp_path / f"{name}-{existing}"
            if existing:
                out.mkdir()
                (out / "keep.txt").write_text(name)
            with output_lock(out):
                with pytest.raises(InputError, match=f"another headforge run .*pid {os.getpid()}"):
                    job(out, existing)
            assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f"{name}-{existing}")) == \
                ([out.name] if existing else [])
            if existing:
                assert [p.name for p in out.iterdir()] == ["keep.txt"]
