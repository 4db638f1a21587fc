"""Layered avatars (stages/avatar_layers.py, stages/avatar_sheets.py, pipeline/avatar_edit_job.py): the composite
hides a Gaussian behind the mesh and shows one in front, equals the plain rasterizer without the mesh and the
rig-frame render in the world; the hair swap keeps both layers' counts, the hair's height above the receiver's
scalp and the receiver's face (same rig with another identity, and across rigs to ICT-FaceKit); tint and texture
edits change the face colours by the factor and nothing else; the commands end to end; the sheets' sizes.

Avatars are made by hand from the built-in rig (tests/avatar_fixtures.py), no training."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from avatar_fixtures import HAIR_HEIGHT, fit_record, make_avatar, region_faces
from conftest import SHARED_DATA

import headforge.pipeline.avatar_edit_job as job
from headforge.assets.builtin_rig import load_builtin_rig
from headforge.captures.images import read_image, write_image
from headforge.cli import main
from headforge.geometry.bilinear import bilinear_image
from headforge.geometry.rays import project_points
from headforge.geometry.sh import eval_sh
from headforge.pipeline.avatar_file import load_avatar, save_avatar
from headforge.renderers.gaussian_raster import rasterize_gaussians
from headforge.representations.bound_gaussians import Layer, LayerCode, triangle_frames
from headforge.representations.gaussians import Splats
from headforge.representations.mesh import uv_to_texel
from headforge.representations.rig.head_rig import HeadRig, Region
from headforge.stages.avatar import Avatar, BoundSplats, avatar_vertices, pose_avatar
from headforge.stages.avatar_layers import (
    closest_among,
    composite_render,
    gaussian_texture_uvs,
    replace_face_texture,
    swap_hair,
    tint_face,
)
from headforge.stages.avatar_sheets import DEFAULT_EXPRESSIONS, avatar_cameras, before_after_sheet, expressions_sheet
from headforge.stages.landmark_embedding import closest_points_on_triangles, snap_to_surface
from headforge.viz.rig_sheet import layout

ICT = SHARED_DATA / "ict_facekit"
SIZE = 64  # render size of the checks
WHITE = torch.ones(3)


@pytest.fixture(scope="module")
def rig() -> HeadRig:
    return load_builtin_rig()


@pytest.fixture(scope="module")
def donor(rig) -> Avatar:
    return make_avatar(rig, "builtin", seed=0)


@pytest.fixture(scope="module")
def receiver(rig) -> Avatar:
    """Another identity (built-in identity coefficients of up to 2.5), other hair, SH degree 1."""
    identity = torch.zeros(rig.num_identity)
    identity[:6] = torch.tensor([2.5, -2.0, 2.0, -1.5, 1.5, 2.0])
    return make_avatar(rig, "builtin", identity=identity, seed=1, hair_rgb=(0.85, 0.7, 0.3), sh_degree=1)


def _two_gaussians(avatar: Avatar, behind_m: float, front_m: float) -> Avatar:
    """The avatar with two face Gaussians only: red ``behind_m`` behind the nose-tip triangle, green ``front_m`` in
    front of a cheek triangle (both 1 cm wide, opaque)."""
    rig = avatar.rig
    verts = avatar_vertices(avatar, avatar.neutral_params(), world=False)[0].double()
    R, T, k = triangle_frames(verts, rig.faces)
    tris = region_faces(rig, Region.FACE_SKIN)
    nose = int(tris[T[tris, 2].argmax()])
    cheek_side = tris[(T[tris, 0] > 0.035) & (T[tris, 1].abs() < 0.02)]
    cheek = int(cheek_side[T[cheek_side, 2].argmax()])
    binding = torch.tensor([nose, cheek])
    kb = k[binding].float()
    means = torch.stack([torch.tensor([0.0, -behind_m, 0.0]) / kb[0], torch.tensor([0.0, front_m, 0.0]) / kb[1]])
    sh = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]]) - 0.5
    sh = sh / 0.28209479177387814
    local = Splats(means, torch.tensor([[1.0, 0, 0, 0]] * 2), 0.005 / kb[:, None].expand(2, 3), torch.ones(2) * 0.999,
                   sh)
    return replace(avatar, gaussians=BoundSplats(local, binding, torch.full((2,), int(LayerCode.FACE))), sh_degree=0)


def test_composite_hides_a_gaussian_behind_the_mesh_and_shows_one_in_front(donor):
    avatar = _two_gaussians(donor, behind_m=0.04, front_m=0.004)
    cams = avatar_cameras(avatar, SIZE)[0]  # front view, rig frame
    params = avatar.neutral_params()
    centres = pose_avatar(avatar, params, world=False).means
    uv, _ = project_points(cams, centres)
    px = torch.floor(uv[0]).long()  # [2, 2] (col, row)
    mesh_only, _ = composite_render(avatar, params, cams, WHITE, layers=(), world=False)
    rgb, _ = composite_render(avatar, params, cams, WHITE, world=False)
    at = lambda img, i: img[0, px[i, 1], px[i, 0]]  # noqa: E731
    assert torch.allclose(at(rgb, 0), at(mesh_only, 0), atol=1e-6)  # the red one is hidden: the mesh shows
    assert at(rgb, 1)[1] > 0.9 and at(rgb, 1)[0] < 0.1  # the green one covers the cheek
    no_test, _ = composite_render(avatar, params, cams, WHITE, world=False, tolerance=float("inf"))
    assert at(no_test, 0)[0] > at(mesh_only, 0)[0] + 0.1  # without the centre test the red one would show


def test_composite_without_the_mesh_is_the_plain_rasterizer(receiver):
    cams = avatar_cameras(receiver, SIZE)
    params = receiver.frame_params(expression=torch.eye(52)[24].double())  # some expression
    rgb, alpha = composite_render(receiver, params, cams, WHITE, mesh_face=False, layers=(Layer.HAIR,), world=False)
    s = pose_avatar(receiver, params, world=False, layers=(Layer.HAIR,))
    ref = rasterize_gaussians(s.means, s.quats, s.scales, s.opacities, s.sh[:, :4], cams.world_to_camera,
                              cams.intrinsics(), SIZE, SIZE, sh_degree=1, background=WHITE)
    assert torch.equal(rgb, ref.rgb) and torch.equal(alpha, ref.alpha)
    face_too, _ = composite_render(receiver, params, cams, WHITE, mesh_face=False, world=False)
    assert (face_too - rgb).abs().max() > 0.2  # the layer choice matters


def test_composite_in_the_world_equals_the_rig_frame(receiver):
    """World cameras = the rig-frame cameras moved by the fit's similarity (scale 1.3): the same images."""
    cams = avatar_cameras(receiver, SIZE)
    sim = receiver.params.similarity
    R, s, t = sim.rotation.float(), float(sim.scale), sim.translation.float()
    w2c = cams.world_to_camera.clone()
    rot = w2c[:, :3, :3] @ R.T
    w2c[:, :3, 3] = s * w2c[:, :3, 3] - rot @ t
    w2c[:, :3, :3] = rot
    world = replace(cams, world_to_camera=w2c)
    rig_rgb, _ = composite_render(receiver, receiver.neutral_params(), cams, WHITE, world=False)
    world_rgb, _ = composite_render(receiver, receiver.neutral_params(), world, WHITE, world=True)
    assert (rig_rgb - world_rgb).abs().mean() < 2e-3


