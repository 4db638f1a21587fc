"""The rigged GLB of a fitted rig or avatar (stages/rig_export.py): the file read back and evaluated by the float64
glTF twin (rig_export_eval.py) against the rig's own ``deform``, its animations against the clips, its structure
(node names, ARKit targets, sparse accessors), the Khronos validator, and its refusals."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from export_fixtures import builtin_rig, small_export_head
from gltf_validator import extension_semantic_errors, require_validator, validate_glb, with_renamed_semantics

from headforge.errors import InputError
from headforge.io.gaussian_splatting import extension_attribute_names
from headforge.io.glb import GlbFile, read_glb
from headforge.representations.bound_gaussians import Layer
from headforge.representations.rig.arkit import ARKIT_NAMES, NUM_ARKIT
from headforge.representations.rig.clips import Clip, builtin_clip_names, read_clip
from headforge.representations.rig.deform import RigPose, axis_angle_to_matrix, deform
from headforge.representations.rig.head_rig import JOINT_PARENTS, JOINTS
from headforge.stages.avatar import Avatar, pose_avatar
from headforge.stages.rig_export import ExportedRig, ExportHead, HairExport, RigGlbConfig, build_rigged_glb, export_rig
from headforge.stages.rig_export_eval import (
    GlbPose,
    animation_key,
    animation_times,
    evaluate_glb,
    quat_xyzw_to_matrix,
)
from headforge.stages.rig_export_parts import (
    QUANT_STEP,
    axis_angle_to_quat_xyzw,
    continuous_quats,
    quantize_delta,
    sparse_delta,
    top_influences,
)
from headforge.validation import OptionError

F32_TOL = 2e-6  # metres: float32 storage of positions ~0.2 m and deltas, composed in float64
ICT = SHARED_DATA / "ict_facekit"


@functools.cache
def _clips() -> tuple[Clip, ...]:
    return tuple(read_clip(f"builtin:{n}") for n in builtin_clip_names())


@functools.cache
def _exported(gaussians: bool = False, offsets: bool = True, max_influences: int = 4) -> ExportedRig:
    head = small_export_head(gaussians=gaussians, offsets=offsets)
    return export_rig(head, _clips(), RigGlbConfig(max_influences=max_influences))


def _random_state(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ARKit weights [52] in [0, 1) and joint rotations [J, 3] (root included, up to ~0.3 rad)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(NUM_ARKIT, generator=g, dtype=torch.float64), 0.3 * torch.randn(len(JOINTS), 3, generator=g,
                                                                                   dtype=torch.float64)


def _glb_pose(doc: dict, weights: np.ndarray, rotations: np.ndarray) -> GlbPose:
    morphed = {n["name"]: weights for n in doc["nodes"] if "mesh" in n and doc["meshes"][n["mesh"]].get("weights")}
    return GlbPose({str(j): axis_angle_to_quat_xyzw(rotations[i]) for i, j in enumerate(JOINTS)}, None, morphed)


def _rig64(rig):
    parts = ("template", "expression_basis", "joint_regressor", "skin_weights", "identity_basis")
    return dataclasses.replace(rig, **{k: getattr(rig, k).double() for k in parts if getattr(rig, k) is not None})


def _deform(head: ExportHead, weights: torch.Tensor, rotations: torch.Tensor) -> np.ndarray:
    """The rig's own maths (``deform`` with the fit's identity and offsets) on a float64 copy of the rig [V, 3]."""
    rig, p = _rig64(head.rig), head.params
    d = torch.float64
    ident = p.identity.to(d)[None] if rig.num_identity else None
    pose = RigPose(rotations.to(d)[None], torch.zeros(1, 3, dtype=d))
    return deform(rig, ident, weights.to(d)[None], pose, offsets=p.offsets).double()[0].numpy()


def _max_error(ex: ExportedRig, glb: GlbFile, expected: np.ndarray, pose: GlbPose) -> float:
    posed = evaluate_glb(glb, pose)
    err = 0.0
    for part in ex.parts:
        for prim in posed[part.name]:
            err = max(err, float(np.abs(prim - expected[part.source]).max()))
    return err


# ------------------------------------------------------------------------------------------ the twin
@pytest.mark.parametrize("seed", [0, 1])
def test_glb_skinning_and_morphs_match_deform(seed):
    head = small_export_head(offsets=True)
    ex = _exported()
    glb = read_glb(ex.glb)
    w, r = _random_state(seed)
    expected = _deform(head, w, r)
    assert _max_error(ex, glb, expected, _glb_pose(glb.document, w.numpy(), r.numpy())) < F32_TOL
    rest = _deform(head, torch.zeros(NUM_ARKIT, dtype=torch.float64), torch.zeros(len(JOINTS), 3, dtype=torch.float64))
    np.testing.assert_allclose(rest, ex.neutral, atol=1e-7)  # the exported neutral is rig_vertices at rest
    assert _max_error(ex, glb, rest, GlbPose()) < F32_TOL  # the file's own rest state


def test_negative_controls_wrong_joint_order_or_inverse_bind():
    head = small_export_head(offsets=True)
    ex = _exported()
    glb = read_glb(ex.glb)
    w, r = _random_state(3)
    expected = _deform(head, w, r)
    pose = _glb_pose(glb.document, w.numpy(), r.numpy())
    doc = dict(glb.document, skins=[dict(s) for s in glb.document["skins"]])
    joints = list(doc["skins"][0]["joints"])
    joints[2], joints[3] = joints[3], joints[2]  # head <-> jaw
    swapped = dict(doc, skins=[dict(doc["skins"][0], joints=joints)])
    assert _max_error(ex, GlbFile(swapped, glb.binary), expected, pose) > 1e-3
    nodes = [dict(n) for n in glb.document["nodes"]]
    for n in nodes:  # rest joints moved by 1 cm: the inverse bind matrices no longer match the joints
        if n.get("name") == "jaw":
            n["translation"] = [t + 0.01 for t in n["translation"]]
    assert _max_error(ex, GlbFile(dict(doc, nodes=nodes), glb.binary), expected, pose) > 1e-3


def _mixed_rig_head(seed: int = 0) -> ExportHead:
    """The small head on a rig whose skin weights touch all 6 joints (so top-4 truncation matters)."""
    head = small_export_head(offsets=True)
    rig = head.rig
    g = torch.Generator().manual_seed(seed)
    noise = torch.softmax(2 * torch.randn(rig.num_vertices, len(JOINTS), generator=g), 1)
    weights = 0.8 * rig.skin_weights + 0.2 * noise.to(rig.skin_weights)
    return dataclasses.replace(head, rig=dataclasses.replace(rig, skin_weights=weights / weights.sum(1, keepdim=True)))


def test_top4_truncation_error_is_bounded_and_all_influences_are_exact():
    head = _mixed_rig_head()
    w, r = _random_state(4)
    expected = _deform(head, w, r)
    errors = {}
    for k in (4, 6):
        ex = export_rig(head, (), RigGlbConfig(max_influences=k))
        glb = read_glb(ex.glb)
        assert ("JOINTS_1" in glb.document["meshes"][0]["primitives"][0]["attributes"]) == (k > 4)
        errors[k] = _max_error(ex, glb, expected, _glb_pose(glb.document, w.numpy(), r.numpy()))
    assert errors[6] < F32_TOL  # every influence kept: exact to float32
    # top-4 of 6 (the two smallest weights dropped, the rest renormalised) under a 0.3 rad pose on every joint:
    # measured 4.5 mm on this rig (1 influence: 31 mm, 5: 1.9 mm, 6: 0.1 um)
    assert F32_TOL * 100 < errors[4] < 1e-2, errors


def test_builtin_and_skins_with_up_to_4_influences_lose_nothing():
    rig = builtin_rig()
    assert int((rig.skin_weights > 0).sum(1).max()) <= 4  # so the default export above is exact


def test_influence_truncation_sparse_deltas_and_quaternions_by_hand():
    w = np.array([[0.1, 0.5, 0.0, 0.2, 0.15, 0.05], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    joints, weights = top_influences(w, 2)
    assert joints.dtype == np.uint8 and joints.tolist() == [[1, 3, 0, 0], [2, 0, 0, 0]]  # unused slots -> joint 0
    np.testing.assert_allclose(weights[0], [0.5 / 0.7, 0.2 / 0.7, 0, 0], rtol=1e-6)
    assert weights[1].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert np.all(weights.astype(np.float32).sum(1, dtype=np.float32) == np.float32(1))
    joints6, weights6 = top_influences(w, 6)
    assert joints6.shape == (2, 8) and np.allclose(weights6[0, :6], np.sort(w[0])[::-1])
    idx, val = sparse_delta(np.array([[0, 0, 0], [0, 2e-7, 0], [0, 0, 5e-8]]), 1e-7)
    assert idx.tolist() == [1] and val.dtype == np.float32
    idx, val = sparse_delta(np.zeros((4, 3)), 1e-7)
    assert idx.tolist() == [0] and not val.any()  # nothing moves: one zero element, a valid sparse accessor
    r = np.array([[0.0, 0.0, 3.0], [0.0, 0.0, -3.0], [1e-12, 0.0, 0.0]])
    q = axis_angle_to_quat_xyzw(r)
    np.testing.assert_allclose(quat_xyzw_to_matrix(q), axis_angle_to_matrix(torch.tensor(r)).numpy(), atol=1e-12)
    c = continuous_quats(q[:2])
    assert float(c[0] @ c[1]) > 0 and np.allclose(quat_xyzw_to_matrix(c), quat_xyzw_to_matrix(q[:2]))


def test_export_is_deterministic():
    head = small_export_head(gaussians=True, offsets=True)
    clips = _clips()[:1]
    assert build_rigged_glb(head, clips) == build_rigged_glb(head, clips)


# ------------------------------------------------------------------------------------------ animations
def test_animations_match_the_clips_frame_by_frame():
    head = small_export_head(offsets=True)
    ex = _exported()
    glb = read_glb(ex.glb)
    doc = glb.document
    names = {n["name"]: i for i, n in enumerate(doc["nodes"])}
    clips = _clips()
    assert [a["name"] for a in doc["animations"]] == [c.name for c in clips]
    for a, clip in enumerate(clips):
        anim = doc["animations"][a]
        for times in animation_times(glb, a):
            np.testing.assert_allclose(times, np.arange(clip.num_frames) / clip.fps, rtol=1e-6)
        targets = {(doc["nodes"][c["target"]["node"]]["name"], c["target"]["path"]) for c in anim["channels"]}
        turned = {str(j) for i, j in enumerate(JOINTS) if float(clip.rotations[:, i].abs().max()) > 0}
        assert targets == {("head_mesh", "weights")} | {(j, "rotation") for j in turned}
        assert all(s["interpolation"] == "LINEAR" for s in anim["samplers"])
        for key in range(0, clip.num_frames, max(1, clip.num_frames // 5)):
            pose = animation_key(glb, a, key)
            np.testing.assert_allclose(pose.weights["head_mesh"], clip.weights[key].numpy(), atol=1e-7)
            for j in turned:
                R = quat_xyzw_to_matrix(pose.rotations[j])
                want = axis_angle_to_matrix(clip.rotations[key, JOINTS.index(j)]).numpy()
                np.testing.assert_allclose(R, want, atol=1e-6)
        key = clip.num_frames // 2  # one whole frame through the twin
        expected = _deform(head, clip.weights[key], clip.rotations[key])
        assert _max_error(ex, glb, expected, animation_key(glb, a, key)) < F32_TOL
    assert "head_mesh" in names


# ------------------------------------------------------------------------------------------ structure
def test_nodes_targets_and_sparse_accessors():
    ex = _exported(gaussians=True)
    doc = read_glb(ex.glb).document
    nodes = doc["nodes"]
    by_name = {n["name"]: n for n in nodes}
    for j, parent in zip(JOINTS, JOINT_PARENTS, strict=True):
        if parent >= 0:
            assert by_name[str(j)] in [nodes[c] for c in by_name[str(JOINTS[parent])]["children"]]
    child = lambda parent, name: by_name[name] in [nodes[c] for c in by_name[parent].get("children", [])]  # noqa: E731
    assert child("left_eye", "left_eye_mesh") and child("right_eye", "right_eye_mesh")
    assert child("head", "hair_splats") and child("neck", "clothing_splats")
    scene = [nodes[i]["name"] for i in doc["scenes"][doc["scene"]]["nodes"]]
    assert scene == ["root", "head_mesh"] and "skin" in by_name["head_mesh"]
    skin = doc["skins"][by_name["head_mesh"]["skin"]]
    assert [nodes[i]["name"] for i in skin["joints"]] == [str(j) for j in JOINTS]
    for mesh in doc["meshes"]:
        if "weights" not in mesh:
            continue
        assert mesh["extras"]["targetNames"] == list(ARKIT_NAMES) and mesh["weights"] == [0.0] * NUM_ARKIT
        for prim in mesh["primitives"]:
            assert len(prim["targets"]) == NUM_ARKIT
            for t in prim["targets"]:
                acc = doc["accessors"][t["POSITION"]]
                assert "sparse" in acc and "bufferView" not in acc and acc["sparse"]["count"] >= 1
    head_mesh = doc["meshes"][by_name["head_mesh"]["mesh"]]
    material = doc["materials"][head_mesh["primitives"][0]["material"]]
    assert material["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    assert material["pbrMetallicRoughness"]["roughnessFactor"] == pytest.approx(0.6)
    assert "baseColorTexture" in material["pbrMetallicRoughness"]


def test_sparse_targets_are_at_least_5x_smaller_than_dense():
    head = small_export_head(offsets=True)
    sparse = build_rigged_glb(head, ())
    dense = build_rigged_glb(head, (), RigGlbConfig(sparse_targets=False))
    assert len(dense) >= 5 * len(sparse), (len(dense), len(sparse))
    a, b = read_glb(sparse), read_glb(dense)
    ta, tb = a.document["meshes"][0]["primitives"][0]["targets"], b.document["meshes"][0]["primitives"][0]["targets"]
    for x, y in zip(ta, tb, strict=True):  # the same deltas, up to the epsilon the sparse ones drop
        np.testing.assert_allclose(a.accessor(x["POSITION"]), b.accessor(y["POSITION"]), atol=1e-7)


def _target_bytes(glb: bytes) -> int:
    """Bytes of the buffer views the morph targets' accessors use (sparse indices + values, or dense data)."""
    doc = read_glb(glb).document
    used = set()
    for mesh in doc["meshes"]:
        for prim in mesh["primitives"]:
            for acc in (doc["accessors"][i] for t in prim.get("targets", []) for i in t.values()):
                used |= {acc["bufferView"]} if "bufferView" in acc else set()
                used |= {acc["sparse"][k]["bufferView"] for k in ("indices", "values")} if "sparse" in acc else set()
    return sum(doc["bufferViews"][i]["byteLength"] for i in used)


