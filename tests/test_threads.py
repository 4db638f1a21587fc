"""Thread policy: core counting from affinity and cgroup quota, precedence of the settings, passive waiting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from headforge.errors import InputError
from headforge.threads import (
    apply_environment_defaults,
    available_cores,
    cgroup_cpu_quota,
    parse_cfs_quota,
    parse_cpu_max,
    pop_threads_option,
    thread_count,
)

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_max_parsing():
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("200000 100000\n") == 2.0
    assert parse_cpu_max("150000 100000") == 1.5
    assert parse_cpu_max("50000") == 0.5  # period defaults to 100 ms
    assert parse_cfs_quota("-1\n", "100000\n") is None
    assert parse_cfs_quota("300000\n", "100000\n") == 3.0


def test_cgroup_files(tmp_path):
    v2 = tmp_path / "cpu.max"
    v1 = tmp_path / "v1"
    assert cgroup_cpu_quota(v2, v1) is None  # neither cgroup version present
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("250000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v2, v1) == 2.5
    v2.write_text("100000 100000\n")  # v2 wins where both exist
    assert cgroup_cpu_quota(v2, v1) == 1.0


def test_available_cores_from_affinity_and_quota():
    assert available_cores({0, 1, 2, 3}, read_quota=False) == 4
    assert available_cores({0, 1, 2, 3}, 2.0) == 2  # the quota caps the affinity
    assert available_cores({0, 1, 2, 3}, 2.9) == 2  # floored: a partial core is not a thread's worth
    assert available_cores({0, 1, 2, 3}, 0.3) == 1  # never below one
    assert available_cores({5}, 8.0) == 1  # the affinity caps the quota
    assert available_cores(set(), read_quota=False) == 1
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


def test_thread_count_precedence():
    env = {"HEADFORGE_THREADS": "3", "OMP_NUM_THREADS": "5"}
    assert thread_count(2, env, cores=7) == 2  # --threads first
    assert thread_count(None, env, cores=7) == 3  # then HEADFORGE_THREADS
    assert thread_count(None, {"OMP_NUM_THREADS": "5,2"}, cores=7) == 5  # then the user's OMP_NUM_THREADS
    assert thread_count(None, {}, cores=7) == 7  # then the available cores
    for bad in ({"HEADFORGE_THREADS": "0"}, {"HEADFORGE_THREADS": "two"}):
        with pytest.raises(InputError, match="HEADFORGE_THREADS"):
            thread_count(None, bad, cores=7)


def test_environment_defaults_never_override_the_user():
    env: dict[str, str] = {}
    apply_environment_defaults(env)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert int(env["OMP_NUM_THREADS"]) == available_cores()
    env = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "7", "HEADFORGE_THREADS": "3"}
    apply_environment_defaults(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "7", "HEADFORGE_THREADS": "3"}
    env = {"HEADFORGE_THREADS": "3"}
    apply_environment_defaults(env)
    assert env["OMP_NUM_THREADS"] == "3"


def test_pop_threads_option():
    assert pop_threads_option(["run", "--steps", "3"]) == (None, ["run", "--steps", "3"])
    assert pop_threads_option(["--threads", "2", "run"]) == (2, ["run"])
    assert pop_threads_option(["run", "--threads=1", "--out", "x"]) == (1, ["run", "--out", "x"])
    assert pop_threads_option(["run", "--", "--threads", "2"]) == (None, ["run", "--", "--threads", "2"])
    with pytest.raises(InputError, match="needs a value"):
        pop_threads_option(["run", "--threads"])
    with pytest.raises(InputError, match="positive"):
        pop_threads_option(["--threads", "-1", "run"])


def _spincount(code: str, **env: str) -> str:
    """libgomp's effective spin count (0: passive waiting) as it reports it at start-up."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**clean, "OMP_DISPLAY_ENV": "VERBOSE", **env})
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stderr.splitlines() if "GOMP_SPINCOUNT" in x)
    return line.split("=")[1].strip().strip("'")


def test_passive_waiting_takes_effect_in_torchs_openmp():
    """Importing headforge before torch makes torch's bundled libgomp sleep instead of spinning."""
    passive = _spincount("import headforge, torch; torch.ones(8).sum()")
    default = _spincount("import torch, headforge; torch.ones(8).sum()")  # too late: libgomp already read its env
    active = _spincount("import headforge, torch; torch.ones(8).sum()", OMP_WAIT_POLICY="ACTIVE")
    assert passive == "0"
    assert int(default) > 0 and int(active) > int(default)  # the user's ACTIVE is kept


def test_cli_threads_option_sets_torch_threads(capsys):
    import torch

    from headforge.cli import main

    before = torch.get_num_threads()
    try:
        assert main(["--threads", "1", "inspect", "/nonexistent/capture"]) == 2  # the command fails, threads set
        assert torch.get_num_threads() == 1
        assert main(["--threads", "zero", "inspect", "/nonexistent/capture"]) == 2
        assert "--threads" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
