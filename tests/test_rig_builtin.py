"""The built-in rig (headforge/assets/builtin_rig*.py): a valid HeadRig generated from the sample head, whose 52
ARKit shapes each move a non-empty named region and nothing far from it, Left/Right shapes mirror each other, the
jaw turns the chin and not the crown without tearing, identity directions change their named measurement,
landmarks stay on the surface, and generation is deterministic (and cached)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import headforge.assets.builtin_rig as br
import headforge.assets.rigs as rigs
from headforge.assets.builtin_rig_identity import IDENTITY_PARAMETERS
from headforge.assets.builtin_rig_mesh import build_rig_mesh, design_offset
from headforge.assets.builtin_rig_shapes import expression_fields
from headforge.assets.head_sdf import HeadShape
from headforge.assets.rigs import load_rig
from headforge.assets.sample_head import load_sample_head
from headforge.errors import InputError
from headforge.representations.rig.arkit import ARKIT_NAMES, DIRECTIONAL
from headforge.representations.rig.deform import RigPose, deform, landmarks
from headforge.representations.rig.head_rig import JOINTS, HeadRig, Joint, LandmarkSet, Region
from headforge.representations.rig.sources import RigSource, RigSpec, parse_rig_spec

S = HeadShape()
MOVED = 5e-5  # m: a vertex "moves" above this
FAR_EPS = 1e-7  # m: what "does not move" means far from a shape's area


@pytest.fixture(scope="module")
def arrays():
    return br.generate_builtin_rig_arrays()


@pytest.fixture(scope="module")
def rig(arrays) -> HeadRig:
    return br.rig_from_arrays(arrays)


@pytest.fixture(scope="module")
def design(rig) -> np.ndarray:  # [V, 3] the template in the sample head's design coordinates
    offset = design_offset(load_sample_head().mesh.vertices.double().numpy(), S)
    return rig.template.double().numpy() + offset


def neutral_pose(B: int = 1) -> RigPose:
    return RigPose(torch.zeros(B, len(JOINTS), 3), torch.zeros(B, 3))


def test_valid_rig(rig, monkeypatch):
    assert bool(rig.expression_present.all()) and rig.missing_expressions() == ()
    assert set(rig.region_names) >= {Region.FACE_SKIN, Region.SCALP, Region.EARS, Region.NECK, Region.EYES,
                                     Region.MOUTH_INTERIOR}
    assert all(bool(rig.region_mask(r).any()) for r in rig.region_names)
    assert rig.num_identity == len(IDENTITY_PARAMETERS) and LandmarkSet.IBUG_68 in rig.landmarks
    # the shipped MediaPipe-478 embedding belongs to this topology (else: rerun tools/generate_landmark_embedding.py)
    mp = rig.landmarks[LandmarkSet.MEDIAPIPE_478]
    on = rig.region_mask(Region.FACE_SKIN) | rig.region_mask(Region.EYES)
    assert bool(on[rig.faces[mp.triangles]].all())
    monkeypatch.setattr(rigs, "load_builtin_rig", lambda: rig)  # no cache file written by this test
    assert load_rig(parse_rig_spec("builtin")) is rig
    w = rig.skin_weights
    for joint in (Joint.LEFT_EYE, Joint.RIGHT_EYE):  # eyeballs rigid to their own eye
        col = w[:, JOINTS.index(joint)]
        eyes = rig.region_mask(Region.EYES)
        assert bool((col[eyes] > 0).any()) and float(col[~eyes].max()) == 0


# (design anchor, radius beyond which nothing may move, the regions allowed to move) per shape family
def family(name: str) -> tuple[tuple[float, float, float], float, set[Region]]:
    sx = 1.0 if name.endswith("Left") else -1.0 if name.endswith("Right") else 0.0
    skin = {Region.FACE_SKIN}
    if name.startswith("eye"):
        return (sx * S.eye_c[0], S.eye_c[1], S.eye_c[2]), 0.04, skin
    if name.startswith("brow"):
        return (sx * 0.035, 0.024, 0.085), 0.05, skin
    if name.startswith("nose"):
        return (sx * 0.012, -0.03, 0.095), 0.03, skin
    if name == "cheekPuff":
        return (0.0, S.mouth_y + 0.012, 0.065), 0.075, skin
    if name.startswith("cheek"):
        return (sx * 0.04, -0.012, 0.072), 0.035, skin
    if name == "tongueOut":
        return (0.0, S.mouth_y, 0.05), 0.03, {Region.MOUTH_INTERIOR}
    if name.startswith("jaw"):
        return (0.0, -0.1, 0.04), 0.11, {Region.FACE_SKIN, Region.NECK, Region.MOUTH_INTERIOR}
    return (0.0 if name in {str(d) for d in DIRECTIONAL} else sx * 0.02, S.mouth_y, 0.085), 0.05, skin


@pytest.mark.parametrize("k", range(len(ARKIT_NAMES)), ids=ARKIT_NAMES)
def test_shape_moves_its_region_only(rig, design, k):
    name = ARKIT_NAMES[k]
    anchor, radius, regions = family(name)
    d = rig.expression_basis[k].double().norm(dim=1).numpy()
    moved = d > MOVED
    assert moved.sum() >= 10, f"{name} moves {moved.sum()} vertices"
    allowed = np.zeros(rig.num_vertices, bool)
    for r in regions:
        allowed |= rig.region_mask(r).numpy()
    assert allowed[moved].all(), f"{name} moves vertices outside {sorted(regions)}"
    far = np.linalg.norm(design - np.asarray(anchor), axis=1) > radius
    assert d[far].max(initial=0.0) < FAR_EPS, f"{name} moves {d[far].max() * 1e3:.3f} mm far from its area"
    if name.endswith(("Left", "Right")) and name not in {str(x) for x in DIRECTIONAL}:
        side = 1.0 if name.endswith("Left") else -1.0
        assert side * (d * design[:, 0]).sum() / d.sum() > 0.005  # on the subject's named side


def test_left_right_mirror(arrays, design):
    mesh = build_rig_mesh(load_sample_head(), S)  # the fields are functions of position, side flag and part
    mirror = np.array([-1.0, 1.0, 1.0])
    F = expression_fields(design, mesh.lower_lip, mesh.parts, S)
    G = expression_fields(design * mirror, mesh.lower_lip, mesh.parts, S)  # fields at the mirrored points
    index = {n: i for i, n in enumerate(ARKIT_NAMES)}
    for i, name in enumerate(ARKIT_NAMES):
        twin = (name[:-4] + "Right" if name.endswith("Left") else name[:-5] + "Left" if name.endswith("Right")
                else name)
        assert np.abs(F[i] - G[index[twin]] * mirror).max() < 1e-9, name
    assert np.abs(F[index["mouthSmileLeft"]]).max() > 1e-3  # not trivially zero


def test_jaw_turn_moves_chin_not_crown_without_tearing(rig):
    pose = neutral_pose()
    pose.rotations[0, JOINTS.index(Joint.JAW), 0] = 0.35  # open
    v0 = deform(rig, None, torch.zeros(1, 52), neutral_pose())[0]
    v1 = deform(rig, None, torch.zeros(1, 52), pose)[0]
    chin = landmarks(rig, v1[None], LandmarkSet.IBUG_68)[0, 8] - landmarks(rig, v0[None], LandmarkSet.IBUG_68)[0, 8]
    assert float(chin.norm()) > 0.01 and float(chin[1]) < 0  # the chin drops
    crown = int(rig.template[:, 1].argmax())
    assert float((v1[crown] - v0[crown]).norm()) < 1e-6
    lm0, lm1 = landmarks(rig, v0[None], LandmarkSet.IBUG_68)[0], landmarks(rig, v1[None], LandmarkSet.IBUG_68)[0]
    assert float((lm1[66] - lm0[66]).norm()) > 0.005 and float((lm1[62] - lm0[62]).norm()) < 5e-4  # lips part
    nose = landmarks(rig, v1[None], LandmarkSet.IBUG_68)[0, 30] - landmarks(rig, v0[None], LandmarkSet.IBUG_68)[0, 30]
    assert float(nose.norm()) < 1e-4
    skin = rig.region_mask(Region.FACE_SKIN)
    f = rig.faces[skin[rig.faces].all(1)]
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    stretch = (v1[e[:, 0]] - v1[e[:, 1]]).norm(dim=1) / (v0[e[:, 0]] - v0[e[:, 1]]).norm(dim=1).clamp_min(1e-9)
    assert float(stretch.max()) < 5.0  # no tear: the skin stretches (most at the mouth corners, ~4x), never rips


def test_identity_directions_change_their_measurement(rig):
    names = [p.name for p in IDENTITY_PARAMETERS]
    t = rig.template.double()

    def shaped(name: str, c: float) -> torch.Tensor:
        coeff = torch.zeros(1, rig.num_identity)
        coeff[0, names.index(name)] = c
        return deform(rig, coeff, torch.zeros(1, 52), neutral_pose())[0].double()

    band = (t[:, 1] - 0.02).abs() < 0.01  # cranium slab above the eyes
    width = lambda v: float(v[band, 0].max() - v[band, 0].min())  # noqa: E731
    sigma = IDENTITY_PARAMETERS[names.index("head_width")].sigma
    assert 1.5 * sigma < width(shaped("head_width", 1.0)) - width(t) < 2.5 * sigma
    tip = int(t[:, 2].argmax())
    nose_sigma = IDENTITY_PARAMETERS[names.index("nose_length")].sigma
    assert float(shaped("nose_length", 1.0)[tip, 2] - t[tip, 2]) > 0.5 * nose_sigma
    eye = JOINTS.index(Joint.LEFT_EYE)
    moved = (rig.joint_regressor.double() @ shaped("eye_spacing", 1.0))[eye, 0] - rig.rest_joints.double()[eye, 0]
    assert abs(float(moved) - IDENTITY_PARAMETERS[names.index("eye_spacing")].sigma) < 2e-4  # joints follow


def test_landmarks_follow_the_surface(rig):
    torch.manual_seed(0)
    pose = RigPose(0.1 * torch.randn(2, len(JOINTS), 3), 0.01 * torch.randn(2, 3))
    v = deform(rig, torch.randn(2, rig.num_identity), torch.rand(2, 52), pose)
    lm = landmarks(rig, v, LandmarkSet.IBUG_68)  # [2, 68, 3]
    emb = rig.landmarks[LandmarkSet.IBUG_68]
    corner = rig.faces[emb.triangles, emb.barycentrics.argmax(1)]  # one-hot: the landmark is that vertex
    assert torch.allclose(lm, v[:, corner], atol=1e-7)
    assert bool(rig.region_mask(Region.FACE_SKIN)[corner].sum() >= 56)  # the eye corners may lie on the eyeballs


def test_generation_is_deterministic_and_cached(arrays, tmp_path, monkeypatch):
    again = br.generate_builtin_rig_arrays()
    assert all(np.array_equal(arrays[k], again[k]) for k in br.ARRAYS)
    monkeypatch.setattr(br, "cache_dir", lambda: tmp_path)
    first = br.load_builtin_rig()
    assert len(list(tmp_path.glob(f"builtin_rig-{br.VERSION}-*.npz"))) == 1
    cached = br.load_builtin_rig()
    assert torch.equal(first.expression_basis, cached.expression_basis) and torch.equal(first.faces, cached.faces)


def test_parse_builtin_spec():
    assert parse_rig_spec("builtin") == RigSpec(RigSource.BUILTIN)
    with pytest.raises(InputError, match="takes no path"):
        parse_rig_spec("builtin:/tmp")
