"""Nothing good destroyed: a failed ``--overwrite`` (bad input, a failure mid-way, a ctrl-C) leaves the previous
output byte-identical, for every command that writes an output folder; inputs are checked before the work."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import headforge.stages.gaussian_train as gaussian_train
from headforge.cli import main

UPDATE = gaussian_train.GaussianTask.update  # the real one (fail_at_step may patch it more than once per test)
TINY = "resolution = 32\n[train]\nsteps = 6\ninit_points = 300\n"


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` and its bytes, plus the names beside ``out`` (no staging or lock left over)."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return {**files, "<beside>": " ".join(sorted(p.name for p in out.parent.iterdir())).encode()}


def fail_at_step(monkeypatch, step: int, error: BaseException | None = None) -> None:
    """Training raises ``error`` (or receives SIGINT, when None) right after ``step``'s update."""
    def failing(self, s):
        UPDATE(self, s)
        if s == step:
            if error is None:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise error

    monkeypatch.setattr(gaussian_train.GaussianTask, "update", failing)


@pytest.fixture
def preset(tmp_path) -> Path:
    path = tmp_path / "presets" / "tiny.toml"
    path.parent.mkdir()
    path.write_text(TINY)
    return path


@pytest.fixture
def head_glb(tmp_path, sample_head) -> Path:
    from headforge.representations.mesh_io import save_glb

    path = tmp_path / "inputs" / "head.glb"
    path.parent.mkdir()
    save_glb(sample_head.mesh, path)
    return path


# --- reconstruct --------------------------------------------------------------------------------------------


def test_reconstruct_overwrite_keeps_the_old_run(tiny_capture_dir, preset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs" / "old"
    out.parent.mkdir()
    common = ["reconstruct", str(tiny_capture_dir), "--out", str(out), "--test-every", "5", "--device", "cpu"]
    assert main([*common, "--preset", str(preset)]) == 0
    before = snapshot(out)
    junk = tmp_path / "junk.ply"
    junk.write_bytes(os.urandom(256))
    bad_inputs = {
        "preset": ["--preset", str(tmp_path / "nope.toml")],
        "capture": ["--preset", str(preset)],  # the capture path is replaced below
        "init_ply": ["--preset", str(preset), "--init-ply", str(junk)],
    }
    for name, extra in bad_inputs.items():
        args = [*common, *extra, "--overwrite"]
        if name == "capture":
            args[1] = str(tmp_path / "no-capture")
        capsys.readouterr()
        assert main(args) == 2, name
        assert "Traceback" not in capsys.readouterr().err
        assert snapshot(out) == before, name

    fail_at_step(monkeypatch, 3, RuntimeError("boom at step 3"))
    assert main([*common, "--preset", str(preset), "--overwrite"]) == 1
    assert "internal error: RuntimeError: boom at step 3" in capsys.readouterr().err
    assert snapshot(out) == before

    fail_at_step(monkeypatch, 3)  # ctrl-C: the staging folder goes, and the message says nothing was kept
    assert main([*common, "--preset", str(preset), "--overwrite"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "headforge: interrupted at step 3 of 6; no checkpoint kept (an --overwrite run trains in a staging folder, "
        f"removed when it stops; {out} is unchanged)")
    assert snapshot(out) == before


def test_a_fresh_run_with_a_bad_init_ply_writes_nothing(tiny_capture_dir, preset, tmp_path):
    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"ply\nformat nonsense\n")
    out = tmp_path / "new"
    assert main(["reconstruct", str(tiny_capture_dir), "--out", str(out), "--preset", str(preset),
                 "--init-ply", str(junk)]) == 2
    assert not out.exists() and not (tmp_path / "new.lock").exists()


# --- run (the main job) -------------------------------------------------------------------------------------


def test_run_overwrite_keeps_the_old_output(tmp_path, monkeypatch, capsys):
    import headforge.pipeline.main_job as main_job

    out = tmp_path / "runs" / "old"
    out.parent.mkdir()
    common = ["run", "--out", str(out), "--resolution", "32", "--rig", "ring", "--steps", "4"]
    assert main(common) == 0
    before = snapshot(out)

    def no_render(*args, **kwargs):
        raise AssertionError("rendered before the inputs were checked")

    with monkeypatch.context() as m:
        m.setattr(main_job, "render_capture", no_render)
        for extra in (["--mesh", str(tmp_path / "missing.obj")], ["--preset", "nope"]):
            capsys.readouterr()
            assert main([*common, *extra, "--overwrite"]) == 2, extra
            assert "Traceback" not in capsys.readouterr().err
            assert snapshot(out) == before, extra

    fail_at_step(monkeypatch, 2, RuntimeError("boom"))
    assert main([*common, "--overwrite"]) == 1
    assert snapshot(out) == before

    fail_at_step(monkeypatch, 2)
    assert main([*common, "--overwrite"]) == 130
    assert "interrupted at step 2 of 4; no checkpoint kept (`headforge run` trains in a staging folder" \
        in capsys.readouterr().err
    assert snapshot(out) == before


# --- render-capture -----------------------------------------------------------------------------------------


def test_render_capture_overwrite_keeps_the_old_capture(head_glb, tmp_path, monkeypatch, capsys):
    import headforge.stages.render_capture as stage

    out = tmp_path / "caps" / "old"
    out.parent.mkdir()
    common = ["render-capture", str(head_glb), "--out", str(out), "--rig", "ring", "--num-views", "8",
              "--resolution", "32", "--supersample", "1"]
    assert main(common) == 0
    before = snapshot(out)

    broken = head_glb.with_name("broken.obj")
    broken.write_text("v 0 0 0\nf 1 2 3\n")
    for mesh in (tmp_path / "missing.glb", broken):
        args = [common[0], str(mesh), *common[2:], "--overwrite"]
        assert main(args) == 2
        assert snapshot(out) == before

    render = stage.render_mesh
    calls = []

    def fails_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("renderer failed mid-way")
        return render(*args, **kwargs)

    monkeypatch.setattr(stage, "render_mesh", fails_second_batch)
    assert main([*common, "--overwrite"]) == 1
    assert len(calls) == 2 and snapshot(out) == before


# --- extract-mesh -------------------------------------------------------------------------------------------


def test_extract_mesh_overwrite_keeps_the_old_mesh(tmp_path, monkeypatch):
    import headforge.stages.mesh_stage as mesh_stage
    from headforge.stages.mesh_types import MeshExtractConfig, UnwrapMethod

    field = SimpleNamespace(cfg=SimpleNamespace(sdf=True), bounds=(torch.full((3,), -0.2), torch.full((3,), 0.2)),
                            sdf=lambda p: p.norm(dim=-1, keepdim=True) - 0.1,
                            color=lambda p, d: torch.sigmoid(p * 20))
    cfg = MeshExtractConfig(resolution=24, target_faces=None, texture_size=64, unwrap=UnwrapMethod.CUBE,
                            progress=False)
    out = tmp_path / "run" / "mesh"
    out.parent.mkdir()
    mesh_stage.extract_mesh_stage(field, cfg, out)
    before = snapshot(out)

    # bad input at the door: the CLI reads field.pt (missing here) before the stage touches anything
    assert main(["extract-mesh", str(out.parent), "--overwrite"]) == 2
    assert snapshot(out) == before

    def bake_fails(*args, **kwargs):
        raise RuntimeError("bake failed")

    monkeypatch.setattr(mesh_stage, "bake_onto_uvs", bake_fails)
    with pytest.raises(RuntimeError, match="bake failed"):
        mesh_stage.extract_mesh_stage(field, cfg, out, overwrite=True)
    assert snapshot(out) == before
