"""headforge works as an installed package: build the wheel, install it into a fresh virtual environment outside
the checkout, and run from there (presets by name, the main job on a tiny capture, the compiled kernel).

The new environment gets no downloads: a ``.pth`` file appends this environment's site-packages (torch, numpy,
...) after its own, so its dependencies resolve here while ``headforge`` itself comes from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    return _run_full(cmd, cwd, env, timeout).stdout


def _run_full(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """(the new environment's python, the environment to run it in, a working folder outside the checkout)."""
    tmp = tmp_path_factory.mktemp("packaging")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    src = tmp / "src"  # build from a copy: the checkout gets no build/ or egg-info
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "headforge", src / "headforge", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp / "dist"), str(src)], tmp, env)
    (wheel,) = (tmp / "dist").glob("headforge-*.whl")
    with zipfile.ZipFile(wheel) as z:  # the data files the code reads at run time
        names = set(z.namelist())
    for data in ("headforge/presets/gaussians_fast.toml", "headforge/presets/fields_sdf.toml",
                 "headforge/renderers/gaussian_cpu/raster.cpp",
                 "headforge/representations/fields/hash_cpu/hash_grid.cpp",
                 *(f"headforge/assets/clips/{c}.json" for c in ("blink", "smile", "talk", "head_turn")),
                 "headforge/assets/report/report.html", "headforge/assets/report/viewer.js"):
        assert data in names, f"{data} is not in the wheel"

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp,
                        env).strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "_headforge_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
         tmp, env)
    work = tmp / "work"
    work.mkdir()
    # A private kernel build folder: the wheel's sources sit at another path than the checkout's.
    env = {**env, "TORCH_EXTENSIONS_DIR": str(tmp / "torch_extensions"), "HEADFORGE_THREADS": "2"}
    return python, env, work


def test_wheel_installs_outside_the_checkout(installed):
    python, env, work = installed
    code = ("import headforge, json; from headforge.config_io import preset_dir, preset_names; "
            "print(json.dumps({'file': headforge.__file__, 'presets': preset_names(), 'dir': str(preset_dir())}))")
    found = json.loads(_run([str(python), "-c", code], work, env))
    venv = python.parents[1]
    assert Path(found["file"]).is_relative_to(venv), found["file"]
    assert Path(found["dir"]).is_relative_to(venv)
    assert set(found["presets"]) >= {f"{family}_{name}" for family in ("gaussians", "fields")
                                     for name in ("fast", "default", "quality")}
    assert sorted(found["presets"]) == sorted(p.stem for p in (ROOT / "headforge" / "presets").glob("*.toml"))


def test_every_preset_loads_by_name_from_the_wheel(installed):
    python, env, work = installed
    code = """
import json
from headforge.config_io import preset_names
from headforge.pipeline.methods import Method, load_preset
out = {}
for name in preset_names():
    family, preset = name.split("_", 1)
    method = Method.GAUSSIANS if family == "gaussians" else Method.HASHGRID
    loaded = load_preset(method, preset, resolution=None, steps=None, sdf=preset == "sdf")
    out[name] = [loaded.resolution, loaded.train.steps]
print(json.dumps(out))
"""
    loaded = json.loads(_run([str(python), "-c", code], work, env))
    assert loaded["gaussians_fast"] == [256, 2000]  # the values in the shipped TOML, not the dataclass defaults
    assert len(loaded) == len(list((ROOT / "headforge" / "presets").glob("*.toml")))


def test_main_job_runs_from_the_installed_package(installed):
    python, env, work = installed
    script = python.parent / "headforge"
    out = work / "job"
    done = _run_full([str(script), "--threads", "1", "run", "--out", str(out), "--resolution", "32", "--steps", "3",
                      "--preset", "fast"], work, env, timeout=900)
    assert "falling back" not in done.stderr  # the compiled CPU rasterizer built from the wheel's sources
    metrics = json.loads((out / "reconstruction" / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["preset"] == "fast"
    assert (out / "reconstruction" / "splats.ply").stat().st_size > 0