def test_quantize_delta_by_hand():
    step = QUANT_STEP
    delta = np.array([[0.0, 0.0, 0.0], [0.4 * step, -0.45 * step, 0.0], [0.6 * step, -2.6 * step, 1.0],
                      [0.0, -1.0, 3.2e-3]])
    idx, codes = quantize_delta(delta, 1e-7)
    assert idx.tolist() == [2, 3] and codes.dtype == np.int16  # row 1 rounds to zero: dropped
    assert codes.tolist() == [[1, -3, 32767], [0, -32767, round(3.2e-3 * 32767)]]  # to nearest, not truncated
    assert np.abs(codes / 32767.0 - delta[idx]).max() <= step / 2
    assert quantize_delta(np.array([[0.0, 1.001, 0.0]]), 1e-7) is None  # beyond +-1: normalized SHORT cannot
    assert quantize_delta(np.array([[np.nan, 0.0, 0.0]]), 1e-7) is None
    idx, codes = quantize_delta(np.full((4, 3), 0.3 * step), 1e-7)
    assert idx.tolist() == [0] and not codes.any()  # nothing survives: one zero element


@pytest.mark.parametrize("normal_targets", [False, True])
def test_quantized_targets_validate_match_deform_and_are_smaller(tmp_path, normal_targets):
    head = small_export_head(offsets=True)
    config = RigGlbConfig(quantize_targets=True, normal_targets=normal_targets)
    ex = export_rig(head, _clips()[:1], config)
    glb = read_glb(ex.glb)
    doc = glb.document
    assert "KHR_mesh_quantization" in doc["extensionsUsed"] and "KHR_mesh_quantization" in doc["extensionsRequired"]
    kinds = set()
    for t in doc["meshes"][0]["primitives"][0]["targets"]:
        for semantic, i in t.items():
            acc = doc["accessors"][i]
            assert "sparse" in acc and ("min" in acc) == (semantic == "POSITION")
            if acc["componentType"] == 5126:  # a NORMAL delta beyond +-1 (eyelids closing, the jaw) stays float
                assert semantic == "NORMAL" and np.abs(glb.accessor(i)).max() > 1, acc["name"]
            else:
                assert acc["componentType"] == 5122 and acc["normalized"], acc["name"]
            kinds.add((semantic, acc["componentType"]))
    assert ("POSITION", 5122) in kinds and (("NORMAL", 5122) in kinds) == normal_targets
    for seed in (0, 1):
        w, r = _random_state(seed)
        # each target errs by at most half a step per component (rounding; dropped entries round to 0)
        tol = F32_TOL + 0.5 * QUANT_STEP * float(w.abs().sum())
        err = _max_error(ex, glb, _deform(head, w, r), _glb_pose(doc, w.numpy(), r.numpy()))
        assert F32_TOL < err < tol, (err, tol)  # lossy beyond float32, within the bound
    float_glb = export_rig(head, _clips()[:1], RigGlbConfig(normal_targets=normal_targets)).glb
    assert _target_bytes(ex.glb) < _target_bytes(float_glb)
    assert "extensionsRequired" not in read_glb(float_glb).document  # the default file needs no extension
    require_validator()
    path = tmp_path / "quantized.glb"
    path.write_bytes(ex.glb)
    report = validate_glb(path)
    assert report.num_errors == 0 and report.num_warnings == 0, report.summary()


