"""The prepared GPU check (bench/gpu_check.sh): valid bash, and a CPU dry run whose plan, files, options and
parity tests all resolve."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_gpu_check_is_valid_bash():
    done = _run("-n", str(SCRIPT))
    assert done.returncode == 0, done.stderr


def test_gpu_check_dry_run_resolves_everything(tmp_path):
    done = _run(str(SCRIPT), "--dry-run", OUT=str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dry run ok" in done.stdout
    for step in ("setup", "build", "parity", "step_time", "gaussian_quality", "field_quality"):
        assert f"  {step} " in done.stdout, step
    collected = int(done.stdout.split("parity tests collected: ")[1].split()[0])
    assert collected >= 3  # gsplat, nerfacc, nvdiffrast / tiny-cuda-nn comparisons
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


@pytest.mark.parametrize("env", [{"GPU_CHECK_SECONDS": "100"}, {"LIMIT_build": "1000"}])
def test_gpu_check_dry_run_fails_over_budget(env):
    done = _run(str(SCRIPT), "--dry-run", "--only", "setup,build,gaussian_quality", **env)
    assert done.returncode == 1 and "exceed the budget" in done.stdout


def test_gpu_check_rejects_unknown_options():
    done = _run(str(SCRIPT), "--gpu-count", "2")
    assert done.returncode == 2 and "unknown option" in done.stderr
