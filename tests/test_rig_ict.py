"""ICT-FaceKit as a HeadRig: the ARKit map against the kit's data, head frame and sides, derived regions, joints
and weights (eyes rigid, the jaw joint reproducing jawOpen, the head turning on the neck), iBUG-68 landmarks,
the kit's own folder layout against the packed copy, and every bad-input error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA  # the ../shared/data locator every real-data test uses

from headforge.errors import InputError
from headforge.geometry.head_frame import measure_head
from headforge.geometry.rotations import rotmat_to_quat
from headforge.representations.rig.arkit import ARKIT_NAMES, ICT_TO_ARKIT, ArkitShape, ict_expression_names
from headforge.representations.rig.deform import RigPose, deform, landmarks, posed_joints
from headforge.representations.rig.head_rig import JOINTS, Joint, LandmarkSet, Region
from headforge.representations.rig.ict_facekit import (
    INDICES_JSON,
    NEUTRAL_OBJ,
    PACKED_NPZ,
    IctLayout,
    detect_layout,
    load_ict_facekit,
)
from headforge.representations.rig.ict_skeleton import EYEBALL_LEFT, SKIN, TEETH, jaw_hinge, sphere_centre

ICT = SHARED_DATA / "ict_facekit"


@pytest.fixture(scope="module")
def ict_dir() -> Path:
    if not (ICT / PACKED_NPZ).is_file():
        pytest.skip(f"ICT-FaceKit packed copy not found at {ICT} (the ../shared/data folder beside the repo)")
    return ICT


@pytest.fixture(scope="module")
def rig(ict_dir):
    return load_ict_facekit(ict_dir)


@pytest.fixture(scope="module")
def npz(ict_dir):
    with np.load(ict_dir / PACKED_NPZ) as z:
        return {k: z[k] for k in z.files}


def row(name: str) -> int:
    return ARKIT_NAMES.index(name)


def test_counts_units_and_frame(rig, ict_dir):
    assert detect_layout(ict_dir) is IctLayout.PACKED
    assert rig.template.shape == (26719, 3) and rig.faces.shape == (548 + 2 * 25836, 3)  # quads split in two
    assert rig.uvs.shape == (rig.faces.shape[0], 3, 2) and rig.identity_basis.shape == (100, 26719, 3)
    assert rig.licence.startswith("MIT") and "packed" in rig.source
    skin = rig.template[SKIN].double()
    m = measure_head(skin)
    assert float(m.centre.abs().max()) < 1e-6  # origin at the head centre of the skin
    assert 0.14 < m.head_width < 0.22  # metres, not centimetres
    nose = skin[skin[:, 2].argmax()]
    assert nose[2] > 0.07 and abs(float(nose[0])) < 1e-3  # the face looks toward +z, nose on the midline


def test_arkit_map_against_the_kit(rig, npz):
    names = [str(n) for n in npz["expression_names"]]
    assert rig.missing_expressions() == ("tongueOut",)
    assert float(rig.expression_basis[row("tongueOut")].abs().max()) == 0.0
    for shape, sources in ICT_TO_ARKIT.items():
        if not sources:
            continue
        want = sum(npz["expression_deltas"][names.index(n)].astype(np.float64) for n in sources) * 0.01  # cm -> m
        assert np.allclose(rig.expression_basis[row(shape)].double().numpy(), want, atol=1e-7), shape
    assert len(ICT_TO_ARKIT[ArkitShape.BROW_INNER_UP]) == 2 and ICT_TO_ARKIT[ArkitShape.JAW_LEFT] == ("jawLeft",)
    with open(ICT / INDICES_JSON) as f:
        assert set(json.load(f)["expressions"]) == set(ict_expression_names())


def test_left_is_the_subjects_left(rig):
    for side, sign in (("Left", 1), ("Right", -1)):
        for base in ("eyeBlink", "mouthSmile", "browDown", "noseSneer"):
            d = rig.expression_basis[row(base + side)].norm(dim=-1)
            moved = rig.template[d > 0.2 * d.max()]
            assert sign * float(moved[:, 0].mean()) > 0.01, base + side
    assert float(rig.rest_joints[JOINTS.index(Joint.LEFT_EYE), 0]) > 0.02


def test_regions(rig):
    counts = {r: int(rig.region_mask(r).sum()) for r in Region}
    assert all(c > 0 for c in counts.values()), counts
    assert sum(counts.values()) == rig.num_vertices
    t = rig.template
    ears = t[rig.region_mask(Region.EARS)]
    assert float(ears[:, 0].abs().min()) > 0.05 and abs(int((ears[:, 0] > 0).sum()) - int((ears[:, 0] < 0).sum())) < 5
    chin = float(t[rig.region_mask(Region.FACE_SKIN), 1].min())
    assert float(t[rig.region_mask(Region.NECK), 1].max()) <= chin + 1e-6
    assert counts[Region.EYES] == 2 * 1570 and counts[Region.TEETH] == 4412
    assert float(t[rig.region_mask(Region.SCALP), 1].max()) > float(t[rig.region_mask(Region.EYES), 1].max()) + 0.05


def test_joints(rig):
    J = {j: rig.rest_joints[JOINTS.index(j)].double() for j in Joint}
    eyeball = rig.template[EYEBALL_LEFT].double()
    r = (eyeball - J[Joint.LEFT_EYE]).norm(dim=-1)
    assert 0.011 < float(r.min()) and float(r.max()) < 0.018  # inside the kit's (slightly elongated) eyeball
    box_centre = 0.5 * (eyeball.min(0).values + eyeball.max(0).values)
    assert float((box_centre - J[Joint.LEFT_EYE]).norm()) < 2e-3
    assert torch.allclose(J[Joint.RIGHT_EYE] * torch.tensor([-1.0, 1, 1], dtype=torch.float64), J[Joint.LEFT_EYE],
                          atol=1e-4)
    teeth = rig.template[TEETH].double()
    assert float(J[Joint.JAW][2]) < float(teeth[:, 2].min()) and float(J[Joint.JAW][1]) > float(teeth[:, 1].max())
    assert float(J[Joint.HEAD][2]) < float(J[Joint.JAW][2]) and float(J[Joint.NECK][1]) < float(J[Joint.HEAD][1])
    assert float(J[Joint.NECK][1]) < float(rig.template[SKIN, 1].min()) + 0.01


def test_weights_eyes_rigid_and_nothing_else_moves(rig):
    W = rig.skin_weights.double()
    assert torch.allclose(W.sum(1), torch.ones(rig.num_vertices, dtype=torch.float64), atol=1e-5)
    pose = RigPose.rest(1)
    pose.rotations[0, JOINTS.index(Joint.LEFT_EYE)] = torch.tensor([0.0, 0.4, 0.0])  # look sideways
    moved = (deform(rig, None, torch.zeros(1, 52), pose)[0] - rig.template).norm(dim=-1) > 1e-6
    assert torch.equal(moved.nonzero().squeeze(1), torch.from_numpy(EYEBALL_LEFT))


def test_jaw_joint_reproduces_jaw_open(rig):
    tpl = rig.template.double().numpy()
    delta = rig.expression_basis[row("jawOpen")].double().numpy()
    _, lower, R, _ = jaw_hinge(tpl, delta)
    q = rotmat_to_quat(torch.tensor(R))
    angle = 2 * torch.atan2(q[1:].norm(), q[0])
    pose = RigPose.rest(1)
    pose.rotations[0, JOINTS.index(Joint.JAW)] = (q[1:] / q[1:].norm() * angle).float()
    assert 15 < float(torch.rad2deg(angle)) < 40 and abs(float(q[1])) > 0.99 * float(q[1:].norm())  # about x
    posed = deform(rig, None, torch.zeros(1, 52), pose)[0].double().numpy()
    err = np.linalg.norm(posed - (tpl + delta), axis=1)
    assert err[lower].max() < 5e-4  # the lower teeth follow the turn within half a millimetre
    upper = np.setdiff1d(TEETH, lower)
    assert np.abs(posed[upper] - tpl[upper]).max() < 1e-7 and len(upper) > 2000
    moving = np.linalg.norm(delta, axis=1) > 2e-3
    assert np.median(err[moving]) < 1.5e-3  # the chin and lips follow too


def test_head_turn_keeps_the_neck_base(rig):
    pose = RigPose.rest(1)
    pose.rotations[0, JOINTS.index(Joint.HEAD)] = torch.tensor([0.0, 0.5, 0.0])
    posed = deform(rig, None, torch.zeros(1, 52), pose)[0]
    base = rig.template[SKIN, 1] < float(rig.template[SKIN, 1].min()) + 0.005
    assert float((posed[SKIN][base] - rig.template[SKIN][base]).norm(dim=-1).max()) < 1e-6
    nose = int(rig.template[SKIN, 2].argmax())
    assert float((posed[nose] - rig.template[nose]).norm()) > 0.03


def test_ibug68_landmarks(rig):
    assert set(rig.landmarks) == {LandmarkSet.IBUG_68, LandmarkSet.MEDIAPIPE_478}
    p = landmarks(rig, rig.template[None], LandmarkSet.IBUG_68)[0]
    with open(ICT / INDICES_JSON) as f:
        assert torch.allclose(p, rig.template[json.load(f)["idx_to_landmark_verts"]])
    assert float(p[36, 0]) < 0 < float(p[45, 0])  # 36-41 the subject's right eye, 42-47 the left
    assert int(p[27:36, 2].argmax()) + 27 == 30  # nose tip is the most forward nose point
    assert int(p[:17, 1].argmin()) == 8  # chin is the lowest contour point
    assert abs(float(p[48, 0] + p[54, 0])) < 2e-3  # mouth corners mirror each other


def test_identity_moves_the_eye_joint_with_the_eyeball(rig):
    ident = torch.zeros(1, 100)
    ident[0, :5] = torch.tensor([2.0, -1.5, 1.0, 2.0, -2.0])
    joints = posed_joints(rig, ident, RigPose.rest(1))[0].double()
    shaped = deform(rig, ident, torch.zeros(1, 52), RigPose.rest(1))[0].double()
    moved = (joints - rig.rest_joints.double()).norm(dim=-1)
    assert float(moved.max()) > 1e-3  # the identity shape moves the joints
    centre = torch.from_numpy(sphere_centre(shaped[EYEBALL_LEFT].numpy()))
    eye = joints[JOINTS.index(Joint.LEFT_EYE)]
    assert float((centre - eye).norm()) < 0.1 * float((eye - rig.rest_joints[JOINTS.index(Joint.LEFT_EYE)]).norm())


# ------------------------------------------------------------------------------------------ kit layout
def write_kit(src: Path, dst: Path, npz: dict, identities: int = 2) -> Path:
    dst.mkdir()
    for name in (NEUTRAL_OBJ, INDICES_JSON):
        (dst / name).symlink_to(src / name)
    neutral = npz["neutral"].astype(np.float64)
    names = [str(n) for n in npz["expression_names"]]
    shapes = [(n, npz["expression_deltas"][names.index(n)]) for n in ict_expression_names()]
    shapes += [(f"identity{k:03d}", npz["identity_deltas"][k]) for k in range(identities)]
    for name, delta in shapes:
        np.savetxt(dst / f"{name}.obj", neutral + delta, fmt="v %.6f %.6f %.6f")
    return dst


def test_kit_layout_matches_packed(rig, ict_dir, npz, tmp_path):
    kit = write_kit(ict_dir, tmp_path / "FaceXModel", npz)
    assert detect_layout(kit) is IctLayout.KIT
    other = load_ict_facekit(kit)
    assert "kit layout" in other.source and other.identity_basis.shape[0] == 2
    assert torch.allclose(other.template, rig.template, atol=1e-6)
    assert torch.allclose(other.expression_basis, rig.expression_basis, atol=1e-6)
    assert torch.allclose(other.identity_basis, rig.identity_basis[:2], atol=1e-6)
    assert torch.allclose(other.skin_weights, rig.skin_weights, atol=1e-4)
    assert torch.equal(other.regions, rig.regions)
    # a missing expression file is named with the fix
    (kit / "mouthClose.obj").unlink()
    with pytest.raises(InputError, match="mouthClose.obj") as info:
        load_ict_facekit(kit)
    assert "FaceXModel" in str(info.value) and "Fix:" in str(info.value)


# ------------------------------------------------------------------------------------------ bad input
def _folder(tmp_path: Path, src: Path, npz_arrays: dict | None) -> Path:
    d = tmp_path / "ict"
    d.mkdir()
    for name in (NEUTRAL_OBJ, INDICES_JSON):
        (d / name).symlink_to(src / name)
    if npz_arrays is not None:
        np.savez(d / PACKED_NPZ, **npz_arrays)
    return d


def test_bad_folders(ict_dir, npz, tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        load_ict_facekit(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=NEUTRAL_OBJ):
        load_ict_facekit(empty)
    bare = _folder(tmp_path, ict_dir, None)
    with pytest.raises(InputError, match="jawOpen.obj"):
        load_ict_facekit(bare)
    shutil.rmtree(bare)
    wrong = _folder(tmp_path, ict_dir, {"neutral": npz["neutral"], "deltas": npz["expression_deltas"][:2]})
    with pytest.raises(InputError, match="lacks the keys") as info:
        load_ict_facekit(wrong)
    assert PACKED_NPZ in str(info.value) and "Fix:" in str(info.value)
    shutil.rmtree(wrong)
    for garbage in (b"not an npz", b"PK\x03\x04 truncated zip"):
        broken = _folder(tmp_path, ict_dir, None)
        (broken / PACKED_NPZ).write_bytes(garbage)
        with pytest.raises(InputError, match="cannot read npz"):
            load_ict_facekit(broken)
        shutil.rmtree(broken)
    small = dict(npz, identity_deltas=npz["identity_deltas"][:3, :100])
    bad = _folder(tmp_path, ict_dir, small)
    with pytest.raises(InputError, match="identity_deltas has shape"):
        load_ict_facekit(bad)


def test_jaw_hinge_refuses_a_jaw_open_that_does_not_open(rig):
    tpl = rig.template.double().numpy()
    with pytest.raises(InputError, match="does not move the lower teeth") as info:
        jaw_hinge(tpl, np.zeros_like(tpl), Path("shapes.npz"))
    assert "shapes.npz" in str(info.value) and "Fix:" in str(info.value)
    tiny_turn = rig.expression_basis[row("jawOpen")].double().numpy() * 0.1  # ~2.5 degrees
    with pytest.raises(InputError, match="turns the lower teeth by only"):
        jaw_hinge(tpl, tiny_turn, Path("shapes.npz"))


def test_wrong_topology(tmp_path, ict_dir):
    d = tmp_path / "tiny"
    d.mkdir()
    (d / NEUTRAL_OBJ).write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n")
    (d / INDICES_JSON).symlink_to(ict_dir / INDICES_JSON)
    (d / "jawOpen.obj").write_text("v 0 0 0\n")
    with pytest.raises(InputError, match="not the kit's 26719"):
        load_ict_facekit(d)
    (d / NEUTRAL_OBJ).write_text("v 0 0 0\nf 1 2 x\n")
    with pytest.raises(InputError, match="line 2"):
        load_ict_facekit(d)
