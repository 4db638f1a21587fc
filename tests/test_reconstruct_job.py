"""The reconstruct job: in-memory core, typed result, held-out views around the head, safe --overwrite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from headforge.captures.capture import Capture, Split, View, viewing_angles
from headforge.captures.formats import read_capture
from headforge.errors import InputError
from headforge.geometry.camera_rigs import RigConfig, RigKind, make_rig
from headforge.pipeline import methods
from headforge.pipeline.methods import GaussianSummary
from headforge.pipeline.reconstruct import ReconstructConfig, ReconstructOptions, reconstruct, run_reconstruct

TINY = "resolution = 32\n[train]\nsteps = {steps}\ncheckpoint_every = 10\ninit_points = 600\n"


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("presets") / "tiny.toml"
    path.write_text(TINY.format(steps=20))
    return str(path)


@pytest.fixture(scope="module")
def finished_run(tiny_capture_dir, tiny_preset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    run_reconstruct(ReconstructConfig(tiny_capture_dir, out, preset=tiny_preset, test_every=5, progress=False))
    return out


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def circular_gaps(azimuths: list[float]) -> list[float]:
    a = sorted(x % 360 for x in azimuths)
    return [(a[(i + 1) % len(a)] - a[i]) % 360 or 360 for i in range(len(a))]


def in_memory(capture: Capture, split: Split) -> Capture:
    """The capture's views as tensors, no files: what a generator of views would hand over."""
    images = torch.stack([torch.cat([capture.load(i).rgb, capture.load(i).alpha[..., None]], -1)
                          for i in range(len(capture))])
    return Capture(capture.native_cameras, tuple(View(None) for _ in range(len(capture))), split, images=images)


# ------------------------------------------------------------------------------------------ held-out views
def test_held_out_views_surround_the_head_and_include_the_face():
    cams = make_rig(RigConfig(kind=RigKind.SPHERE32, resolution=16))
    split = Split.spread(cams, 8)
    azimuths = [float(a) for a in viewing_angles(cams)[list(split.test), 0]]
    assert len(split.test) == 4 and len(split.train) == 28
    assert min(abs(a) for a in azimuths) < 20, azimuths  # one looks at the face
    assert max(circular_gaps(azimuths)) < 120, azimuths  # front, sides and back
    assert Split.spread(cams, 8) == split  # deterministic
    # the index rule it replaces sees only the subject's left and top
    old = [float(a) for a in viewing_angles(cams)[list(Split.every(32, 8).test), 0]]
    assert min(abs(a) for a in old) > 60 and max(circular_gaps(old)) > 180


def test_ring_views_are_held_out_evenly_and_counts_follow_test_every():
    cams = make_rig(RigConfig(kind=RigKind.RING, num_views=12, resolution=16))
    split = Split.spread(cams, 4)
    az = viewing_angles(cams)[list(split.test), 0]
    assert sorted(round(float(a) % 360) for a in az) == [0, 120, 240]
    assert len(Split.spread(cams, 5).test) == 3 and Split.spread(cams, 0).test == ()
    with pytest.raises(Exception, match="none of the 12 views"):
        Split.spread(cams, 1)


def test_metrics_list_the_held_out_views(finished_run, tiny_capture_dir):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    expected = read_capture(tiny_capture_dir, test_every=5).split.test
    assert [v["view"] for v in metrics["test_views"]] == list(expected) == [v["view"] for v in metrics["per_view"]]
    azimuths = [v["azimuth_deg"] for v in metrics["test_views"]]
    assert max(circular_gaps(azimuths)) < 150 and min(abs(a) for a in azimuths) < 45, azimuths
    assert metrics["num_test_views"] == 4 and metrics["psnr"] > 10
    assert sorted(p.name for p in (finished_run / "renders").iterdir()) == [f"test_{v:04d}.png" for v in expected]


# ------------------------------------------------------------------------------------------ the in-memory core
def test_in_memory_capture_without_held_out_views(tiny_capture_dir, tiny_preset, tmp_path):
    disk = read_capture(tiny_capture_dir, test_every=0)
    capture = in_memory(disk, disk.split)
    assert capture.split.test == ()
    rec = reconstruct(capture, ReconstructOptions(preset=tiny_preset, progress=False), tmp_path / "mem")
    from headforge.representations.splat_io import load_splats_ply

    assert rec.evaluation is None and rec.test_views == () and rec.num_train_views == 20
    assert isinstance(rec.summary, GaussianSummary)
    assert rec.summary.num_gaussians == len(load_splats_ply(tmp_path / "mem" / "splats.ply"))
    written = json.loads((tmp_path / "mem" / "metrics.json").read_text())
    assert written == json.loads(json.dumps(rec.to_json()))
    assert written["psnr"] is None and "no held-out views" in written["evaluation_note"]
    assert written["capture"] == "in-memory capture" and written["num_test_views"] == 0
    assert rec.pictures == ("turntable.gif",) and (tmp_path / "mem" / "turntable.gif").is_file()
    assert not (tmp_path / "mem" / "contact_sheet.png").exists() and not (tmp_path / "mem" / "renders").exists()