def test_quantized_dense_targets_and_refusal():
    head = small_export_head(offsets=True)
    sparse = read_glb(build_rigged_glb(head, (), RigGlbConfig(quantize_targets=True)))
    dense = read_glb(build_rigged_glb(head, (), RigGlbConfig(quantize_targets=True, sparse_targets=False)))
    ts, td = (g.document["meshes"][0]["primitives"][0]["targets"] for g in (sparse, dense))
    for x, y in zip(ts, td, strict=True):  # the same codes, stored sparse or in full (stride 8)
        np.testing.assert_array_equal(sparse.accessor(x["POSITION"]), dense.accessor(y["POSITION"]))
    rig = head.rig
    basis = rig.expression_basis.clone()
    basis[ARKIT_NAMES.index("jawOpen"), 7, 1] = -1.5  # a 1.5 m move: no head does that
    wild = dataclasses.replace(head, rig=dataclasses.replace(rig, expression_basis=basis))
    with pytest.raises(InputError, match="jawOpen moves a vertex by 1.5 m"):
        build_rigged_glb(wild, (), RigGlbConfig(quantize_targets=True))
    assert build_rigged_glb(wild, ())  # float targets hold it


def _normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:  # area-weighted unit normals, written out again
    acc = np.zeros_like(v)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    for k in range(3):
        np.add.at(acc, faces[:, k], n)
    return acc / np.linalg.norm(acc, axis=1, keepdims=True)


