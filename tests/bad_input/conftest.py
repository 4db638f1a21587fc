"""Shared fixtures and checks of the bad-input suite.

Every case runs a command (in-process through ``headforge.cli.main``, a few through a real subprocess) on
one bad input and checks, with :func:`assert_refused`: exit status 2, no ``Traceback`` on stderr, the
offending file or option named on stderr, and no new final-looking output (an existing good output
byte-identical: :func:`snapshot` before, compared after).

Inputs are tiny: one capture of the built-in sample head (ring rig, 8 views, 32 px, supersample 1) and one
finished two-step Gaussian run, both made once per session and copied by every case that mutates them.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import headforge
from headforge.cli import main

REPO_ROOT = Path(headforge.__file__).resolve().parents[1]
# Names a finished command writes; a refused command must not create any of them.
FINAL_NAMES = frozenset({"metrics.json", "splats.ply", "splats.splat", "splats.glb", "field.pt", "transforms.json",
                         "opencv_cameras.json", "run.json", "mesh.obj", "mesh.ply", "mesh.glb", "cameras.png",
                         "contact_sheet.png", "turntable.gif", "capture_sheet.png"})
FINAL_DIRS = frozenset({"mesh", "reconstruction", "capture", "renders"})
# Tiny Gaussian preset of the session run (what the resume cases must match).
TINY_GAUSSIANS = "resolution = 32\n[train]\nsteps = 2\nmax_sh_degree = 1\ninit_points = 300\n"
# Tiny neural-field preset (a hash grid small enough to build in milliseconds).
TINY_FIELD = ("resolution = 32\n[train]\nsteps = 2\nrays_per_batch = 256\n[train.occupancy]\nresolution = 16\n"
              "warmup_steps = 1\n[train.field.hashgrid]\nn_levels = 4\nlog2_table_size = 10\nmax_resolution = 64\n"
              "backend = \"torch\"\n")  # the torch hash grid: no compiled kernel to build in a subprocess
# A gigantic size: refused up front by the documented maximum, never allocated. Cases that might reach an
# allocator on a branch without validation run in a subprocess under an address-space limit.
GIGANTIC = 200_000
SUBPROCESS_MEMORY = 8 << 30


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every case runs in its own empty folder (a default output such as inspect's cameras.png lands there)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli(capsys):
    """Run ``headforge ARGS`` in-process -> Result. An exception escaping main() is the traceback a user
    would see: it propagates and fails the case. tyro's own refusals (SystemExit) keep their code."""
    def run(*args) -> Result:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return run


def _limit_memory():  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (SUBPROCESS_MEMORY, SUBPROCESS_MEMORY))


