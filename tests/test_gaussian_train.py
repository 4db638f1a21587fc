"""Gaussian training: beats its initialisation on held-out views, densifies, resumes, fails cleanly."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from headforge.captures.capture import Capture, Split, View
from headforge.captures.formats import read_capture
from headforge.errors import CaptureError
from headforge.pipeline.reconstruct import ReconstructConfig, run_reconstruct
from headforge.stages.densify import DensifyConfig
from headforge.stages.evaluate import evaluate
from headforge.stages.gaussian_train import (
    Background,
    GaussianTrainConfig,
    initial_splats,
    render_splats,
    train_gaussians,
)
from headforge.stages.views import load_views

FAST = GaussianTrainConfig(steps=300, max_sh_degree=1, sh_degree_interval=150, init_points=3000,
                           checkpoint_every=100,
                           densify=DensifyConfig(refine_start=100, refine_stop=250, refine_every=50,
                                                 reset_every=10_000))


@pytest.fixture(scope="module")
def views(tiny_capture_dir):
    cap = read_capture(tiny_capture_dir, test_every=5)
    return cap, load_views(cap, cap.split.train), load_views(cap, cap.split.test)


def bounds():
    return torch.full((3,), -0.2), torch.full((3,), 0.2)


def held_out_psnr(splats, degree, test, bg):
    def fn(cams, background):
        r = render_splats(splats, cams, degree, background)
        return r.rgb, r.alpha[..., 0]

    return evaluate(fn, test, bg)


def test_training_beats_initialisation(views):
    _, train, test = views
    init = initial_splats(train, *bounds(), FAST, torch.Generator().manual_seed(0))
    before = held_out_psnr(init, 0, test, torch.ones(3))
    result = train_gaussians(train, bounds(), FAST, progress=False)
    after = held_out_psnr(result.splats, result.sh_degree, test, result.background)
    assert after.psnr_masked > before.psnr_masked + 5, (before.psnr_masked, after.psnr_masked)
    assert after.psnr > 24, after.psnr
    assert len(result.splats) != 3000, "densification should have changed the Gaussian count"
    assert result.history[-1][1] < result.history[0][1]


def test_resume_continues_exactly(views, tmp_path, monkeypatch):
    """A run interrupted after its step-60 checkpoint and resumed ends where an uninterrupted run ends."""
    import headforge.stages.gaussian_train as gt

    _, train, _ = views
    cfg = replace(FAST, steps=120, checkpoint_every=60)
    full = train_gaussians(train, bounds(), cfg, checkpoint_dir=tmp_path / "a", progress=False)
    real, calls = gt.render_splats, {"n": 0}

    def crash_after_60(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 61:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(gt, "render_splats", crash_after_60)
    with pytest.raises(KeyboardInterrupt):
        train_gaussians(train, bounds(), cfg, checkpoint_dir=tmp_path / "b", progress=False)
    monkeypatch.setattr(gt, "render_splats", real)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["step_000060.pt"]
    resumed = train_gaussians(train, bounds(), cfg, checkpoint_dir=tmp_path / "b", resume=True, progress=False)
    assert len(resumed.splats) == len(full.splats)
    torch.testing.assert_close(resumed.splats.means, full.splats.means, atol=1e-6, rtol=0)
    torch.testing.assert_close(resumed.splats.sh, full.splats.sh, atol=1e-6, rtol=0)

    # a wall-clock budget stops the run after the step it ran out in, with a checkpoint there (a fake clock
    # ticks one second per reading: the 46th step ends 46 s after the start); resuming without it finishes
    # the same run, bit for bit
    import headforge.training.loop as loop

    class Clock:
        now = 0.0

        def perf_counter(self):
            self.now += 1.0
            return self.now

    monkeypatch.setattr(loop, "time", Clock())
    budget = train_gaussians(train, bounds(), replace(cfg, max_seconds=45.5), checkpoint_dir=tmp_path / "c",
                             progress=False)
    monkeypatch.undo()
    assert budget.steps == 46 and sorted(p.name for p in (tmp_path / "c").iterdir()) == ["step_000046.pt"]
    finished = train_gaussians(train, bounds(), cfg, checkpoint_dir=tmp_path / "c", resume=True, progress=False)
    assert finished.steps == 120 and torch.equal(finished.splats.means, full.splats.means)
    assert torch.equal(finished.splats.sh, full.splats.sh) and torch.equal(finished.background, full.background)


def test_crash_keeps_last_checkpoint_and_writes_no_final_output(tiny_capture_dir, tmp_path, monkeypatch):
    import headforge.stages.gaussian_train as gt

    calls = {"n": 0}
    real = gt.render_splats

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 75:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(gt, "render_splats", flaky)
    preset = tmp_path / "tiny.toml"
    preset.write_text("resolution = 64\n[train]\nsteps = 100\ncheckpoint_every = 50\ninit_points = 2000\n")
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_reconstruct(ReconstructConfig(tiny_capture_dir, out, preset=str(preset), test_every=5, progress=False))
    assert (out / "checkpoints" / "step_000050.pt").is_file()
    assert not any((out / name).exists() for name in ("metrics.json", "splats.ply", "splats.glb", "splats.splat"))
    monkeypatch.setattr(gt, "render_splats", real)
    run_reconstruct(ReconstructConfig(tiny_capture_dir, out, preset=str(preset), test_every=5, resume=True,
                                      progress=False))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 100
    from headforge.representations.splat_io import load_splats_ply

    cap = read_capture(tiny_capture_dir, test_every=5).at_resolution(64)  # the exported splats score what was written
    reloaded = held_out_psnr(load_splats_ply(out / "splats.ply"), 0, load_views(cap, cap.split.test), torch.ones(3))
    assert reloaded.psnr == pytest.approx(metrics["psnr"], abs=0.05)
    for name in ("splats.ply", "splats.splat", "splats.glb", "contact_sheet.png", "turntable.gif"):
        assert (out / name).is_file(), name
    assert not list(out.glob("final.partial-*"))


def test_capture_without_masks_learns_a_background(views):
    cap, _, _ = views
    idx = list(cap.split.train[:6])
    rgb = torch.stack([cap.load(i).rgb for i in idx])
    grey = torch.tensor([0.3, 0.4, 0.5])
    alpha = torch.stack([cap.load(i).alpha for i in idx])[..., None]
    images = rgb * alpha + grey * (1 - alpha)  # opaque photos on a grey backdrop, no masks
    mem = Capture(cap.native_cameras[idx], tuple(View(None) for _ in idx), Split.every(6, 0), images=images)
    batch = load_views(mem, range(6))
    assert batch.alphas is None
    cfg = replace(FAST, steps=150, init="random", densify=replace(FAST.densify, refine_stop=0))
    result = train_gaussians(batch, bounds(), cfg, progress=False)
    assert torch.allclose(result.background, grey, atol=0.1), result.background


def test_visual_hull_needs_masks(views):
    cap, train, _ = views
    no_masks = replace(train, alphas=None)
    from headforge.errors import InputError

    with pytest.raises(InputError, match="needs masks"):
        initial_splats(no_masks, *bounds(), FAST, torch.Generator())


def test_fully_transparent_view_is_rejected(views):
    cap, _, _ = views
    images = torch.stack([torch.cat([cap.load(i).rgb, cap.load(i).alpha[..., None]], -1) for i in range(3)])
    images[1, ..., 3] = 0
    mem = Capture(cap.native_cameras[[0, 1, 2]], (View(None),) * 3, Split.every(3, 0), images=images)
    with pytest.raises(CaptureError, match="fully transparent"):
        load_views(mem, range(3))


def test_resume_refuses_a_changed_recipe(views, tmp_path):
    """A checkpoint records its config: resuming with another learning rate is refused, naming the key."""
    from headforge.errors import InputError

    _, train, _ = views
    cfg = replace(FAST, steps=20, checkpoint_every=20, densify=replace(FAST.densify, refine_stop=0))
    train_gaussians(train, bounds(), cfg, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(InputError, match=r"densify.prune_opa: 0.005 -> 0.01.*sh0_lr: 0.0025 -> 0.001"):
        train_gaussians(train, bounds(), replace(cfg, sh0_lr=1e-3, densify=replace(cfg.densify, prune_opa=0.01)),
                        checkpoint_dir=tmp_path, resume=True, progress=False)
    again = train_gaussians(train, bounds(), replace(cfg, steps=30, background=Background.RANDOM),
                            checkpoint_dir=tmp_path, resume=True, progress=False)
    assert again.steps == 30 and [row[0] for row in again.history] == [30]


def test_each_background_choice_changes_training(views):
    """Every Background is handled by the loop and is not ignored: each one trains to different splats."""
    _, train, _ = views
    runs = {bg: train_gaussians(train, bounds(), replace(FAST, steps=5, init_points=500, background=bg),
                                progress=False) for bg in Background}
    for a in Background:
        for b in Background:
            if a < b:
                assert not torch.equal(runs[a].splats.sh, runs[b].splats.sh), (a, b)
    learned = runs[Background.LEARNED].background
    assert not torch.equal(learned, torch.full((3,), 0.5)) and (learned - 0.5).abs().max() < 0.2, learned


def test_imported_ply_continues_training(tiny_capture_dir, tmp_path):
    """Export -> import -> continue: the imported splats start where the export left off."""
    from headforge.representations.splat_io import load_splats_ply

    preset = tmp_path / "tiny.toml"
    preset.write_text("resolution = 64\n[train]\nsteps = 150\ninit_points = 2000\nmax_sh_degree = 1\n"
                      "sh_degree_interval = 50\n[train.densify]\nrefine_start = 50\nrefine_stop = 120\n")
    first = run_reconstruct(ReconstructConfig(tiny_capture_dir, tmp_path / "a", preset=str(preset), test_every=5,
                                              progress=False))
    exported = load_splats_ply(tmp_path / "a" / "splats.ply")
    again = run_reconstruct(ReconstructConfig(tiny_capture_dir, tmp_path / "b", preset=str(preset), test_every=5,
                                              steps=60, init_ply=tmp_path / "a" / "splats.ply", progress=False))
    assert again.metrics["psnr"] > first.metrics["psnr"] - 1.0, (first.metrics["psnr"], again.metrics["psnr"])
    reexported = load_splats_ply(tmp_path / "b" / "splats.ply")
    assert reexported.sh.shape[1] == exported.sh.shape[1] and (tmp_path / "b" / "turntable.gif").is_file()
