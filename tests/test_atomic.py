"""atomic.py: outputs appear whole or not at all, old outputs survive failures, names never collide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from headforge import atomic
from headforge.atomic import atomic_directory, atomic_merge, atomic_path, staging_name, write_text
from headforge.errors import InputError


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root``: relative path -> bytes (None for directories)."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def make_output(path: Path) -> dict[str, bytes | None]:
    with atomic_directory(path) as stage:
        write_text(stage / "metrics.json", '{"psnr": 30}')
        (stage / "renders").mkdir()
        write_text(stage / "renders" / "a.txt", "old render")
    return snapshot(path)


def test_failed_overwrite_keeps_the_previous_directory(tmp_path):
    out = tmp_path / "out"
    before = make_output(out)
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(out, overwrite=True) as stage:
        write_text(stage / "metrics.json", '{"psnr": 10}')
        raise RuntimeError("boom")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind


def test_overwrite_swaps_the_new_directory_in_at_the_end(tmp_path):
    out = tmp_path / "out"
    make_output(out)
    with atomic_directory(out, overwrite=True) as stage:
        write_text(stage / "new.txt", "new")
        assert (out / "metrics.json").is_file() and not (out / "new.txt").exists()  # old one in place meanwhile
    assert snapshot(out) == {"new.txt": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(InputError, match="already exists"), atomic_directory(out):
        pass


def test_staging_names_differ_between_hosts_with_the_same_pid(monkeypatch):
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    names = []
    for host in ("node-a", "node-b", "node-b"):
        monkeypatch.setattr(atomic.socket, "gethostname", lambda h=host: h)
        names.append(staging_name("out"))
    assert len(set(names)) == 3
    assert names[0].startswith("out.partial-node-a-") and names[1].startswith("out.partial-node-b-")
    assert not any("4242" in n for n in names)
    monkeypatch.setattr(atomic.socket, "gethostname", lambda: "gpu01.cluster/x")
    assert staging_name("out").startswith("out.partial-gpu01_cluster_x-")  # no dots or slashes from the host


def test_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "splats.ply"
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise ValueError
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="created no file"), atomic_path(target):
        pass
    assert list(tmp_path.iterdir()) == []


KILLED_WRITER = """
import os, sys
from pathlib import Path
from headforge.atomic import atomic_directory, atomic_path, write_text
out = Path(sys.argv[1])
with atomic_directory(out / "run") as stage:
    write_text(stage / "a.txt", "complete")
    with atomic_path(out / "file.bin") as tmp:
        tmp.write_bytes(b"partial")
        os._exit(3)  # a crash: no cleanup, no exception handling
"""


def test_a_killed_process_leaves_nothing_final_looking(tmp_path):
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], capture_output=True, timeout=120)
    assert result.returncode == 3, result.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert not (tmp_path / "run").exists() and not (tmp_path / "file.bin").exists()
    assert len(names) == 2 and all(".partial-" in n for n in names), names


def test_merge_moves_files_in_and_a_failure_keeps_the_old_ones(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    write_text(out / "checkpoints" / "step_1.pt", "ckpt")
    with atomic_merge(out, last="metrics.json") as stage:
        write_text(stage / "metrics.json", "1")
        write_text(stage / "splats.ply", "one")
        (stage / "renders").mkdir()
        write_text(stage / "renders" / "x.png", "r1")
        assert not (out / "metrics.json").exists()
    first = snapshot(out)
    assert first["metrics.json"] == b"1" and first["checkpoints/step_1.pt"] == b"ckpt"
    with pytest.raises(RuntimeError), atomic_merge(out, last="metrics.json") as stage:
        write_text(stage / "splats.ply", "two")
        raise RuntimeError
    assert snapshot(out) == first
    with atomic_merge(out, last="metrics.json") as stage:
        write_text(stage / "metrics.json", "2")
        (stage / "renders").mkdir()
        write_text(stage / "renders" / "y.png", "r2")
    after = snapshot(out)
    assert after["metrics.json"] == b"2" and after["splats.ply"] == b"one"  # untouched entries stay
    assert "renders/x.png" not in after and after["renders/y.png"] == b"r2"  # directories are replaced whole
    assert not [n for n in after if ".partial-" in n or ".old-" in n]


def test_outputs_that_are_files_or_under_files_are_refused(tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for bad in (a_file, a_file / "sub", a_file / "sub" / "deeper"):
        with pytest.raises(InputError, match="file"), atomic_directory(bad, overwrite=True):
            pass
    with pytest.raises(InputError, match="under a file"), atomic_path(a_file / "x.json"):
        pass
    with pytest.raises(InputError, match="is a directory"), atomic_path(tmp_path):
        pass
    assert a_file.read_text() == "x"


UMASK_PROBE = """
import os
calls = []
real = os.umask
os.umask = lambda mask: calls.append(mask) or real(mask)
import headforge.atomic, headforge.cli, headforge.pipeline.reconstruct  # noqa: E401,F401
os.umask = real
from headforge.atomic import atomic_directory, write_text
print(len(calls))
old = real(0o027)
with atomic_directory(__import__("sys").argv[1]) as stage:
    write_text(stage / "f.txt", "x")
"""


def test_importing_headforge_leaves_the_umask_alone_and_files_follow_it(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", UMASK_PROBE, str(out)], capture_output=True, text=True,
                            timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0", "importing headforge called os.umask"
    assert (out / "f.txt").stat().st_mode & 0o777 == 0o640  # 0o666 under umask 027, as any new file
    assert out.stat().st_mode & 0o777 == 0o750
