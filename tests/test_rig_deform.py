"""HeadRig deformation: LBS against a per-vertex loop and a hand-computed two-bone case, forward kinematics against
a chain walk, gradients of deform against finite differences, landmarks staying on the deformed surface, and the
rig's validation."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from headforge.errors import InputError
from headforge.geometry.rotations import quat_to_rotmat
from headforge.representations.rig.arkit import (
    ARKIT_NAMES,
    ICT_TO_ARKIT,
    NUM_ARKIT,
    ArkitShape,
    arkit_index,
    ict_expression_names,
)
from headforge.representations.rig.deform import (
    RigPose,
    axis_angle_to_matrix,
    blend_shapes,
    deform,
    joint_transforms,
    landmarks,
    linear_blend_skinning,
    posed_joints,
)
from headforge.representations.rig.head_rig import (
    JOINT_PARENTS,
    JOINTS,
    HeadRig,
    LandmarkEmbedding,
    LandmarkSet,
    Region,
    affine_regressor,
)

D = torch.float64


def tiny_rig(V: int = 10, F: int = 8, K: int = 3) -> HeadRig:
    g = torch.Generator().manual_seed(3)
    template = torch.randn(V, 3, generator=g, dtype=D) * 0.1
    faces = torch.stack([torch.randperm(V, generator=g)[:3] for _ in range(F)])
    J = len(JOINTS)
    joints = torch.randn(J, 3, generator=g, dtype=D) * 0.05
    expr = torch.randn(NUM_ARKIT, V, 3, generator=g, dtype=D) * 0.01
    present = torch.ones(NUM_ARKIT, dtype=torch.bool)
    present[ARKIT_NAMES.index(ArkitShape.TONGUE_OUT)] = False
    expr[~present] = 0
    L = 68
    bary = torch.rand(L, 3, generator=g, dtype=D) + 0.1
    return HeadRig(
        template=template, faces=faces, uvs=torch.rand(F, 3, 2, generator=g, dtype=D),
        regions=torch.arange(V) % 2, region_names=(Region.FACE_SKIN, Region.SCALP),
        expression_basis=expr, expression_present=present,
        joint_regressor=affine_regressor(template, joints, torch.ones(J, V, dtype=torch.bool)),
        skin_weights=torch.softmax(torch.randn(V, J, generator=g, dtype=D) * 2, 1),
        identity_basis=torch.randn(K, V, 3, generator=g, dtype=D) * 0.01,
        landmarks={LandmarkSet.IBUG_68: LandmarkEmbedding(torch.randint(0, F, (L,), generator=g),
                                                          bary / bary.sum(1, keepdim=True))},
        source="tiny test rig", licence="test")


def random_pose(B: int, J: int = len(JOINTS), scale: float = 0.6, seed: int = 1) -> RigPose:
    g = torch.Generator().manual_seed(seed)
    return RigPose(torch.randn(B, J, 3, generator=g, dtype=D) * scale, torch.randn(B, 3, generator=g, dtype=D) * 0.1)


# ------------------------------------------------------------------------------------------ names
def test_arkit_order_and_ict_map():
    assert len(set(ARKIT_NAMES)) == NUM_ARKIT == 52
    # group starts of Apple's documented order (the indices Unreal's EARFaceBlendShape gives them)
    starts = {"eyeBlinkLeft": 0, "eyeBlinkRight": 7, "jawForward": 14, "jawOpen": 17, "mouthClose": 18,
              "browDownLeft": 41, "cheekPuff": 46, "noseSneerLeft": 49, "tongueOut": 51}
    assert {n: ARKIT_NAMES.index(n) for n in starts} == starts
    assert arkit_index("eyeBlink_L") == arkit_index(ArkitShape.EYE_BLINK_LEFT) == 0
    assert arkit_index("mouthSmile_R") == ARKIT_NAMES.index("mouthSmileRight")
    with pytest.raises(KeyError, match="not one of the 52"):
        arkit_index("cheekRaiser_L")
    assert ICT_TO_ARKIT[ArkitShape.CHEEK_PUFF] == ("cheekPuff_L", "cheekPuff_R")
    assert ICT_TO_ARKIT[ArkitShape.MOUTH_LEFT] == ("mouthLeft",)
    assert ICT_TO_ARKIT[ArkitShape.EYE_WIDE_RIGHT] == ("eyeWide_R",)
    assert ICT_TO_ARKIT[ArkitShape.TONGUE_OUT] == ()
    assert len(ict_expression_names()) == 53  # 51 ARKit shapes, two of them split in halves


# ------------------------------------------------------------------------------------------ rotations
def test_axis_angle_matches_quaternion_and_is_smooth_at_zero():
    r = torch.randn(20, 3, dtype=D)
    t = r.norm(dim=-1, keepdim=True)
    q = torch.cat([torch.cos(t / 2), torch.sin(t / 2) * r / t], -1)  # wxyz
    assert torch.allclose(axis_angle_to_matrix(r), quat_to_rotmat(q), atol=1e-12)
    tiny = torch.tensor([[1e-6, -2e-6, 3e-6]], dtype=D)  # Taylor branch: still a rotation, still exact
    t = tiny.norm(dim=-1, keepdim=True)
    q = torch.cat([torch.cos(t / 2), torch.sin(t / 2) * tiny / t], -1)
    assert torch.allclose(axis_angle_to_matrix(tiny), quat_to_rotmat(q), atol=1e-15)
    zero = torch.zeros(1, 3, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (zero,))


# ------------------------------------------------------------------------------------------ slow twins
def fk_by_chain_walk(rest: torch.Tensor, parents, rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Each joint's world transform by walking from the root, then G_j [I | -c_j]; one frame, float64."""
    J = rest.shape[0]
    out = torch.zeros(J, 4, 4, dtype=D)
    for j in range(J):
        chain = []
        k = j
        while k != -1:
            chain.append(k)
            k = parents[k]
        G = torch.eye(4, dtype=D)
        for k in reversed(chain):
            local = torch.eye(4, dtype=D)
            local[:3, :3] = axis_angle_to_matrix(rot[k])
            local[:3, 3] = rest[k] - (rest[parents[k]] if parents[k] >= 0 else -trans)
            G = G @ local
        back = torch.eye(4, dtype=D)
        back[:3, 3] = -rest[j]
        out[j] = G @ back
    return out