def test_normal_targets_give_each_shapes_normals(tmp_path):
    head = small_export_head(offsets=True)
    plain = read_glb(_exported().glb)
    assert all(set(t) == {"POSITION"} for t in plain.document["meshes"][0]["primitives"][0]["targets"])
    ex = export_rig(head, _clips()[:1], RigGlbConfig(normal_targets=True))
    glb = read_glb(ex.glb)
    prim = glb.document["meshes"][0]["primitives"][0]
    part = ex.parts[0]
    assert part.name == "head_mesh"
    faces = head.rig.faces.numpy()
    base = glb.accessor(prim["attributes"]["NORMAL"]).astype(np.float64)
    np.testing.assert_allclose(base, _normals(ex.neutral, faces)[part.source], atol=1e-6)
    basis = head.rig.expression_basis.double().numpy()
    for name in ("jawOpen", "mouthSmileLeft", "eyeBlinkRight"):
        k = ARKIT_NAMES.index(name)
        got = base + glb.accessor(prim["targets"][k]["NORMAL"]).astype(np.float64)
        got /= np.linalg.norm(got, axis=1, keepdims=True)
        want = _normals(ex.neutral + basis[k], faces)[part.source]
        assert np.abs(got - want).max() < 2 * RigGlbConfig().normal_epsilon
        assert np.abs(base - want).max() > 0.05  # the shape really turns normals
    require_validator()
    path = tmp_path / "normals.glb"
    path.write_bytes(ex.glb)
    report = validate_glb(path)
    assert report.num_errors == 0 and report.num_warnings == 0, report.summary()


