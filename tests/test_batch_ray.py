"""``headforge batch --ray`` on a real Ray cluster: a head node with 2 CPUs started here (``ray start --head``, its
own temp folder, ports and token), items run as Ray tasks, a Ray worker killed mid-item, a wrong address, a cluster
that refuses to be joined (no token), a GPU item on a CPU-only cluster, and ``--ray auto`` (a local cluster started
by ``ray.init``).

Skipped when Ray is not installed (``pip install 'headforge[dist]'``), except under ``CI=true`` where it fails: CI
installs the ``dist`` extra and never skips these silently. Every batch runs as ``python -m headforge.cli`` from
this checkout (``PYTHONPATH`` points the Ray workers and the items' processes at it too).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"job": "render-capture", "input": "builtin", "rig": "ring", "num_views": 4, "resolution": 64}
# slow enough that the test sees it running before it finishes (a few seconds on one core)
SLOW = {"job": "render-capture", "input": "builtin", "rig": "sphere", "num_views": 24, "resolution": 192}
BATCH_SECONDS = 240  # a guard against a hang, not a measurement


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is not None:
        return
    reason = "Ray is not installed (pip install 'headforge[dist]')"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_env(tmp: Path) -> dict[str, str]:
    """The environment of the head node and of every batch: this checkout first, a token of our own (Ray reads
    ~/.ray/auth_token otherwise), Ray's files under ``tmp``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    env["RAY_TMPDIR"] = str(tmp)  # --ray auto's local cluster
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.pop("RAY_ADDRESS", None)
    return env


def _session_processes(sid: int) -> list[int]:
    """Live processes of session ``sid`` (what a command started with ``start_new_session`` left running)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):  # state, ppid, pgrp, session
            pids.append(int(entry.name))
    return pids


def _stop_session(sid: int) -> None:
    """Stop what is left of session ``sid`` by pid (``ray stop`` would stop every Ray on the machine)."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for pid in _session_processes(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while _session_processes(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _session_processes(sid):
            return


@pytest.fixture(scope="module")
def cluster():
    """A head node with 2 CPUs and no GPU: (address, environment for batches)."""
    _require_ray()
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Unix socket paths are at most 107 bytes
    env = _ray_env(temp / "auto")
    port = _free_port()
    ray_cli = str(Path(sys.executable).parent / "ray")
    command = [ray_cli if Path(ray_cli).is_file() else "ray", "start", "--head", "--num-cpus", "2", "--num-gpus", "0",
               "--port", str(port), "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp / "head"),
               "--include-dashboard=false", "--disable-usage-stats", "--object-store-memory", str(100 * 2**20),
               "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port()),
               "--min-worker-port", "0", "--max-worker-port", "0"]
    # its own session: every process of the cluster carries the session id of `ray start`, which teardown stops
    head = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        printed, _ = head.communicate(timeout=120)
        if head.returncode != 0:
            pytest.fail(f"ray start failed ({head.returncode}):\n{printed[-3000:]}")
        yield f"127.0.0.1:{port}", env
    finally:
        if head.poll() is None:
            head.kill()
            head.communicate()
        _stop_session(head.pid)
        shutil.rmtree(temp, ignore_errors=True)