def _scalp_distance(avatar: Avatar, splats: Splats) -> torch.Tensor:  # [N] metres to the posed scalp (rig frame)
    verts = avatar_vertices(avatar, avatar.neutral_params(), world=False)[0]
    faces = avatar.rig.faces[region_faces(avatar.rig, Region.SCALP)]
    return snap_to_surface(splats.means, verts, faces)[2]


def test_hair_swap_same_rig_keeps_counts_height_and_face(receiver, donor):
    result = swap_hair(receiver, donor)
    counts = result.gaussians.counts()
    assert counts["face"] == receiver.gaussians.counts()["face"] and counts["hair"] == donor.gaussians.counts()["hair"]
    assert counts["clothing"] == receiver.gaussians.counts()["clothing"]
    assert result.sh_degree == 1 and result.gaussians.local.sh.shape[1] == 4
    hair = (Layer.HAIR,)
    d_donor = _scalp_distance(donor, pose_avatar(donor, world=False, layers=hair))
    d_result = _scalp_distance(result, pose_avatar(result, world=False, layers=hair))
    assert abs(float(d_donor.median()) - HAIR_HEIGHT) < 0.0005
    assert float((d_result - d_donor).abs().median()) < 0.0005  # the same height above the new scalp
    # control: the donor's hair left where it was in the head frame sits elsewhere relative to this scalp
    d_unmoved = _scalp_distance(result, pose_avatar(donor, world=False, layers=hair))
    assert float((d_unmoved - d_donor).abs().median()) > 3 * float((d_result - d_donor).abs().median())
    scores, pixels = job.face_region_psnr(receiver, result, SIZE)
    assert min(pixels) > 100 and min(scores) >= 35.0
    # control: the same measure sees a slight change of the face (10 % darker)
    assert max(job.face_region_psnr(receiver, tint_face(result, (0.9, 0.9, 0.9)), SIZE)[0]) < 35.0