def test_hair_and_clothing_splats_sit_on_the_neutral_and_follow_their_joints():
    head = small_export_head(gaussians=True, offsets=True)
    ex = _exported(gaussians=True)
    glb = read_glb(ex.glb)
    avatar = Avatar(head.rig, "builtin", head.params, head.texture, head.gaussians, 0)
    for layer, node, joint in ((Layer.HAIR, "hair_splats", "head"), (Layer.CLOTHING, "clothing_splats", "neck")):
        want = pose_avatar(avatar, world=False, layers=(layer,)).means.double().numpy()
        got = evaluate_glb(glb)[node][0]
        np.testing.assert_allclose(got, want, atol=F32_TOL)
        r = np.zeros((len(JOINTS), 3))
        r[JOINTS.index(joint)] = [0.0, 0.4, 0.0]  # turn that joint alone: the splats turn rigidly about it
        turned = evaluate_glb(glb, _glb_pose(glb.document, np.zeros(NUM_ARKIT), r))[node][0]
        c = ex.joints[JOINTS.index(joint)]
        R = axis_angle_to_matrix(torch.tensor(r[JOINTS.index(joint)])).numpy()
        np.testing.assert_allclose(turned, (want - c) @ R.T + c, atol=F32_TOL)
    none = export_rig(head, (), RigGlbConfig(hair=HairExport.NONE))
    assert not any("splats" in n.get("name", "") for n in read_glb(none.glb).document["nodes"])