def _manifest(folder: Path, items: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def _batch_command(manifest: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "headforge.cli", "batch", str(manifest), "--out", str(out), *args]


def _run(command: list[str], env: dict[str, str], timeout: float = BATCH_SECONDS) -> subprocess.CompletedProcess:
    """Run a batch in its own session; fails when it leaves a process behind (a Ray cluster it started)."""
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        deadline = time.monotonic() + 15
        while _session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _session_processes(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        _stop_session(proc.pid)
    assert not left, f"the batch left processes behind: {left}"
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _status(out: Path, item: str) -> dict:
    return json.loads((out / "items" / item / "status.json").read_text())


def _views(output: Path) -> int:
    """Images of the built-in rig's capture (NeRSemble layout: one timestep, one image per camera)."""
    return len(list(output.glob("timesteps/frame_00000/images/*.png")))


def _attempts(out: Path, item: str) -> list[dict]:
    lines = (out / "items" / item / "attempts.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_items_run_as_ray_tasks_and_a_bad_item_is_reported(cluster, tmp_path):
    address, env = cluster
    not_a_capture = tmp_path / "work" / "notes"
    not_a_capture.mkdir(parents=True)
    (not_a_capture / "readme.txt").write_text("not a capture")
    manifest = _manifest(tmp_path / "work", [
        {"id": "ring", **QUICK},
        {"id": "sphere", **QUICK, "rig": "sphere", "num_views": 3},
        {"id": "bad", "input": "notes", "job": "reconstruct", "steps": 2, "device": "cpu"},
    ])
    out = tmp_path / "out"
    result = _run(_batch_command(manifest, out, "--ray", address, "--retries", "1", "--backoff", "1"), env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"the Ray cluster at {address}" in result.stdout
    assert "bad (InputError)" in result.stderr

    summary = json.loads((out / "batch.json").read_text())
    assert summary["counts"] == {"items": 3, "done": 2, "failed": 1, "reused": 0, "run_here": 3}
    assert address in summary["executor"]
    for item, views in (("ring", 4), ("sphere", 3)):
        record = _status(out, item)
        assert record["state"] == "done" and record["attempt"] == 1 and record["error"] is None
        output = out / "items" / item / "output"
        assert (output / "camera_params.json").is_file()
        assert _views(output) == views
        assert (out / "items" / item / record["outputs"]["render_thumb"]).is_file()
    bad = _status(out, "bad")
    assert bad["state"] == "failed" and bad["attempt"] == 1  # an input error is not retried
    assert bad["error"]["kind"] == "input" and bad["error"]["class"] == "InputError"
    assert "camera file" in bad["error"]["message"]
    assert (out / "items" / "bad" / "traceback.txt").is_file()
    assert not (out / "items" / "bad" / "output").exists()


def _wait_running(status: Path, proc: subprocess.Popen, limit: float = 180.0) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            record = json.loads(status.read_text())
        except (FileNotFoundError, ValueError):
            record = None
        if record is not None and record["state"] == "running" and record.get("pid"):
            return record
        time.sleep(0.05)
    output = proc.communicate(timeout=30) if proc.poll() is not None else ("", "")
    pytest.fail(f"the item never ran (batch exit {proc.poll()}):\n{output[0][-2000:]}\n{output[1][-2000:]}")


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # fields after "(comm)": state, ppid, ...


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the Ray worker")
def test_a_killed_ray_worker_is_retried_and_takes_its_item_with_it(cluster, tmp_path):
    address, env = cluster
    manifest = _manifest(tmp_path / "work", [{"id": "slow", **SLOW}])
    out = tmp_path / "out"
    proc = subprocess.Popen(_batch_command(manifest, out, "--ray", address, "--retries", "1", "--backoff", "1"),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        running = _wait_running(out / "items" / "slow" / "status.json", proc)
        assert running["attempt"] == 1
        child = running["pid"]
        worker = _parent_of(child)
        cmdline = Path(f"/proc/{worker}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        assert "ray" in cmdline.lower() and worker != proc.pid, cmdline  # the Ray worker, not the driver
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(child), "the item's process outlived its Ray worker (PR_SET_PDEATHSIG)"
        stdout, stderr = proc.communicate(timeout=BATCH_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        _stop_session(proc.pid)
    assert proc.returncode == 0, stdout + stderr
    assert "slow: WorkerLost; retry 1 of 1" in stderr  # the progress lines
    record = _status(out, "slow")
    assert record["state"] == "done" and record["attempt"] == 2 and record["pid"] != child
    events = [(a["event"], a["attempt"], a["state"], a["error"]) for a in _attempts(out, "slow")]
    assert events == [("start", 1, "running", None), ("end", 1, "failed", "WorkerLost"),
                      ("start", 2, "running", None), ("end", 2, "done", None)]
    assert _views(out / "items" / "slow" / "output") == SLOW["num_views"]
    assert json.loads((out / "batch.json").read_text())["items"][0]["attempt"] == 2


def test_a_wrong_address_is_a_clear_error(cluster, tmp_path):
    _, env = cluster
    closed = f"127.0.0.1:{_free_port()}"  # nothing listens there
    manifest = _manifest(tmp_path / "work", [{"id": "a", **QUICK}])
    out = tmp_path / "out"
    result = _run(_batch_command(manifest, out, "--ray", closed), env, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no Ray cluster answers at {closed}" in result.stderr
    assert "ray start --head" in result.stderr  # the fix
    assert not (out / "items").exists()


def test_a_cluster_that_refuses_to_be_joined_is_a_clear_error(cluster, tmp_path):
    address, env = cluster
    without_token = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}  # the head asks for its token
    manifest = _manifest(tmp_path / "work", [{"id": "a", **QUICK}])
    out = tmp_path / "out"
    result = _run(_batch_command(manifest, out, "--ray", address), without_token)  # Ray retries for ~20 s
    assert result.returncode == 2, result.stdout + result.stderr  # not an internal error (1)
    assert f"cannot join the Ray cluster at {address}" in result.stderr
    assert "RAY_AUTH_MODE=token" in result.stderr  # the fix
    assert not (out / "items").exists()


def test_a_gpu_item_on_a_cpu_cluster_is_refused_before_anything_runs(cluster, tmp_path):
    address, env = cluster
    capture = tmp_path / "work" / "capture"
    capture.mkdir(parents=True)
    (capture / "transforms.json").write_text("{}")  # never read: the refusal comes first
    manifest = _manifest(tmp_path / "work", [
        {"id": "cpu", **QUICK},
        {"id": "gpu", "input": "capture", "job": "reconstruct", "steps": 2, "device": "cuda"},
    ])
    out = tmp_path / "out"
    result = _run(_batch_command(manifest, out, "--ray", address), env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "item(s) gpu run on CUDA but the Ray cluster has no GPU" in result.stderr
    assert not (out / "items" / "cpu").exists() and not (out / "items" / "gpu").exists()


def test_ray_auto_starts_a_local_cluster(cluster, tmp_path):
    _, env = cluster
    manifest = _manifest(tmp_path / "work", [{"id": "a", **QUICK}])
    out = tmp_path / "out"
    result = _run(_batch_command(manifest, out, "--ray", "auto"), env)  # and its cluster is gone after it
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on a local Ray cluster" in result.stdout
    record = _status(out, "a")
    assert record["state"] == "done" and record["attempt"] == 1
    assert _views(out / "items" / "a" / "output") == QUICK["num_views"]