@pytest.mark.skipif(not (ICT / "ict_facekit_shapes.npz").is_file(), reason=f"ICT-FaceKit not found at {ICT}")
def test_hair_swap_across_rigs_keeps_counts_and_height(donor):
    from headforge.representations.rig.ict_facekit import load_ict_facekit

    ict = make_avatar(load_ict_facekit(ICT), f"ict-facekit:{ICT}", n_face=1500, n_hair=100, seed=3)
    result = swap_hair(ict, donor)
    assert result.gaussians.counts() == {"face": 1500, "hair": donor.gaussians.counts()["hair"], "clothing": 0}
    scalp = region_faces(ict.rig, Region.SCALP)
    hair = result.gaussians.select(result.gaussians.layer_mask(Layer.HAIR))
    assert bool(torch.isin(hair.binding, scalp).all())
    d_donor = _scalp_distance(donor, pose_avatar(donor, world=False, layers=(Layer.HAIR,)))
    d_result = _scalp_distance(result, pose_avatar(result, world=False, layers=(Layer.HAIR,)))
    assert float((d_result - d_donor).abs().median()) < 0.001
    assert min(job.face_region_psnr(ict, result, SIZE)[0]) >= 35.0


def testclosest_among_candidates_matches_one_point_at_a_time():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(150, 3, generator=g, dtype=torch.float64)
    tris = torch.randn(150, 5, 3, 3, generator=g, dtype=torch.float64)
    pt, j = closest_among(points, tris, chunk=32)
    for m in range(len(points)):
        pts, _ = closest_points_on_triangles(points[m:m + 1], tris[m])
        d = (pts[0] - points[m]).norm(dim=-1)
        assert int(j[m]) == int(d.argmin()) and torch.allclose(pt[m], pts[0, int(d.argmin())])


def test_tint_scales_face_colours_and_leaves_hair(receiver):
    f = (1.2, 0.9, 0.5)
    tinted = tint_face(receiver, f)
    face, hair = receiver.gaussians.layer_mask(Layer.FACE), receiver.gaussians.layer_mask(Layer.HAIR)
    dirs = torch.randn(int(face.sum()), 3)
    old = eval_sh(1, receiver.gaussians.local.sh[face], dirs) + 0.5
    new = eval_sh(1, tinted.gaussians.local.sh[face], dirs) + 0.5
    assert torch.allclose(new, old * torch.tensor(f), atol=1e-5)
    assert torch.equal(tinted.gaussians.local.sh[hair], receiver.gaussians.local.sh[hair])
    assert torch.allclose(tinted.texture.texture, (receiver.texture.texture * torch.tensor(f)).clamp(0, 1))
    for bad in ((0.0, 1.0, 1.0), (1.0, float("nan"), 1.0), (-1.0, 1.0, 1.0)):
        with pytest.raises(Exception, match="tint"):
            tint_face(receiver, bad)


def test_texture_uvs_and_replace(donor):
    face = donor.gaussians.select(donor.gaussians.layer_mask(Layer.FACE))
    uv, found = gaussian_texture_uvs(donor, face)
    assert bool(found.all())
    sampled = bilinear_image(donor.texture.texture.double(), uv_to_texel(uv)).float()
    colour = face.local.sh[:, 0] * 0.28209479177387814 + 0.5  # the fixture coloured them from the texture
    assert float((sampled - colour).abs().median()) < 0.01
    same = replace_face_texture(donor, donor.texture.texture.clone())
    assert torch.equal(same.gaussians.local.sh, donor.gaussians.local.sh)
    assert torch.equal(same.texture.texture, donor.texture.texture)
    flat = torch.full_like(donor.texture.texture, 0.5)
    grey = replace_face_texture(donor, flat)
    mask = donor.gaussians.layer_mask(Layer.FACE)
    new = grey.gaussians.local.sh[mask, 0] * 0.28209479177387814 + 0.5
    assert float((new - 0.5).abs().median()) < 0.02  # face Gaussians take the new texture's colour
    assert torch.equal(grey.gaussians.local.sh[~mask], donor.gaussians.local.sh[~mask])