def run_subprocess(*args, cwd: Path, timeout: float = 300) -> Result:
    """``python -m headforge.cli ARGS`` in a real process (this worktree's package, memory-limited)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HEADFORGE_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "headforge.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env, preexec_fn=_limit_memory)
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def subproc(tmp_path):
    return lambda *args, timeout=300: run_subprocess(*args, cwd=tmp_path, timeout=timeout)


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under root (directories as '<dir>'); symlinks are not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "<dir>"
        for name in filenames:
            path = Path(dirpath) / name
            rel = os.path.relpath(path, root)
            if path.is_symlink():
                out[rel] = f"<link {os.readlink(path)}>"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_refused(result: Result, *named: str | Path, root: Path | None = None,
                   before: dict[str, str] | None = None) -> None:
    """Exit 2, no traceback, every ``named`` string on stderr; under ``root`` nothing final-looking appeared
    and everything in ``before`` (a :func:`snapshot` of root) is byte-identical."""
    report = f"exit {result.code}\n--- stderr ---\n{result.err[-3000:]}\n--- stdout ---\n{result.out[-1500:]}"
    assert "Traceback" not in result.err, report
    assert result.code == 2, report
    for name in named:
        assert str(name) in result.err, f"{name!r} is not named on stderr\n{report}"
    if root is not None:
        after = snapshot(root)
        before = before or {}
        changed = sorted(k for k, v in before.items() if after.get(k) != v)
        assert not changed, f"existing output changed or removed: {changed[:10]}"
        new = [k for k in after if k not in before]
        final = sorted(k for k in new if Path(k).name in FINAL_NAMES
                       or (after[k] == "<dir>" and Path(k).name in FINAL_DIRS))
        assert not final, f"a refused command left final-looking output: {final[:10]}"


# ------------------------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="session")
def tiny_capture(tmp_path_factory) -> Path:
    """The sample head rendered by ``headforge render-capture``'s stage: ring rig, 8 views, 32 px, no supersampling
    (nerfstudio transforms.json + opencv_cameras.json, RGBA images, masks, depth). Never mutate: copy it."""
    from headforge.assets.sample_head import load_sample_head
    from headforge.geometry.camera_rigs import RigConfig, RigKind
    from headforge.stages.render_capture import RenderCaptureConfig, render_capture

    out = tmp_path_factory.mktemp("bad_input") / "capture"
    cfg = RenderCaptureConfig(rig=RigConfig(kind=RigKind.RING, num_views=8, resolution=32), supersample=1)
    render_capture(load_sample_head().mesh, cfg, out, progress=False)
    return out


@pytest.fixture
def capture_copy(tiny_capture, tmp_path) -> Path:
    """A private copy of the tiny capture to break."""
    return Path(shutil.copytree(tiny_capture, tmp_path / "capture"))


@pytest.fixture(scope="session")
def other_formats(tiny_capture, tmp_path_factory) -> dict[str, Path]:
    """The tiny capture written as COLMAP text and NeRSemble (format -> capture folder). Copy before mutating."""
    from headforge.captures.formats import read_capture, write_capture

    cap = read_capture(tiny_capture, test_every=4)
    root = tmp_path_factory.mktemp("formats")
    folders = {}
    for fmt in ("colmap", "nersemble"):
        write_capture(cap, root / fmt, fmt, lossy=True)
        folders[fmt] = root / fmt
    return folders


@pytest.fixture(scope="session")
def tiny_presets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("presets")
    (root / "gaussians.toml").write_text(TINY_GAUSSIANS)
    (root / "field.toml").write_text(TINY_FIELD)
    return {"gaussians": root / "gaussians.toml", "field": root / "field.toml"}


@pytest.fixture(scope="session")
def gaussian_run(tiny_capture, tiny_presets, tmp_path_factory) -> Path:
    """A finished two-step Gaussian run of the tiny capture (checkpoints/step_000002.pt, metrics.json, splats.ply).
    Never mutate: copy it (``run_copy``)."""
    out = tmp_path_factory.mktemp("runs") / "gaussians"
    code = main(["reconstruct", str(tiny_capture), "--out", str(out), "--steps", "2", "--resolution", "32",
                 "--test-every", "4", "--preset", str(tiny_presets["gaussians"]), "--device", "cpu"])
    assert code == 0 and (out / "metrics.json").is_file() and list((out / "checkpoints").glob("step_*.pt"))
    return out


@pytest.fixture
def run_copy(gaussian_run, tmp_path) -> Path:
    return Path(shutil.copytree(gaussian_run, tmp_path / "run"))


@pytest.fixture(scope="session")
def field_run(tiny_presets, tmp_path_factory) -> Path:
    """A run folder with a valid (untrained, tiny) hash-grid ``field.pt``, as extract-mesh reads it; built
    directly (training one, even for two steps, takes a minute on a shared CPU)."""
    import torch

    from headforge.config_io import load_config
    from headforge.pipeline.methods import FieldPreset, save_field
    from headforge.renderers.occupancy import OccupancyGrid
    from headforge.stages.field_train import make_field

    cfg = load_config(FieldPreset, tiny_presets["field"]).train
    model = make_field(cfg, torch.full((3,), -0.15), torch.full((3,), 0.15))
    grid = OccupancyGrid(cfg.occupancy, *model.bounds)
    out = tmp_path_factory.mktemp("runs") / "field"
    out.mkdir()
    save_field(out / "field.pt", model, grid, cfg)
    return out


@pytest.fixture
def field_run_copy(field_run, tmp_path) -> Path:
    return Path(shutil.copytree(field_run, tmp_path / "field_run"))


# ------------------------------------------------------------------------------------------------ a tiny mesh
TETRA_OBJ = """mtllib tetra.mtl
v 0 0 0
v 0.1 0 0
v 0 0.1 0
v 0 0 0.1
vt 0 0
vt 1 0
vt 0 1
usemtl skin
f 1/1 3/3 2/2
f 1/1 2/2 4/3
f 1/1 4/3 3/2
f 2/1 3/2 4/3
"""
TETRA_MTL = "newmtl skin\nKd 0.8 0.6 0.5\nmap_Kd tetra.png\n"


def write_tetra(folder: Path, obj: str = TETRA_OBJ, mtl: str | None = TETRA_MTL, texture: bool = True) -> Path:
    """A small textured OBJ (tetrahedron + MTL + 8x8 PNG) in ``folder``; returns the OBJ path."""
    from headforge.captures.images import write_image

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tetra.obj").write_text(obj)
    if mtl is not None:
        (folder / "tetra.mtl").write_text(mtl)
    if texture:
        write_image(folder / "tetra.png", np.linspace(0, 1, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3))
    return folder / "tetra.obj"


@pytest.fixture
def tetra(tmp_path) -> Path:
    """A valid tiny textured mesh (render-capture of it at 16 px takes well under a second)."""
    return write_tetra(tmp_path / "tetra")