# ------------------------------------------------------------------------------------------ validator
def test_rigged_glb_passes_the_validator(tmp_path):
    require_validator()
    path = tmp_path / "head.glb"
    path.write_bytes(_exported().glb)
    report = validate_glb(path)
    assert report.num_errors == 0 and report.num_warnings == 0, report.summary()
    info = report.raw["info"]
    assert info["hasSkins"] and info["hasMorphTargets"] and info["hasTextures"] and info["animationCount"] == 4


def test_rigged_glb_with_splats_has_only_the_known_validator_gap(tmp_path):
    require_validator()
    path = tmp_path / "avatar.glb"
    path.write_bytes(_exported(gaussians=True).glb)
    report = validate_glb(path)
    flagged = extension_semantic_errors(report)
    assert sorted(flagged) == sorted(2 * extension_attribute_names(1)), report.summary()  # hair + clothing
    assert report.num_errors == len(flagged) and report.num_warnings == 0, report.summary()
    twin = tmp_path / "renamed.glb"
    twin.write_bytes(with_renamed_semantics(path.read_bytes()))
    renamed = validate_glb(twin)
    assert renamed.num_errors == 0 and renamed.num_warnings == 0, renamed.summary()


# ------------------------------------------------------------------------------------------ refusals
def test_bad_input_is_refused():
    head = small_export_head()
    rig = head.rig
    present = rig.expression_present.clone()
    k = ARKIT_NAMES.index("tongueOut")
    present[k] = False
    basis = rig.expression_basis.clone()
    basis[k] = 0
    lacking = dataclasses.replace(head, rig=dataclasses.replace(rig, expression_present=present,
                                                                expression_basis=basis))
    weights = torch.zeros(3, NUM_ARKIT, dtype=torch.float64)
    weights[1, k] = 0.5
    clip = Clip("tongue", 30.0, weights, torch.zeros(3, len(JOINTS), 3, dtype=torch.float64), "test")
    with pytest.raises(InputError, match="tongueOut"):
        build_rigged_glb(lacking, (clip,))
    offsets = torch.zeros(rig.num_vertices, 3, dtype=torch.float64)
    offsets[5, 1] = float("nan")
    bad = dataclasses.replace(head, params=dataclasses.replace(head.params, offsets=offsets))
    with pytest.raises(InputError, match="NaN"):
        build_rigged_glb(bad, ())
    talk = read_clip("builtin:talk")
    with pytest.raises(InputError, match="two clips are named talk"):
        build_rigged_glb(head, (talk, talk))
    correctives = torch.zeros(len(JOINTS) - 1, 9, rig.num_vertices, 3)
    flame_like = dataclasses.replace(head, rig=dataclasses.replace(rig, pose_correctives=correctives))
    with pytest.raises(InputError, match="pose correctives"):
        build_rigged_glb(flame_like, ())
    with pytest.raises(OptionError, match="max_influences"):
        RigGlbConfig(max_influences=0)