def test_a_capture_carrying_its_own_split_keeps_it(tiny_capture_dir, tiny_preset, tmp_path):
    disk = read_capture(tiny_capture_dir, test_every=0)
    capture = in_memory(disk, Split.from_test_list(len(disk), [3, 11]))
    rec = reconstruct(capture, ReconstructOptions(preset=tiny_preset, progress=False), tmp_path / "own")
    assert [v.view for v in rec.test_views] == [3, 11] == [v.view for v in rec.evaluation.per_view]
    assert rec.evaluation.psnr > 10 and rec.num_train_views == 18
    assert "contact_sheet.png" in rec.pictures and (tmp_path / "own" / "contact_sheet.png").is_file()


# ------------------------------------------------------------------------------------------ safe outputs
def test_failed_overwrite_keeps_the_previous_output(finished_run, tiny_capture_dir, tiny_preset, tmp_path,
                                                    monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    before = snapshot(out)

    def crash(*args, **kwargs):
        raise RuntimeError("training diverged")

    monkeypatch.setattr(methods, "train_gaussians", crash)
    cfg = ReconstructConfig(tiny_capture_dir, out, preset=tiny_preset, test_every=5, progress=False, overwrite=True)
    with pytest.raises(RuntimeError, match="diverged"):
        run_reconstruct(cfg)
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # the staging directory went away
    monkeypatch.undo()
    rec = run_reconstruct(ReconstructConfig(tiny_capture_dir, out, preset=tiny_preset, steps=10, test_every=5,
                                            progress=False, overwrite=True))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 10 and rec.steps == 10 and rec.out_dir == out
    old_checkpoints = {k: v for k, v in before.items() if k.startswith("checkpoints/")}
    assert old_checkpoints and not old_checkpoints.items() <= snapshot(out).items()  # replaced with the new run's
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_output_options_are_checked_before_any_work(tiny_capture_dir, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out, message in ((a_file, "is a file"), (a_file / "run", "under a file")):
        with pytest.raises(InputError, match=message):
            run_reconstruct(ReconstructConfig(tiny_capture_dir, out, overwrite=True))
    (tmp_path / "old").mkdir()
    with pytest.raises(InputError, match="already exists"):
        run_reconstruct(ReconstructConfig(tiny_capture_dir, tmp_path / "old"))
    with pytest.raises(InputError, match="give one of them"):
        run_reconstruct(ReconstructConfig(tiny_capture_dir, tmp_path / "old", resume=True, overwrite=True))
    assert a_file.read_text() == "x" and list((tmp_path / "old").iterdir()) == []


def test_a_crashed_fresh_run_resumes_in_place(tiny_capture_dir, tiny_preset, tmp_path, monkeypatch):
    from dataclasses import replace

    real = methods.train_gaussians

    def crash_after_ten_steps(train, bounds, cfg, **kwargs):
        real(train, bounds, replace(cfg, steps=10), **kwargs)  # leaves the step-10 checkpoint
        raise RuntimeError("killed at step 10")

    monkeypatch.setattr(methods, "train_gaussians", crash_after_ten_steps)
    out = tmp_path / "run"
    cfg = ReconstructConfig(tiny_capture_dir, out, preset=tiny_preset, test_every=5, progress=False)
    with pytest.raises(RuntimeError, match="killed"):
        run_reconstruct(cfg)
    assert [p.name for p in out.iterdir()] == ["checkpoints"]  # nothing final-looking, the checkpoint kept
    monkeypatch.undo()
    with pytest.raises(InputError, match="already exists"):
        run_reconstruct(cfg)
    rec = run_reconstruct(replace(cfg, resume=True))
    metrics = json.loads((out / "metrics.json").read_text())
    assert rec.steps == metrics["steps"] == 20 and rec.out_dir == out
    assert not [p for p in out.iterdir() if ".partial-" in p.name]
