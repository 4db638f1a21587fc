"""Output paths: --out that is a file or lies under a file (with and without --overwrite / --resume), inspect --plot
into a directory, symlink loops, a failed --overwrite (the earlier run stays byte-identical), and an output folder
held by a second, live run."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from .conftest import REPO_ROOT, TETRA_MTL, assert_refused, snapshot, write_tetra


def _a_file(tmp_path):
    path = tmp_path / "taken.txt"
    path.write_text("a file, not a folder\n")
    return path


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"]], ids=["plain", "overwrite", "resume"])
def test_reconstruct_out_is_a_file(flags, tiny_capture, tiny_presets, tmp_path, cli):
    out = _a_file(tmp_path)
    before = snapshot(tmp_path)
    result = cli("reconstruct", tiny_capture, "--out", out, "--preset", tiny_presets["gaussians"], "--device", "cpu",
                 *flags)
    assert_refused(result, out, root=tmp_path, before=before)


@pytest.mark.parametrize("flags", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_reconstruct_out_under_a_file(flags, tiny_capture, tiny_presets, tmp_path, cli):
    out = _a_file(tmp_path) / "run"
    before = snapshot(tmp_path)
    result = cli("reconstruct", tiny_capture, "--out", out, "--preset", tiny_presets["gaussians"], "--device", "cpu",
                 *flags)
    assert_refused(result, out, root=tmp_path, before=before)


@pytest.mark.parametrize(("under", "flags"), [(False, []), (False, ["--overwrite"]), (True, [])],
                         ids=["file", "file-overwrite", "under-a-file"])
def test_render_capture_out(under, flags, tetra, tmp_path, cli):
    out = _a_file(tmp_path) / "capture" if under else _a_file(tmp_path)
    before = snapshot(tmp_path)
    result = cli("render-capture", tetra, "--out", out, "--rig", "ring", "--num-views", "2", "--resolution", "16",
                 "--supersample", "1", *flags)
    assert_refused(result, out, root=tmp_path, before=before)


def test_run_out_is_a_file(tetra, tmp_path, cli):
    out = _a_file(tmp_path)
    before = snapshot(tmp_path)
    result = cli("run", "--mesh", tetra, "--out", out, "--rig", "ring", "--resolution", "16", "--steps", "1")
    assert_refused(result, out, root=tmp_path, before=before)


def test_extract_mesh_out_is_a_file(field_run_copy, tmp_path, cli):
    out = _a_file(tmp_path)
    before = snapshot(tmp_path)
    result = cli("extract-mesh", field_run_copy, "--out", out, "--resolution", "8", "--texture-size", "16")
    assert_refused(result, out, root=tmp_path, before=before)


@pytest.mark.parametrize("where", ["a-directory", "under-a-file"])
def test_inspect_plot_path(where, tiny_capture, tmp_path, cli):
    plot = tmp_path / "plots" if where == "a-directory" else _a_file(tmp_path) / "cameras.png"
    if where == "a-directory":
        plot.mkdir()
    before = snapshot(tmp_path)
    assert_refused(cli("inspect", tiny_capture, "--plot", plot), plot, root=tmp_path, before=before)


@pytest.mark.parametrize("command", ["reconstruct", "render-capture"])
def test_out_is_a_symlink_loop(command, tiny_capture, tiny_presets, tetra, tmp_path, cli):
    out = tmp_path / "loop"
    os.symlink("loop", out)
    args = ([tiny_capture, "--preset", tiny_presets["gaussians"], "--device", "cpu"] if command == "reconstruct"
            else [tetra, "--rig", "ring", "--num-views", "2", "--resolution", "16", "--supersample", "1"])
    before = snapshot(tmp_path)
    assert_refused(cli(command, *args, "--out", out, "--overwrite"), out, root=tmp_path, before=before)


@pytest.mark.parametrize("bad", ["preset-steps-a-word", "steps-zero", "nan-image", "capture-missing"])
def test_failed_overwrite_keeps_the_old_run(bad, run_copy, capture_copy, tiny_presets, tmp_path, cli):
    import json
    import math

    preset = tiny_presets["gaussians"]
    capture = capture_copy
    extra = []
    if bad == "preset-steps-a-word":
        preset = tmp_path / "bad.toml"
        preset.write_text('resolution = 32\n[train]\nsteps = "five"\n')
    elif bad == "steps-zero":
        extra = ["--steps", "0"]
    elif bad == "nan-image":
        import cv2
        import numpy as np

        img = cv2.imread(str(capture / "images/ring_01.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255
        img[5:9, 5:9, :3] = math.nan
        cv2.imwrite(str(capture / "images/ring_01.tiff"), img)
        meta = json.loads((capture / "transforms.json").read_text())
        meta["frames"][1]["file_path"] = "images/ring_01.tiff"
        (capture / "transforms.json").write_text(json.dumps(meta))
    else:
        capture = tmp_path / "no_such_capture"
    before = snapshot(tmp_path)
    result = cli("reconstruct", capture, "--out", run_copy, "--overwrite", "--preset", preset, "--test-every", "4",
                 "--device", "cpu", *extra)
    assert_refused(result, root=tmp_path, before=before)
    assert snapshot(run_copy) == {k.removeprefix("run/"): v for k, v in before.items() if k.startswith("run/")}


def test_failed_overwrite_keeps_the_old_capture(tetra, tiny_capture, tmp_path, cli):
    import shutil

    old = shutil.copytree(tiny_capture, tmp_path / "old_capture")
    broken = write_tetra(tmp_path / "broken", mtl=TETRA_MTL.replace("Kd 0.8 0.6 0.5", "Kd x y z"))
    before = snapshot(tmp_path)
    result = cli("render-capture", broken, "--out", old, "--overwrite", "--rig", "ring", "--num-views", "2",
                 "--resolution", "16", "--supersample", "1")
    assert_refused(result, "tetra.mtl", root=tmp_path, before=before)


def test_a_held_output_folder_is_refused(tiny_capture, tiny_presets, tmp_path, cli):
    """A second run on an output folder that a live run holds is refused with the holder's pid. The holder is a
    real second process (the lock file's name and format belong to the lock helper, not to this test)."""
    out = tmp_path / "held"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HEADFORGE_THREADS": "1"}
    holder = subprocess.Popen([sys.executable, "-m", "headforge.cli", "reconstruct", str(tiny_capture), "--out",
                               str(out), "--preset", str(tiny_presets["gaussians"]), "--steps", "1000000",
                               "--test-every", "4", "--device", "cpu"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints").is_dir():
            assert holder.poll() is None, f"the holder exited early: {holder.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the holder did not start training within 120 s"
            time.sleep(0.2)
        result = cli("reconstruct", tiny_capture, "--out", out, "--overwrite", "--preset", tiny_presets["gaussians"],
                     "--steps", "2", "--test-every", "4", "--device", "cpu")
        assert_refused(result, out, str(holder.pid))
        assert holder.poll() is None, "the refused run must leave the holder running"
    finally:
        holder.kill()
        holder.wait(timeout=60)