# ------------------------------------------------------------------------------------------ ICT-FaceKit
def test_ict_fit_exports_teeth_and_matches_deform(tmp_path):
    from headforge.assets.rigs import load_rig, parse_rig_spec
    from headforge.pipeline.fitted_rig import texture_from_image
    from headforge.stages.rig_params import RigParams

    if not ICT.is_dir():
        pytest.skip(f"ICT-FaceKit not found at {ICT} (the ../shared/data folder beside the repo)")
    rig = load_rig(parse_rig_spec(f"ict-facekit:{ICT}"))
    g = torch.Generator().manual_seed(0)
    identity = 0.5 * torch.randn(rig.num_identity, generator=g, dtype=torch.float64)
    offsets = 0.001 * torch.randn(rig.num_vertices, 3, generator=g, dtype=torch.float64)
    base = small_export_head().params
    params = RigParams(base.similarity, identity, base.expression, base.pose, offsets)
    head = ExportHead(rig, params, texture_from_image(rig, torch.rand(64, 64, 3, generator=g)))
    clip = read_clip("builtin:talk")
    ex = export_rig(head, (clip,))
    glb = read_glb(ex.glb)
    names = {p.name for p in ex.parts}
    assert {"head_mesh", "left_eye_mesh", "right_eye_mesh", "upper_teeth_mesh", "lower_teeth_mesh"} <= names
    w, r = _random_state(5)
    w[~rig.expression_present] = 0
    # ICT's shapes move a third of the vertices by less than 0.1 um each: the sparse targets drop those, an error
    # of at most sqrt(3) * epsilon * sum(weights) (2.2 um measured here; 0.03 um with every delta kept)
    tol = F32_TOL + 3**0.5 * RigGlbConfig().target_epsilon * float(w.sum())
    assert _max_error(ex, glb, _deform(head, w, r), _glb_pose(glb.document, w.numpy(), r.numpy())) < tol
    whole = export_rig(head, (clip,), RigGlbConfig(split_parts=False))  # one skinned mesh (Unreal's layout)
    assert [p.name for p in whole.parts] == ["head_mesh"]
    one = read_glb(whole.glb)
    assert _max_error(whole, one, _deform(head, w, r), _glb_pose(one.document, w.numpy(), r.numpy())) < tol
    quantized = export_rig(head, (clip,), RigGlbConfig(quantize_targets=True))  # normalized SHORT deltas
    q = read_glb(quantized.glb)
    q_tol = F32_TOL + 0.5 * QUANT_STEP * float(w.sum())
    assert _max_error(quantized, q, _deform(head, w, r), _glb_pose(q.document, w.numpy(), r.numpy())) < q_tol
    assert _target_bytes(quantized.glb) < _target_bytes(ex.glb)
    require_validator()
    for label, data in (("ict", ex.glb), ("whole", whole.glb), ("quantized", quantized.glb)):
        path = tmp_path / f"{label}.glb"
        path.write_bytes(data)
        report = validate_glb(path)
        assert report.num_errors == 0 and report.num_warnings == 0, report.summary()
