"""Avatars: initial binding and layers, a short training that beats its initialisation on held-out frames, the
avatar folder round trip, and `headforge avatar` end to end from a given rig fit (no landmark detection)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from headforge.assets.builtin_rig import load_builtin_rig
from headforge.assets.sample_head import load_sample_head
from headforge.captures.capture import Capture, Split, View
from headforge.cli import main
from headforge.errors import InputError
from headforge.geometry.camera_rigs import RigConfig, RigKind, make_rig
from headforge.metrics import psnr
from headforge.pipeline.avatar_file import load_avatar, save_avatar
from headforge.pipeline.rig_fit_file import TEXTURE_FILE, RigFitRecord, write_rig_fit
from headforge.renderers.mesh_render import render_mesh
from headforge.representations.bound_gaussians import Layer, LayerCode
from headforge.representations.rig.arkit import ARKIT_NAMES
from headforge.representations.rig.deform import RigPose
from headforge.representations.rig.head_rig import LandmarkSet, Region
from headforge.stages.avatar import Avatar, pose_avatar
from headforge.stages.avatar_init import AvatarInitConfig, initial_bound_splats
from headforge.stages.avatar_train import AvatarTrainConfig, train_avatar
from headforge.stages.gaussian_train import render_splats
from headforge.stages.rig_evaluate import rig_mesh
from headforge.stages.rig_params import RigParams, Similarity, world_vertices
from headforge.stages.rig_texture import RigTextureConfig, bake_rig_texture
from headforge.stages.views import ViewBatch, composite

D = torch.float64
SHAPES = [{}, {"jawOpen": 0.5}, {"mouthSmileLeft": 0.8, "mouthSmileRight": 0.8}, {"jawOpen": 0.3, "eyeBlinkLeft": 1.0}]


@pytest.fixture(scope="module")
def rig():
    return load_builtin_rig()


@pytest.fixture(scope="module")
def truth(rig) -> RigParams:
    expr = torch.zeros(len(SHAPES), len(ARKIT_NAMES), dtype=D)
    for b, shapes in enumerate(SHAPES):
        for name, w in shapes.items():
            expr[b, ARKIT_NAMES.index(name)] = w
    sim = Similarity(torch.tensor(1.1, dtype=D), torch.eye(3, dtype=D), torch.tensor([0.01, 0.0, 0.0], dtype=D))
    return RigParams(sim, torch.zeros(rig.num_identity, dtype=D), expr, RigPose.rest(len(SHAPES), dtype=D))


@pytest.fixture(scope="module")
def cameras():
    return make_rig(RigConfig(kind=RigKind.SPHERE, num_views=10, resolution=96, subject_radius=0.2))


@pytest.fixture(scope="module")
def frames(rig, truth, cameras):
    """RGBA renders [B, C, H, W, 4] of every frame."""
    tex = load_sample_head().mesh.texture
    out = []
    for b in range(truth.num_frames):
        r = render_mesh(rig_mesh(rig, world_vertices(rig, truth.frame(b))[0].float(), tex), cameras, supersample=2)
        out.append(torch.cat([r.rgb, r.alpha[..., None]], -1))
    return torch.stack(out)


@pytest.fixture(scope="module")
def texture(rig, truth, cameras, frames):
    v = world_vertices(rig, truth.frame(0))[0].float()
    return bake_rig_texture(rig, v, cameras, frames[0, ..., :3], frames[0, ..., 3], RigTextureConfig(size=256),
                            load_sample_head().mesh.texture)


def _views(cameras, frames, pairs) -> ViewBatch:
    cams = cameras[[c for _, c in pairs]]
    rgba = torch.stack([frames[b, c] for b, c in pairs])
    return ViewBatch(tuple(range(len(pairs))), cams, rgba[..., :3], rgba[..., 3])


def _score(rig, gaussians, params, cameras, frames, b, views) -> float:
    from headforge.representations.bound_gaussians import pose_bound

    v = world_vertices(rig, params.frame(b))[0].float()
    s = pose_bound(gaussians.local, gaussians.binding, v, rig.faces)
    k = int(gaussians.local.sh.shape[1] ** 0.5) - 1
    r = render_splats(s, cameras[views], k, torch.ones(3))
    target = composite(frames[b, views, ..., :3], frames[b, views, ..., 3], torch.ones(3))
    return float(psnr(r.rgb, target, frames[b, views, ..., 3]).mean())


def test_initial_layers_follow_the_geometry(rig, truth, cameras, frames, texture):
    v = world_vertices(rig, truth.frame(0))[0].float()
    views = _views(cameras, frames, [(0, c) for c in range(len(cameras))])
    lo, hi = torch.full((3,), -0.25), torch.full((3,), 0.25)
    g = initial_bound_splats(rig, v, truth.similarity, texture, views, (lo, hi),
                             AvatarInitConfig(face_points=3000, extra_points=3000, hull_resolution=48),
                             torch.Generator().manual_seed(0))
    counts = g.counts()
    surface = slice(0, 3000)  # the points sampled on the skin come first
    scalp = rig.region_mask(Region.SCALP)[rig.faces[g.binding[surface]]].all(1)
    # on the skin: scalp triangles carry the hair layer, the others the face layer
    assert torch.equal(g.layer[surface] == int(LayerCode.HAIR), scalp) and 0 < int(scalp.sum()) < 3000
    assert bool((g.layer[surface] != int(LayerCode.CLOTHING)).all())
    # the views show only the rig: the hull hugs it, and few points stand off the skin (the hull's own error)
    assert counts[Layer.FACE] + counts[Layer.HAIR] + counts[Layer.CLOTHING] - 3000 < 3000
    posed = pose_avatar(Avatar(rig, "builtin", truth, texture, g, 0), truth.frame(0))
    tri = v[rig.faces[g.binding[surface]]].mean(1)
    assert float((posed.means[surface] - tri).norm(dim=-1).max()) < 0.02  # on (near) their own triangles
    off = g.layer[3000:]
    rig_pts = truth.similarity.inverse_apply(posed.means[3000:].double())
    chin = float(truth.similarity.inverse_apply(v[rig.region_mask(Region.FACE_SKIN)].double())[:, 1].min())
    # off the skin: hair above the chin line, clothing below it
    assert bool((rig_pts[off == int(LayerCode.HAIR), 1] >= chin).all())
    assert bool((rig_pts[off == int(LayerCode.CLOTHING), 1] < chin).all())


def test_short_training_beats_initialisation_on_held_out_frames(rig, truth, cameras, frames, texture, tmp_path):
    held = [2, 7]  # views never trained on (between trained ones), shown with frame 3, an expression never trained
    train_pairs = [(b, c) for b in (0, 1, 2) for c in range(len(cameras)) if c not in held]
    views = _views(cameras, frames, train_pairs)
    frame_of_view = torch.tensor([b for b, _ in train_pairs])
    v0 = world_vertices(rig, truth.frame(0))[0].float()
    init = initial_bound_splats(rig, v0, truth.similarity, texture, None, None,
                                AvatarInitConfig(face_points=6000, max_sh_degree=1), torch.Generator().manual_seed(1))
    cfg = AvatarTrainConfig(steps=150, max_sh_degree=1, sh_degree_interval=50, checkpoint_every=100)
    result = train_avatar(rig, truth, init, views, frame_of_view, cfg, checkpoint_dir=tmp_path / "ck",
                          scene_scale=1.0, progress=False)
    before = _score(rig, init, truth, cameras, frames, 3, held)
    after = _score(rig, result.gaussians, truth, cameras, frames, 3, held)
    assert after > before + 1.0, (before, after)
    assert result.steps == 150 and (tmp_path / "ck" / "step_000150.pt").is_file()
    # the corrections stay near the fit (they are regularised) and keep weights in [0, 1]
    assert float((result.params.expression - truth.expression).abs().max()) < 0.2
    assert float(result.params.expression.min()) >= 0 and float(result.params.expression.max()) <= 1
    # resume from the checkpoint at 100 steps continues to the same step count
    resumed = train_avatar(rig, truth, init, views, frame_of_view, replace(cfg, steps=160),
                           checkpoint_dir=tmp_path / "ck", resume=True, scene_scale=1.0, progress=False)
    assert resumed.steps == 160


def _record(rig, params) -> RigFitRecord:
    return RigFitRecord("builtin", rig.source, rig.licence, rig.num_vertices, params,
                        tuple(range(params.num_frames)), tuple(() for _ in range(params.num_frames)),
                        LandmarkSet.MEDIAPIPE_478, {})


def test_avatar_folder_round_trip(rig, truth, texture, tmp_path):
    v0 = world_vertices(rig, truth.frame(0))[0].float()
    g = initial_bound_splats(rig, v0, truth.similarity, texture, None, None, AvatarInitConfig(face_points=500),
                             torch.Generator().manual_seed(2))
    g = replace(g, layer=torch.where(torch.arange(len(g)) % 4 == 0, int(LayerCode.HAIR), g.layer))
    avatar = Avatar(rig, "builtin", truth, texture, g, 3)
    save_avatar(avatar, tmp_path / "avatar", _record(rig, truth))
    back = load_avatar(tmp_path)
    assert torch.equal(back.gaussians.binding, g.binding) and torch.equal(back.gaussians.layer, g.layer)
    assert torch.allclose(back.gaussians.local.means, g.local.means, atol=1e-6)
    assert torch.allclose(back.gaussians.local.scales, g.local.scales, rtol=1e-5)
    a, b = pose_avatar(avatar, truth.frame(2)), pose_avatar(back, back.params.frame(2))
    assert torch.allclose(a.means, b.means, atol=1e-5)
    for name in ("face", "hair"):
        assert (tmp_path / "avatar" / "layers" / f"{name}.ply").is_file()
    # a binding beyond the rig's triangles is refused, naming the file
    from headforge.representations.splat_io import SplatFrame, load_splats_ply_extra, save_splats_ply

    ply = tmp_path / "avatar" / "gaussians.ply"
    local, cols = load_splats_ply_extra(ply, ("binding_0", "layer"))
    save_splats_ply(local, ply, extra={"binding_0": cols["binding_0"] + rig.faces.shape[0], "layer": cols["layer"]},
                    frame=SplatFrame.HEAD)
    with pytest.raises(InputError, match="binding_0"):
        load_avatar(tmp_path)
    (tmp_path / "avatar" / TEXTURE_FILE).unlink()
    with pytest.raises(InputError, match="texture.png"):
        load_avatar(tmp_path)


@pytest.fixture(scope="module")
def disk_capture(tmp_path_factory, rig, truth, cameras, frames, texture):
    """A two-timestep capture on disk (nerfstudio layout) and a fit-rig folder with the true parameters."""
    from headforge.captures.nerfstudio import write_nerfstudio

    root = tmp_path_factory.mktemp("avatar_job")
    pairs = [(b, c) for b in (0, 1) for c in range(len(cameras))]
    cap = Capture(cameras[[c for _, c in pairs]], tuple(View(None, frame=b) for b, _ in pairs),
                  Split.every(len(pairs), 0), images=torch.stack([frames[b, c] for b, c in pairs]))
    write_nerfstudio(cap, root / "capture")
    fit = root / "fit"
    fit.mkdir()
    params = RigParams(truth.similarity, truth.identity, truth.expression[:2],
                       RigPose(truth.pose.rotations[:2], truth.pose.translation[:2]))
    write_rig_fit(_record(rig, params), fit)
    from headforge.captures.images import write_image

    write_image(fit / TEXTURE_FILE, texture.texture.numpy())
    return root


def test_avatar_command_end_to_end(disk_capture, capsys):
    root = disk_capture
    out = root / "out"
    args = ["avatar", str(root / "capture"), "--out", str(out), "--rig-fit", str(root / "fit"), "--steps", "40",
            "--face-points", "3000", "--resolution", "96", "--test-every", "5", "--test-frames", "1",
            "--turntable-frames", "4"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["held_out_frames"]["num_views"] > 0 and m["trained_frames"]["num_views"] > 0
    assert m["held_out_frames"]["psnr_masked"] > 10
    for name in ("contact_sheet.png", "turntable.gif", "expressions_sheet.png", "avatar/avatar.json",
                 "avatar/gaussians.ply"):
        assert (out / name).is_file(), name
    avatar = load_avatar(out)
    assert len(avatar.gaussians) == m["num_gaussians"]
    # a second run on the same folder is refused; holding out every frame is refused before training
    assert main(args) == 2
    bad = root / "bad"
    assert main([*args[:3], str(bad), *args[4:12], "--test-frames", "0,1"]) == 2
    assert not bad.exists() or not (bad / "metrics.json").exists()
    assert "holds out every fitted timestep" in capsys.readouterr().err


def test_rig_fit_folder_without_texture_is_refused(disk_capture, tmp_path):
    import shutil

    fit = tmp_path / "fit"
    shutil.copytree(disk_capture / "fit", fit)
    (fit / TEXTURE_FILE).unlink()
    out = tmp_path / "out"
    code = main(["avatar", str(disk_capture / "capture"), "--out", str(out), "--rig-fit", str(fit), "--steps", "5"])
    assert code == 2
    assert not (out / "metrics.json").exists()
    # the refusal came before any training: no checkpoint was written
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


def test_animate_writes_a_video_of_the_clip(disk_capture, tmp_path):
    import imageio.v3 as iio

    avatar_dir = disk_capture / "out"
    if not (avatar_dir / "metrics.json").exists():  # the end-to-end test above builds it
        pytest.skip("the avatar of test_avatar_command_end_to_end is missing (run the module)")
    mp4, gif = tmp_path / "blink.mp4", tmp_path / "talk.gif"
    assert main(["animate", str(avatar_dir), "--clip", "builtin:blink", "--out", str(mp4), "--resolution", "64",
                 "--frames", "6"]) == 0
    frames = list(iio.imiter(mp4))
    assert len(frames) == 6 and frames[0].shape == (64, 64, 3)
    assert main(["animate", str(avatar_dir), "--clip", "builtin:talk", "--out", str(gif), "--resolution", "48",
                 "--frames", "5", "--turn-deg", "60"]) == 0
    g = list(iio.imiter(gif))
    assert len(g) == 5
    assert float(np.abs(g[0].astype(float) - g[2].astype(float)).mean()) > 0.5  # the camera turns, the face talks
    # refusals: an existing video, a wrong suffix, a missing avatar, an unknown clip: exit 2, nothing written
    assert main(["animate", str(avatar_dir), "--clip", "builtin:blink", "--out", str(mp4)]) == 2
    assert main(["animate", str(avatar_dir), "--clip", "builtin:blink", "--out", str(tmp_path / "x.avi")]) == 2
    assert main(["animate", str(tmp_path), "--clip", "builtin:blink", "--out", str(tmp_path / "y.mp4")]) == 2
    assert main(["animate", str(avatar_dir), "--clip", "builtin:nope", "--out", str(tmp_path / "z.mp4")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blink.mp4", "talk.gif"]


def test_gradients_reach_the_rig_parameters_through_posing(rig, truth, texture):
    """pose_avatar is differentiable in the ARKit weights and joint rotations (joint refinement), and the
    gradient matches a central finite difference."""
    v0 = world_vertices(rig, truth.frame(0))[0].float()
    g = initial_bound_splats(rig, v0, truth.similarity, texture, None, None, AvatarInitConfig(face_points=300),
                             torch.Generator().manual_seed(3))
    avatar = Avatar(rig, "builtin", truth, texture, g, 0)
    jaw = ARKIT_NAMES.index("jawOpen")
    target = torch.randn(len(g), 3, generator=torch.Generator().manual_seed(4))

    def loss(w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        s = pose_avatar(avatar, avatar.frame_params(w, r))
        return (s.means * target).sum() + s.scales.sum()

    w = torch.zeros(len(ARKIT_NAMES), dtype=D)
    w[jaw] = 0.4
    r = torch.zeros(6, 3, dtype=D)
    w.requires_grad_(True)
    r.requires_grad_(True)
    loss(w, r).backward()
    assert float(w.grad[jaw].abs()) > 0 and float(r.grad.abs().sum()) > 0
    h = 1e-3
    with torch.no_grad():
        e = torch.zeros_like(w)
        e[jaw] = h
        fd = (loss(w + e, r) - loss(w - e, r)) / (2 * h)
    assert float(w.grad[jaw]) == pytest.approx(float(fd), rel=2e-2, abs=1e-4)