def lbs_loop(verts: torch.Tensor, weights: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Per vertex: sum over joints of w * (R v + t), in python loops (float64)."""
    out = torch.zeros_like(verts)
    for v in range(verts.shape[0]):
        acc = torch.zeros(3, dtype=D)
        for j in range(T.shape[0]):
            acc = acc + weights[v, j] * (T[j, :3, :3] @ verts[v] + T[j, :3, 3])
        out[v] = acc
    return out


def test_joint_transforms_match_chain_walk():
    rest = torch.randn(len(JOINTS), 3, dtype=D)
    pose = random_pose(3)
    T = joint_transforms(rest, JOINT_PARENTS, pose.rotations, pose.translation)
    for b in range(3):
        assert torch.allclose(T[b], fk_by_chain_walk(rest, JOINT_PARENTS, pose.rotations[b], pose.translation[b]),
                              atol=1e-12)


def test_lbs_matches_loop_reference():
    rig = tiny_rig(V=40)
    pose = random_pose(2)
    T = joint_transforms(rig.rest_joints, rig.parents, pose.rotations, pose.translation)
    fast = linear_blend_skinning(rig.template, rig.skin_weights, T)
    for b in range(2):
        assert torch.allclose(fast[b], lbs_loop(rig.template, rig.skin_weights, T[b]), atol=1e-12)


def test_two_bone_hand_computed():
    # root at the origin, child at (1, 0, 0); both turn 90 degrees about +z; the whole chain moves by (0, 0, 1)
    rest = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]], dtype=D)
    quarter = torch.tensor([0.0, 0, math.pi / 2], dtype=D)
    T = joint_transforms(rest, (-1, 0), torch.stack([quarter, quarter])[None], torch.tensor([[0.0, 0, 1]], dtype=D))
    verts = torch.tensor([[2.0, 0, 0], [0.5, 0, 0], [0.0, 0, 0]], dtype=D)
    weights = torch.tensor([[0.0, 1], [0.5, 0.5], [1, 0]], dtype=D)
    got = linear_blend_skinning(verts, weights, T)[0]
    # (2,0,0) on the child: the child joint goes to (0,1,0) and the bone turns 180 deg: (-1, 1, 0)
    # (0.5,0,0) half and half: root alone gives (0, 0.5, 0), child alone (0.5, 1, 0); the blend (0.25, 0.75, 0)
    want = torch.tensor([[-1.0, 1, 1], [0.25, 0.75, 1], [0, 0, 1]], dtype=D)
    assert torch.allclose(got, want, atol=1e-12)


# ------------------------------------------------------------------------------------------ deform
def test_deform_rest_is_template_and_batches_frames():
    rig = tiny_rig()
    B = 3
    zero = deform(rig, torch.zeros(B, rig.num_identity, dtype=D), torch.zeros(B, NUM_ARKIT, dtype=D),
                  RigPose.rest(B, dtype=D))
    assert torch.allclose(zero, rig.template.expand(B, -1, -1), atol=1e-14)
    ident = torch.randn(B, rig.num_identity, dtype=D)
    expr = torch.rand(B, NUM_ARKIT, dtype=D)
    pose = random_pose(B)
    batched = deform(rig, ident, expr, pose)
    for b in range(B):
        one = deform(rig, ident[b:b + 1], expr[b:b + 1], RigPose(pose.rotations[b:b + 1], pose.translation[b:b + 1]))
        assert torch.allclose(batched[b], one[0], atol=1e-14)
    # without pose, deform is the plain blend of both bases
    blend = blend_shapes(blend_shapes(rig.template, rig.identity_basis, ident), rig.expression_basis, expr)
    assert torch.allclose(deform(rig, ident, expr, RigPose.rest(B, dtype=D)), blend, atol=1e-14)


def test_joints_follow_identity():
    rig = tiny_rig()
    ident = torch.randn(1, rig.num_identity, dtype=D)
    shaped = blend_shapes(rig.template, rig.identity_basis, ident)[0]
    j = posed_joints(rig, ident, RigPose.rest(1, dtype=D))[0]
    assert torch.allclose(j, rig.joint_regressor @ shaped, atol=1e-14)
    assert not torch.allclose(j, rig.rest_joints, atol=1e-6)
    # an eye joint turned in place stays where it is
    pose = RigPose.rest(1, dtype=D)
    pose.rotations[0, JOINTS.index("left_eye")] = torch.tensor([0.3, 0.2, 0.0], dtype=D)
    assert torch.allclose(posed_joints(rig, ident, pose)[0], j, atol=1e-14)


@pytest.mark.parametrize("at_rest", [False, True])
def test_deform_gradcheck(at_rest):
    rig = tiny_rig(V=6, F=4, K=2)
    B = 2
    ident = torch.randn(B, rig.num_identity, dtype=D, requires_grad=True)
    expr = torch.rand(B, NUM_ARKIT, dtype=D, requires_grad=True)
    pose = RigPose.rest(B, dtype=D) if at_rest else random_pose(B)
    rot = pose.rotations.clone().requires_grad_(True)
    trans = pose.translation.clone().requires_grad_(True)

    def f(i, e, r, t):
        return deform(rig, i, e, RigPose(r, t))

    assert torch.autograd.gradcheck(f, (ident, expr, rot, trans), eps=1e-6, atol=1e-7)


def test_landmarks_stay_on_deformed_surface():
    rig = tiny_rig(V=30, F=20)
    emb = rig.landmarks[LandmarkSet.IBUG_68]
    verts = deform(rig, torch.randn(2, rig.num_identity, dtype=D), torch.rand(2, NUM_ARKIT, dtype=D), random_pose(2))
    pts = landmarks(rig, verts, "ibug68")  # [2, 68, 3]
    assert pts.shape == (2, 68, 3)
    for b in range(2):
        tri = verts[b][rig.faces[emb.triangles]]  # [68, 3, 3]
        # recover each point's barycentrics in its deformed triangle by least squares: they are the embedding's
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        A = torch.stack([e1, e2], -1)  # [68, 3, 2]
        uv = torch.linalg.lstsq(A, (pts[b] - tri[:, 0])[..., None]).solution[..., 0]  # [68, 2]
        assert torch.allclose(uv, emb.barycentrics[:, 1:], atol=1e-10)
        assert torch.allclose(A @ uv[..., None], (pts[b] - tri[:, 0])[..., None], atol=1e-12)  # in the plane
    # a rigid motion of the whole head moves each landmark by that motion
    pose = RigPose.rest(1, dtype=D)
    pose.rotations[0, 0] = torch.tensor([0.1, -0.4, 0.2], dtype=D)
    moved = landmarks(rig, deform(rig, None, torch.zeros(1, NUM_ARKIT, dtype=D), pose), LandmarkSet.IBUG_68)[0]
    rest = landmarks(rig, rig.template[None], LandmarkSet.IBUG_68)[0]
    c = rig.rest_joints[0]
    assert torch.allclose(moved, (rest - c) @ axis_angle_to_matrix(pose.rotations[0, 0]).T + c, atol=1e-12)
    with pytest.raises(KeyError, match="mediapipe478"):
        landmarks(rig, verts, LandmarkSet.MEDIAPIPE_478)


# ------------------------------------------------------------------------------------------ validation
def test_affine_regressor_reproduces_points():
    rig = tiny_rig()
    R = rig.joint_regressor
    assert torch.allclose(R.sum(1), torch.ones(len(JOINTS), dtype=D))
    moved = rig.template * 1.7 + torch.tensor([0.1, 0.2, 0.3], dtype=D)  # affine rows commute with similarities
    assert torch.allclose(R @ moved, rig.rest_joints * 1.7 + torch.tensor([0.1, 0.2, 0.3], dtype=D), atol=1e-12)


@pytest.mark.parametrize("change, words", [
    (lambda r: {"skin_weights": r.skin_weights * 0.9}, "sum to 1"),
    (lambda r: {"template": r.template.clone().fill_(float("nan"))}, "non-finite"),
    (lambda r: {"expression_basis": r.expression_basis[:51]}, "expression_basis has shape"),
    (lambda r: {"expression_basis": r.expression_basis + 1e-3}, "flagged missing"),
    (lambda r: {"faces": r.faces + 100}, "do not exist"),
    (lambda r: {"joint_regressor": r.joint_regressor * 2}, "regressor rows"),
    (lambda r: {"uvs": r.uvs[:, :2]}, "uvs has shape"),
    (lambda r: {"region_names": ("face_skin", "hair")}, "hair"),
])
def test_rig_validation_errors(change, words):
    rig = tiny_rig()
    with pytest.raises((InputError, ValueError)) as info:
        replace(rig, **change(rig))
    assert words in str(info.value)
    if isinstance(info.value, InputError):
        assert "tiny test rig" in str(info.value) and "Fix:" in str(info.value)


def test_deform_shape_errors():
    rig = tiny_rig()
    with pytest.raises(ValueError, match="expression must be"):
        deform(rig, None, torch.zeros(1, 51, dtype=D), RigPose.rest(1, dtype=D))
    with pytest.raises(ValueError, match="identity must be"):
        deform(rig, torch.zeros(1, 7, dtype=D), torch.zeros(1, NUM_ARKIT, dtype=D), RigPose.rest(1, dtype=D))
    with pytest.raises(ValueError, match="translation"):
        RigPose(torch.zeros(2, 6, 3), torch.zeros(3, 3))