def test_sheets_have_the_expected_size(donor, receiver):
    tile = 40
    cap, gap = layout(tile)
    title = int(cap * 1.6)
    img = expressions_sheet(donor, tile=tile, columns=3)
    rows = -(-len(DEFAULT_EXPRESSIONS) // 3)
    assert img.shape == (title + rows * (cap + tile + gap), 3 * (3 * tile + gap), 3)
    first, second = img[title + cap:title + cap + tile, :3 * tile], img[title + cap:title + cap + tile, 3 * tile + gap:
                                                                          6 * tile + gap]
    assert np.abs(first - second).max() > 0.1  # jawOpen differs from the neutral
    ba = before_after_sheet(receiver, donor, swap_hair(receiver, donor), tile=tile)
    assert ba.shape == (title + 3 * (cap + tile + gap), 3 * tile + gap, 3)


# ------------------------------------------------------------------------------------------ commands
@pytest.fixture(scope="module")
def folders(tmp_path_factory, rig) -> dict:
    root = tmp_path_factory.mktemp("avatars")
    out = {}
    for name, kw in (("receiver", {"seed": 5, "hair_rgb": (0.9, 0.8, 0.4)}), ("donor", {"seed": 6}),
                     ("bald", {"seed": 7, "n_hair": 0})):
        a = make_avatar(rig, "builtin", n_face=600, n_hair=kw.pop("n_hair", 120), **kw)
        save_avatar(a, root / name / "avatar", fit_record(a))
        out[name] = root / name
    return out


def test_hair_swap_command(folders, tmp_path, capsys, monkeypatch):
    out = tmp_path / "swap"
    assert main(["hair-swap", str(folders["receiver"]), str(folders["donor"]), "--out", str(out), "--size", "48"]) == 0
    result = load_avatar(out)
    assert result.gaussians.counts() == {"face": 600, "hair": 120, "clothing": 0}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["same_rig"] and metrics["face_psnr_db_min"] >= 35.0
    assert metrics["counts"]["result"] == result.gaussians.counts()
    assert read_image(out / "before_after.png").shape[1] == 3 * 48 + layout(48)[1]
    # a donor without hair, an existing output, a failure while writing: nothing new is left behind
    assert main(["hair-swap", str(folders["receiver"]), str(folders["bald"]), "--out", str(tmp_path / "b")]) == 2
    assert "no hair" in capsys.readouterr().err and not (tmp_path / "b").exists()
    before = (out / "metrics.json").read_bytes()
    assert main(["hair-swap", str(folders["receiver"]), str(folders["donor"]), "--out", str(out)]) == 2
    assert (out / "metrics.json").read_bytes() == before
    monkeypatch.setattr(job, "save_avatar", lambda *a: (_ for _ in ()).throw(RuntimeError("disk full")))
    fresh = tmp_path / "fresh"
    assert main(["hair-swap", str(folders["receiver"]), str(folders["donor"]), "--out", str(fresh), "--size",
                 "32"]) == 1
    assert not fresh.exists() and not list(tmp_path.glob("fresh*"))
    assert main(["hair-swap", str(tmp_path / "nowhere"), str(folders["donor"]), "--out", str(fresh)]) == 2
    assert "avatar.json" in capsys.readouterr().err and not fresh.exists()


def test_edit_texture_command(folders, tmp_path, capsys):
    src = load_avatar(folders["receiver"])
    out = tmp_path / "tint"
    assert main(["edit-texture", str(folders["receiver"]), "--out", str(out), "--tint", "1.1,1,0.8",
                 "--size", "32"]) == 0
    tinted = load_avatar(out)
    ratio = tinted.texture.texture.mean((0, 1)) / src.texture.texture.mean((0, 1))
    assert abs(float(ratio[2]) - 0.8) < 0.02 and (out / "before_after.png").is_file()
    texture = tmp_path / "small.png"
    write_image(texture, np.full((64, 64, 3), 0.4, np.float32))
    out2 = tmp_path / "replaced"
    assert main(["edit-texture", str(folders["receiver"]), "--out", str(out2), "--texture", str(texture), "--size",
                 "32"]) == 0
    assert "resampled" in capsys.readouterr().out
    assert abs(float(load_avatar(out2).texture.texture.mean()) - 0.4) < 0.01
    wide = tmp_path / "wide.png"
    write_image(wide, np.full((32, 64, 3), 0.4, np.float32))
    for args, says in ((["--tint", "1,0,1"], "--tint"), (["--tint", "1,1"], "--tint"),
                       (["--texture", str(wide)], "square"),
                       (["--texture", str(tmp_path / "none.png")], "does not exist"), ([], "exactly one"),
                       (["--tint", "1,1,1", "--texture", str(texture)], "exactly one")):
        bad = tmp_path / "bad"
        assert main(["edit-texture", str(folders["receiver"]), "--out", str(bad), *args]) == 2
        assert says in capsys.readouterr().err and not bad.exists()
