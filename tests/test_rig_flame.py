"""FLAME from a tiny synthetic file in FLAME's layout (no FLAME data exists in the repository): loading, the joint
mapping, deform against a FLAME-rule slow twin (with pose correctives), the chumpy stand-in, refusal of bad files,
and the fitted ARKit map."""

from __future__ import annotations

import math
import pickle
import sys
import types
from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse
import torch

from headforge.errors import InputError
from headforge.representations.rig.arkit import ARKIT_NAMES, NUM_ARKIT, ArkitShape
from headforge.representations.rig.deform import RigPose, axis_angle_to_matrix, corrective_offsets, deform
from headforge.representations.rig.flame import fit_arkit_map, load_flame, umeyama, with_arkit_map
from headforge.representations.rig.head_rig import JOINTS, HeadRig, LandmarkEmbedding, LandmarkSet, Region

D = torch.float64
V, F = 60, 100
CENTRE = np.array([0.0, 0.02, 0.01])  # the file's origin is not the head centre: the loader must translate


def flame_arrays(eye_swap: bool = False, seed: int = 0) -> dict:
    """A FLAME-layout dict: a head-like ellipsoid, 5 joints, 400 shape and 36 pose directions."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(V, 3))
    v = d / np.linalg.norm(d, axis=1, keepdims=True) * [0.075, 0.1, 0.09] + CENTRE
    eye_x = (-0.03, 0.03) if eye_swap else (0.03, -0.03)  # FLAME joint 3 on +x unless swapped
    for k, x in enumerate(eye_x):  # vertices 0-4: joint 3's eyeball, 5-9: joint 4's
        v[5 * k:5 * k + 5] = CENTRE + [x, 0.03, 0.07] + rng.normal(size=(5, 3)) * 0.004
    w = np.zeros((V, 5))
    y, z = v[:, 1] - CENTRE[1], v[:, 2] - CENTRE[2]
    w[:, 1] = 1.0  # neck joint: the head
    low = y < -0.06
    w[low] = [1, 0, 0, 0, 0]
    jaw = (y < 0) & (z > 0.02) & ~low
    w[jaw] = [0, 0.3, 0.7, 0, 0]
    w[0:5], w[5:10] = [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]
    groups = [np.flatnonzero(low), np.flatnonzero(~low)[10:], np.flatnonzero(jaw), np.arange(5), np.arange(5, 10)]
    jr = np.zeros((5, V))
    for j, g in enumerate(groups):
        jr[j, g] = 1.0 / len(g)
    faces = np.stack([rng.choice(V, 3, replace=False) for _ in range(F)]).astype(np.uint32)
    return {"v_template": v, "f": faces, "shapedirs": rng.normal(size=(V, 3, 400)) * 1e-3,
            "posedirs": rng.normal(size=(V, 3, 36)) * 1e-3, "J_regressor": scipy.sparse.csc_matrix(jr),
            "weights": w, "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64)}


@pytest.fixture
def fake_chumpy(monkeypatch):
    """A class named chumpy.ch.Ch, registered only while a test writes its file."""
    ch_mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch_mod.Ch = Ch
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch_mod)
    return Ch


def write(tmp_path, obj, name="generic_model.pkl", protocol=2):
    p = tmp_path / name
    p.write_bytes(pickle.dumps(obj, protocol=protocol))
    return p


@pytest.fixture
def flame_file(tmp_path):
    return write(tmp_path, flame_arrays())


# ------------------------------------------------------------------------------------------ loading
def test_load_shapes_frame_and_regions(flame_file):
    a = flame_arrays()
    rig = load_flame(flame_file)
    assert rig.num_vertices == V and rig.faces.shape == (F, 3) and rig.uvs.shape == (F, 3, 2)
    assert rig.num_identity == 300 and rig.num_components == 100
    assert rig.pose_correctives.shape == (len(JOINTS) - 1, 9, V, 3)
    assert not rig.expression_present.any() and "FLAME" in rig.licence and "non-commercial" in rig.licence
    shift = (rig.template.double() - torch.from_numpy(a["v_template"])).numpy()
    assert np.allclose(shift, shift[0], atol=1e-6) and np.abs(shift[0]).max() > 1e-3  # a pure translation
    assert torch.allclose(rig.identity_basis[7], torch.tensor(a["shapedirs"][:, :, 7], dtype=torch.float32))
    assert torch.allclose(rig.expression_components[7], torch.tensor(a["shapedirs"][:, :, 307], dtype=torch.float32))
    assert rig.region_mask(Region.EYES)[:10].all() and rig.region_mask(Region.EYES).sum() == 10
    assert rig.region_mask(Region.NECK).sum() == int((a["weights"][:, 0] > 0.5).sum()) > 0


@pytest.mark.parametrize("eye_swap", [False, True])
def test_joint_mapping(tmp_path, eye_swap):
    a = flame_arrays(eye_swap)
    rig = load_flame(write(tmp_path, a))
    jr = a["J_regressor"].toarray()
    shift = rig.template.double()[0] - torch.from_numpy(a["v_template"][0])
    flame_joints = torch.tensor(jr @ a["v_template"]) + shift
    left, right = (4, 3) if eye_swap else (3, 4)
    expect = flame_joints[[0, 1, 1, 2, left, right]]
    assert torch.allclose(rig.rest_joints.double(), expect, atol=1e-6)
    assert rig.rest_joints[JOINTS.index("left_eye"), 0] > 0 > rig.rest_joints[JOINTS.index("right_eye"), 0]
    w = rig.skin_weights.double()
    assert (w[:, JOINTS.index("neck")] == 0).all()
    assert torch.allclose(w[:, JOINTS.index("head")], torch.tensor(a["weights"][:, 1]))
    assert torch.allclose(w[:, JOINTS.index("left_eye")], torch.tensor(a["weights"][:, left]))
    pd = torch.tensor(a["posedirs"]).permute(2, 0, 1).reshape(4, 9, V, 3)
    assert (rig.pose_correctives[0] == 0).all()  # neck
    assert torch.allclose(rig.pose_correctives[JOINTS.index("jaw") - 1].double(), pd[1], atol=1e-9)
    assert torch.allclose(rig.pose_correctives[JOINTS.index("left_eye") - 1].double(), pd[left - 1], atol=1e-9)


def as_double(rig: HeadRig) -> HeadRig:
    return replace(rig, **{k: getattr(rig, k).double() for k in (
        "template", "uvs", "expression_basis", "joint_regressor", "skin_weights", "identity_basis",
        "expression_components", "pose_correctives")})


def test_rest_is_template_and_jaw_moves_only_jaw_vertices(flame_file):
    rig = as_double(load_flame(flame_file))
    rest = deform(rig, None, torch.zeros(1, NUM_ARKIT, dtype=D), RigPose.rest(1, dtype=D))
    assert torch.allclose(rest[0], rig.template, atol=1e-15)
    pose = RigPose.rest(1, dtype=D)
    pose.rotations[0, JOINTS.index("jaw")] = torch.tensor([0.3, 0.0, 0.0], dtype=D)
    no_corr = replace(rig, pose_correctives=None)
    moved = (deform(no_corr, None, torch.zeros(1, NUM_ARKIT, dtype=D), pose)[0] - rig.template).norm(dim=1)
    jaw_w = rig.skin_weights[:, JOINTS.index("jaw")] > 0
    assert (moved[jaw_w] > 1e-5).all() and (moved[~jaw_w] < 1e-15).all()
    # with the correctives, the other vertices move by exactly the jaw's corrective offsets
    with_corr = deform(rig, None, torch.zeros(1, NUM_ARKIT, dtype=D), pose)[0]
    R = axis_angle_to_matrix(pose.rotations[0, JOINTS.index("jaw")]) - torch.eye(3, dtype=D)
    offs = torch.einsum("k,kvc->vc", R.flatten(), rig.pose_correctives[JOINTS.index("jaw") - 1])
    assert torch.allclose(with_corr[~jaw_w], (rig.template + offs)[~jaw_w], atol=1e-14)


def flame_rule(a: dict, ident: np.ndarray, comps: np.ndarray, pose5: np.ndarray, t: np.ndarray) -> np.ndarray:
    """FLAME's forward rule on its own 5-joint tree, per vertex in python loops (float64). Joints come from the
    identity shape only (headforge's rule; FLAME also adds the expression before regressing joints)."""
    def rot(r):
        return axis_angle_to_matrix(torch.tensor(r)).numpy()

    dirs = a["shapedirs"]
    shaped = a["v_template"] + dirs[:, :, :300] @ ident
    joints = a["J_regressor"].toarray() @ shaped
    feat = np.concatenate([(rot(pose5[j]) - np.eye(3)).ravel() for j in range(1, 5)])  # [36]
    blended = shaped + dirs[:, :, 300:] @ comps + a["posedirs"] @ feat
    parents = (-1, 0, 1, 1, 1)
    G = []
    for j in range(5):
        local = np.eye(4)
        local[:3, :3] = rot(pose5[j])
        local[:3, 3] = joints[j] - (joints[parents[j]] if j else -t)
        G.append(local if j == 0 else G[parents[j]] @ local)
    out = np.zeros_like(blended)
    for v in range(len(blended)):
        for j in range(5):
            p = G[j][:3, :3] @ (blended[v] - joints[j]) + G[j][:3, 3]
            out[v] += a["weights"][v, j] * p
    return out


def test_deform_matches_flame_rule(flame_file):
    a = flame_arrays()
    rig = as_double(load_flame(flame_file))
    rng = np.random.default_rng(5)
    ident, comps = rng.normal(size=300), rng.normal(size=100)
    pose5, t = rng.normal(size=(5, 3)) * 0.3, rng.normal(size=3) * 0.01
    expect = flame_rule(a, ident, comps, pose5, t)
    rot = torch.zeros(1, len(JOINTS), 3, dtype=D)
    rot[0, [0, 2, 3, 4, 5]] = torch.tensor(pose5)  # root, head, jaw, left_eye (joint 3), right_eye
    got = deform(rig, torch.tensor(ident[None]), torch.zeros(1, NUM_ARKIT, dtype=D),
                 RigPose(rot, torch.tensor(t[None])), components=torch.tensor(comps[None]))[0]
    shift = rig.template[0] - torch.from_numpy(a["v_template"][0])
    assert torch.allclose(got, torch.tensor(expect) + shift, atol=1e-12)


def test_corrective_offsets_loop_and_gradcheck(flame_file):
    rig = as_double(load_flame(flame_file))
    rng = torch.Generator().manual_seed(2)
    r = torch.randn(2, len(JOINTS), 3, generator=rng, dtype=D) * 0.5
    C = rig.pose_correctives
    loop = torch.zeros(2, V, 3, dtype=D)
    for b in range(2):
        for j in range(1, len(JOINTS)):
            M = axis_angle_to_matrix(r[b, j]) - torch.eye(3, dtype=D)
            for k in range(9):
                loop[b] += M[k // 3, k % 3] * C[j - 1, k]
    assert torch.allclose(corrective_offsets(C, r), loop, atol=1e-15)
    small = replace(rig, identity_basis=rig.identity_basis[:2], expression_components=rig.expression_components[:3])
    rot = r.clone().requires_grad_(True)
    comps = torch.randn(2, 3, generator=rng, dtype=D, requires_grad=True)
    trans = torch.zeros(2, 3, dtype=D, requires_grad=True)

    def f(rr, cc, tt):
        return deform(small, None, torch.zeros(2, NUM_ARKIT, dtype=D), RigPose(rr, tt), components=cc)

    assert torch.autograd.gradcheck(f, (rot, comps, trans), eps=1e-6, atol=1e-7)
    zero = torch.zeros(2, len(JOINTS), 3, dtype=D, requires_grad=True)  # the rest pose, where fits start
    assert torch.autograd.gradcheck(f, (zero, comps, trans), eps=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------ chumpy
@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_arrays_are_read(tmp_path, fake_chumpy, protocol):
    a = flame_arrays()
    chumpy_dict = dict(a, shapedirs=fake_chumpy(a["shapedirs"]), v_template=fake_chumpy(a["v_template"]))
    path = write(tmp_path, chumpy_dict, protocol=protocol)
    sys.modules.pop("chumpy.ch"), sys.modules.pop("chumpy")  # reading must not need chumpy
    rig = load_flame(path)
    plain = load_flame(write(tmp_path, a, name="plain.pkl"))
    assert torch.equal(rig.template, plain.template) and torch.equal(rig.identity_basis, plain.identity_basis)


def test_chumpy_without_array_is_refused(tmp_path, fake_chumpy):
    a = flame_arrays()
    bad = fake_chumpy(None)
    bad.a, bad.b = a["shapedirs"], a["shapedirs"]  # an op of two terms: no single array
    with pytest.raises(InputError, match="chumpy") as e:
        load_flame(write(tmp_path, dict(a, shapedirs=bad)))
    assert "generic_model.pkl" in str(e.value)


# ------------------------------------------------------------------------------------------ refusals
class _Evil:
    def __reduce__(self):
        import os
        return os.system, ("touch PWNED_MARKER",)


def test_forbidden_global_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, dict(flame_arrays(), weights=_Evil()))
    with pytest.raises(InputError, match="system") as e:
        load_flame(path)
    assert not (tmp_path / "PWNED_MARKER").exists()
    assert "generic_model.pkl" in str(e.value) and "flame.is.tue.mpg.de" in str(e.value)


@pytest.mark.parametrize(("change", "words"), [
    (lambda a: a.pop("posedirs"), "lacks the keys"),
    (lambda a: a.update(posedirs=np.zeros((V, 3, 35))), "'posedirs' has shape"),
    (lambda a: a.update(J_regressor=np.ones((5, V))), "sum to 1"),
    (lambda a: a.update(shapedirs=np.zeros((V, 3, 300))), "identity"),
    (lambda a: a.update(kintree_table=np.array([[9, 0, 1, 2, 1], [0, 1, 2, 3, 4]])), "kintree"),
    (lambda a: a.update(v_template=a["v_template"] * np.nan), "non-finite"),
    (lambda a: a.update(weights=a["weights"].astype(str)), "not numbers"),
    (lambda a: a.update(v_template=a["v_template"] * [10, 0.1, 1]), "upright head"),
])
def test_wrong_layout_is_refused(tmp_path, change, words):
    a = flame_arrays()
    change(a)
    with pytest.raises(InputError, match=words) as e:
        load_flame(write(tmp_path, a))
    assert "generic_model.pkl" in str(e.value)


@pytest.mark.parametrize("payload", [np.random.default_rng(1).bytes(4000), pickle.dumps([1, 2, 3]), b""])
def test_not_a_flame_pickle(tmp_path, payload):
    p = tmp_path / "flame2023.pkl"
    p.write_bytes(payload)
    with pytest.raises(InputError) as e:
        load_flame(p)
    assert "flame2023.pkl" in str(e.value)


def test_new_rig_fields_are_validated(flame_file):
    rig = load_flame(flame_file)
    with pytest.raises(InputError, match="pose_correctives has shape"):
        replace(rig, pose_correctives=rig.pose_correctives[1:])
    with pytest.raises(InputError, match="expression_components"):
        replace(rig, expression_components=rig.expression_components[:, :5])


# ------------------------------------------------------------------------------------------ ARKit map
def test_arkit_map_recovers_a_known_map_through_a_similarity(flame_file):
    rig = as_double(load_flame(flame_file))
    g = torch.Generator().manual_seed(4)
    true_map = torch.randn(NUM_ARKIT, 100, generator=g, dtype=D)
    tongue = ARKIT_NAMES.index(ArkitShape.TONGUE_OUT)
    true_map[tongue] = 0
    present = torch.ones(NUM_ARKIT, dtype=torch.bool)
    present[tongue] = False
    deltas = torch.einsum("ae,evc->avc", true_map, rig.expression_components)
    s, ang = 1.3, 0.4  # the reference lives in another similarity frame, found again from 68 landmarks
    R = axis_angle_to_matrix(torch.tensor([0.0, ang, 0.1], dtype=D))
    t = torch.tensor([0.01, -0.02, 0.03], dtype=D)
    bary = torch.rand(68, 3, generator=g, dtype=D) + 0.1
    emb = LandmarkEmbedding(torch.randint(0, F, (68,), generator=g), bary / bary.sum(1, keepdim=True))
    rig = replace(rig, landmarks={LandmarkSet.IBUG_68: emb})
    reference = replace(rig, template=s * rig.template @ R.T + t, expression_basis=s * deltas @ R.T,
                        expression_present=present, source="reference")
    fit = fit_arkit_map(rig, reference, ridge=1e-12)
    assert torch.equal(fit.matched, ~rig.region_mask(Region.EYES)) and torch.equal(fit.present, present)
    assert torch.allclose(fit.arkit_map, true_map, atol=1e-5)
    assert float(fit.residual_mm.max()) < 1e-6 < float(fit.target_mm[present].min())
    mapped = with_arkit_map(rig, fit)
    assert torch.allclose(mapped.expression_basis, deltas, atol=1e-8)
    assert mapped.missing_expressions() == ("tongueOut",)
    # a displacement outside the components' span leaves a residual that the fit reports
    off = replace(reference, expression_basis=reference.expression_basis + 0.002 * (torch.rand(
        NUM_ARKIT, V, 3, generator=g, dtype=D) - 0.5) * present[:, None, None])
    assert float(fit_arkit_map(rig, off).residual_mm[present].min()) > 0.01


def test_umeyama_recovers_similarity():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(20, 3, generator=g, dtype=D)
    R = axis_angle_to_matrix(torch.tensor([0.3, -1.0, 2.0], dtype=D))
    s, R2, t = umeyama(src, 0.7 * src @ R.T + torch.tensor([1.0, 2.0, 3.0], dtype=D))
    assert math.isclose(float(s), 0.7, rel_tol=1e-12) and torch.allclose(R2, R, atol=1e-12)
    assert torch.allclose(t, torch.tensor([1.0, 2.0, 3.0], dtype=D), atol=1e-12)


def test_arkit_map_refuses_too_few_correspondences(flame_file):
    rig = load_flame(flame_file)
    far = replace(rig, template=rig.template + torch.tensor([0.0, 0.0, 1.0]), source="a rig 1 m away")
    with pytest.raises(InputError, match="too few"):
        fit_arkit_map(rig, far)


def test_uvs_from_the_file_or_a_uv_file(tmp_path):
    a = flame_arrays()
    rng = np.random.default_rng(3)
    vt, ft = rng.random((80, 2)), rng.integers(0, 80, (F, 3))
    plain = write(tmp_path, a)
    assert (load_flame(plain).uvs == 0).all()  # no UVs anywhere: every corner (0, 0)
    np.savez(tmp_path / "tex.npz", vt=vt, ft=ft)
    expect = torch.tensor(vt[ft], dtype=torch.float32)
    assert torch.equal(load_flame(plain, uv_path=tmp_path / "tex.npz").uvs, expect)
    assert torch.equal(load_flame(write(tmp_path, dict(a, vt=vt, ft=ft), name="with_uv.pkl")).uvs, expect)
    np.savez(tmp_path / "bad.npz", vt=vt, ft=ft[:5])
    with pytest.raises(InputError, match="UVs do not fit") as e:
        load_flame(plain, uv_path=tmp_path / "bad.npz")
    assert "bad.npz" in str(e.value)


def test_unreadable_sparse_regressor_is_refused(tmp_path):
    a = flame_arrays()
    jr = a["J_regressor"]
    jr.indices = jr.indices + 10 * V  # rows that do not exist
    with pytest.raises(InputError, match="sparse"):
        load_flame(write(tmp_path, a))


def test_deform_components_errors(flame_file):
    rig = load_flame(flame_file)
    z, pose = torch.zeros(1, NUM_ARKIT), RigPose.rest(1)
    with pytest.raises(ValueError, match="components must be"):
        deform(rig, None, z, pose, components=torch.zeros(1, 7))
    with pytest.raises(ValueError, match="no expression_components"):
        deform(replace(rig, expression_components=None), None, z, pose, components=torch.zeros(1, 100))
