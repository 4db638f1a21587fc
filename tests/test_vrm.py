"""VRM 1.0 export (stages/export_vrm.py): the VRMC_vrm extension's structure against the spec's rules,
the Khronos validator on the VRM, and a GLB that is not a headforge rig refused with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from export_fixtures import small_export_head, small_rigged_glb
from gltf_validator import extension_semantic_errors, require_validator, validate_glb, with_renamed_semantics

from headforge.errors import InputError
from headforge.io.glb import pack_glb, read_glb
from headforge.io.gltf import GltfBuilder
from headforge.io.gltf_types import AccessorType, BufferTarget, Node, Primitive
from headforge.representations.rig.arkit import ARKIT_NAMES
from headforge.representations.rig.head_rig import JOINTS
from headforge.stages.export_vrm import (
    EYE_HEIGHT_OVER_STATURE,
    REQUIRED_BONES,
    RIG_BONES,
    VRM_PUBLIC_LICENSE_1_0,
    VrmConfig,
    VrmMeta,
    body_layout,
    node_parents,
    vrm_from_rigged_glb,
)
from headforge.stages.rig_export import RigGlbConfig, build_rigged_glb
from headforge.stages.rig_export_eval import evaluate_glb, world_matrices
from headforge.stages.vrm_expressions import PRESET_EXPRESSIONS, VrmPreset
from headforge.validation import OptionError

META = VrmMeta(name="test head", authors=("headforge tests",))
VERTEX = BufferTarget.ARRAY_BUFFER


@pytest.fixture(scope="module")
def rigged() -> bytes:
    return small_rigged_glb()


@pytest.fixture(scope="module")
def vrm(rigged) -> bytes:
    return vrm_from_rigged_glb(rigged, META)


def _ext(vrm: bytes) -> tuple[dict, dict]:
    doc = read_glb(vrm).document
    return doc, doc["extensions"]["VRMC_vrm"]


# ------------------------------------------------------------------------------------------ structure
def test_pack_glb_round_trips_read_glb(rigged):
    g = read_glb(rigged)
    assert pack_glb(g.document, g.binary) == rigged  # same JSON and chunks, byte for byte
    doc = {**g.document, "extras": {"note": "é"}}
    again = read_glb(pack_glb(doc, g.binary))
    assert again.document["extras"] == {"note": "é"} and again.binary == g.binary
    with pytest.raises(ValueError, match="byteLength"):
        pack_glb(g.document, g.binary + b"\0" * 8)


def test_vrm_keeps_the_rig_and_adds_the_extension(rigged, vrm):
    before, after = read_glb(rigged), read_glb(vrm)
    doc, ext = _ext(vrm)
    assert ext["specVersion"] == "1.0" and "VRMC_vrm" in doc["extensionsUsed"]
    assert after.binary[:len(before.binary)] == before.binary  # mesh data untouched
    for key in ("meshes", "accessors", "bufferViews", "skins", "animations", "images", "materials"):
        assert doc[key] == before.document[key], key
    meta = ext["meta"]
    assert meta["name"] == "test head" and meta["authors"] == ["headforge tests"]
    assert meta["licenseUrl"] == VRM_PUBLIC_LICENSE_1_0 and meta["avatarPermission"] == "everyone"
    assert meta["allowExcessivelySexualUsage"] is False


def test_humanoid_bones_are_required_complete_and_nested_as_the_spec(vrm):
    doc, ext = _ext(vrm)
    bones = {name: b["node"] for name, b in ext["humanoid"]["humanBones"].items()}
    assert set(REQUIRED_BONES) <= set(bones) and len(set(bones.values())) == len(bones)
    names = [n.get("name") for n in doc["nodes"]]
    for bone, joint in RIG_BONES.items():
        assert names[bones[bone]] == str(joint)
    parents = node_parents(doc)

    def nearest_bone_above(node: int) -> str | None:
        node = parents[node]
        while node >= 0 and node not in bones.values():
            node = parents[node]
        return None if node < 0 else next(b for b, n in bones.items() if n == node)

    expected = {"hips": None, "spine": "hips", "chest": "spine", "upperChest": "chest", "neck": "upperChest",
                "head": "neck", "jaw": "head", "leftEye": "head", "rightEye": "head", "leftUpperLeg": "hips",
                "leftLowerLeg": "leftUpperLeg", "leftFoot": "leftLowerLeg", "leftShoulder": "upperChest",
                "leftUpperArm": "leftShoulder", "leftLowerArm": "leftUpperArm", "leftHand": "leftLowerArm"}
    for bone, parent in expected.items():
        for side in {bone, bone.replace("left", "right")}:
            want = parent.replace("left", "right") if parent and side.startswith("right") else parent
            assert nearest_bone_above(bones[side]) == want, side
    world = world_matrices(doc)
    at = {b: world[n][:3, 3] for b, n in bones.items()}
    eyes = (at["leftEye"] + at["rightEye"]) / 2
    assert eyes[1] == pytest.approx(VrmConfig().eye_height_m, abs=1e-6) and abs(at["neck"][0]) < 1e-6
    assert at["leftEye"][0] > 0 > at["rightEye"][0] and at["leftHand"][0] > 0.5 > -0.5 > at["rightHand"][0]
    heights = [at[b][1] for b in ("leftFoot", "leftLowerLeg", "hips", "spine", "chest", "upperChest", "neck",
                                  "head")]
    assert heights == sorted(heights) and 0 < heights[0] < 0.1  # standing on y = 0, feet up to the head
    assert at["leftHand"][1] == pytest.approx(at["leftUpperArm"][1])  # T-pose: arms level
    for node in doc["nodes"]:
        assert "scale" not in node or len(set(node["scale"])) == 1 and node["scale"][0] > 0


@pytest.mark.parametrize("eye_height", [1.0, 1.6, 2.5])
def test_body_layout_stays_ordered_down_to_the_shortest_neck_accepted(eye_height):
    stature = eye_height / EYE_HEIGHT_OVER_STATURE
    for neck_y in (0.75 * stature, 0.85 * stature):  # the lowest neck vrm_from_rigged_glb accepts, and a usual one
        at = {bone: p for bone, (_, p) in body_layout(stature, neck_y).items()}
        chain = [at[b][1] for b in ("leftFoot", "leftLowerLeg", "leftUpperLeg", "hips", "spine", "chest",
                                    "upperChest")] + [neck_y]
        assert all(a < b for a, b in zip(chain, chain[1:], strict=False)), chain
        assert max(at[b][1] for b in ("leftShoulder", "leftUpperArm", "leftHand")) < neck_y
        np.testing.assert_allclose(at["rightHand"] * [-1, 1, 1], at["leftHand"])


def test_the_head_moves_up_rigidly_and_mesh_data_is_kept(rigged, vrm):
    """The skinned vertices follow the joints: every joint moves by one translation."""
    before, (after, ext) = world_matrices(read_glb(rigged).document), _ext(vrm)
    after_world = world_matrices(after)
    names = [n.get("name") for n in after["nodes"]]
    shifts = [after_world[names.index(str(j))] @ np.linalg.inv(before[names.index(str(j))]) for j in JOINTS]
    for s in shifts:
        np.testing.assert_allclose(s[:3, :3], np.eye(3), atol=1e-9)
        np.testing.assert_allclose(s[:3, 3], shifts[0][:3, 3], atol=1e-9)
    assert shifts[0][1, 3] > 1.0
    # the slow twin (glTF's skinning evaluated from the file): every drawn vertex moves by that translation
    posed_before, posed_after = evaluate_glb(read_glb(rigged)), evaluate_glb(read_glb(vrm))
    assert set(posed_before) == set(posed_after) and "head_mesh" in posed_before
    for name, prims in posed_before.items():
        for p0, p1 in zip(prims, posed_after[name], strict=True):
            np.testing.assert_allclose(p1 - p0, np.broadcast_to(shifts[0][:3, 3], p0.shape), atol=1e-9)
    head = after_world[ext["humanoid"]["humanBones"]["head"]["node"]]
    eyes = [after_world[ext["humanoid"]["humanBones"][e]["node"]][:3, 3] for e in ("leftEye", "rightEye")]
    offset = np.array(ext["lookAt"]["offsetFromHeadBone"])
    np.testing.assert_allclose(head[:3, :3] @ offset + head[:3, 3], (eyes[0] + eyes[1]) / 2, atol=1e-9)
    assert ext["lookAt"]["type"] == "bone"


def test_expressions_presets_and_52_customs_bind_existing_targets(vrm):
    doc, ext = _ext(vrm)
    preset, custom = ext["expressions"]["preset"], ext["expressions"]["custom"]
    assert set(preset) == {str(p) for p in VrmPreset} and list(custom) == list(ARKIT_NAMES)
    assert not set(custom) & set(preset)  # the spec forbids custom names equal to presets
    targets_of = {}
    for i, node in enumerate(doc["nodes"]):
        if "mesh" in node:
            targets_of[i] = doc["meshes"][node["mesh"]].get("extras", {}).get("targetNames", [])
    for name, expression in {**preset, **custom}.items():
        for bind in expression.get("morphTargetBinds", []):
            assert bind["node"] in targets_of and 0 <= bind["index"] < len(targets_of[bind["node"]]), name
            assert 0 < bind["weight"] <= 1
    for name in ARKIT_NAMES:
        binds = custom[name]["morphTargetBinds"]
        holders = [i for i, names in targets_of.items() if name in names]
        assert sorted(b["node"] for b in binds) == holders and all(b["weight"] == 1.0 for b in binds)
        assert all(targets_of[b["node"]][b["index"]] == name for b in binds)
    for p, table in PRESET_EXPRESSIONS.items():
        bound = sorted((targets_of[b["node"]][b["index"]], b["weight"]) for b in preset[p].get("morphTargetBinds", []))
        holders = {str(s): sum(str(s) in names for names in targets_of.values()) for s, _ in table.binds}
        assert bound == sorted((str(s), w) for s, w in table.binds for _ in range(holders[str(s)])), p
    assert "morphTargetBinds" not in preset["neutral"]
    assert [targets_of[b["node"]][b["index"]] for b in preset["blinkLeft"]["morphTargetBinds"]] == ["eyeBlinkLeft"]


def test_meta_overrides_and_refusals(rigged):
    strict = VrmMeta(name="x", authors=("a",), commercial_usage="personalNonProfit", allow_redistribution=False,
                     version="2", references=("scan of 2026-11-30",))
    meta = _ext(vrm_from_rigged_glb(rigged, strict))[1]["meta"]
    assert meta["commercialUsage"] == "personalNonProfit" and meta["allowRedistribution"] is False
    assert meta["version"] == "2" and meta["references"] == ["scan of 2026-11-30"]
    with pytest.raises(OptionError, match="VrmMeta.authors"):
        VrmMeta(name="x", authors=())
    with pytest.raises(OptionError, match="VrmMeta.name"):
        VrmMeta(name="  ", authors=("a",))
    with pytest.raises(OptionError, match="nobody"):
        VrmMeta(name="x", authors=("a",), avatar_permission="nobody")
    with pytest.raises(OptionError, match="VrmConfig.eye_height_m"):
        VrmConfig(eye_height_m=0.2)
    lower = vrm_from_rigged_glb(rigged, META, VrmConfig(eye_height_m=1.2))
    doc, ext = _ext(lower)
    eye = world_matrices(doc)[ext["humanoid"]["humanBones"]["leftEye"]["node"]]
    assert eye[1, 3] == pytest.approx(1.2, abs=1e-6)


# ------------------------------------------------------------------------------------------ bad input
def test_a_glb_without_the_rig_joints_is_refused(rigged):
    g = read_glb(rigged)
    doc = {**g.document, "nodes": [dict(n) for n in g.document["nodes"]]}
    jaw = next(n for n in doc["nodes"] if n.get("name") == "jaw")
    jaw["name"] = "mandible"
    with pytest.raises(InputError, match=r"no joint node named \['jaw'\]"):
        vrm_from_rigged_glb(pack_glb(doc, g.binary), META)
    plain = GltfBuilder()
    pos = plain.add_accessor(np.eye(3, dtype=np.float32), AccessorType.VEC3, target=VERTEX, min_max=True)
    plain.add_scene([plain.add_node(Node(name="cube", mesh=plain.add_mesh([Primitive({"POSITION": pos})])))])
    with pytest.raises(InputError, match="no joint node named") as err:
        vrm_from_rigged_glb(plain.to_glb(), META)
    assert "rig_export" in str(err.value)
    with pytest.raises(InputError, match="not a GLB|too short"):
        vrm_from_rigged_glb(b"not a glb at all", META)


def test_a_rig_whose_neck_is_far_below_the_eyes_is_refused(rigged):
    g = read_glb(rigged)
    doc = {**g.document, "nodes": [dict(n) for n in g.document["nodes"]]}
    head = next(n for n in doc["nodes"] if n.get("name") == "head")
    head["translation"] = [0.0, 0.6, 0.0]  # eyes (children of the head joint) 60 cm above the neck joint
    with pytest.raises(InputError, match="neck joint lies"):
        vrm_from_rigged_glb(pack_glb(doc, g.binary), META)
    doc["nodes"] = [dict(n) for n in g.document["nodes"]]
    doc["scenes"] = []
    with pytest.raises(InputError, match="default scene"):
        vrm_from_rigged_glb(pack_glb(doc, g.binary), META)


def test_a_vrm_is_not_converted_twice_and_targets_must_be_arkit(rigged, vrm):
    with pytest.raises(InputError, match="already"):
        vrm_from_rigged_glb(vrm, META)
    g = read_glb(rigged)
    doc = {**g.document, "meshes": [dict(m) for m in g.document["meshes"]]}
    head = next(m for m in doc["meshes"] if m.get("name") == "head_mesh")
    head["extras"] = {"targetNames": [f"shape{k}" for k in range(len(ARKIT_NAMES))]}
    with pytest.raises(InputError, match="lacks 52 of the 52 ARKit"):
        vrm_from_rigged_glb(pack_glb(doc, g.binary), META)


# ------------------------------------------------------------------------------------------ validator
def test_vrm_passes_the_khronos_validator(vrm, tmp_path):
    require_validator()
    path = tmp_path / "head.vrm"
    path.write_bytes(vrm)
    report = validate_glb(path)
    assert report.num_errors == 0 and report.num_warnings == 0, report.summary()
    assert any(i.code == "UNSUPPORTED_EXTENSION" and "VRMC_vrm" in i.message for i in report.issues), report.summary()


def test_vrm_of_an_avatar_with_splats_has_only_the_known_validator_gap(tmp_path):
    """Hair and clothing splats ride along (children of head and neck joints); the validator release predates
    KHR_gaussian_splatting, so exactly its semantics are flagged and the renamed twin must be clean."""
    require_validator()
    vrm = vrm_from_rigged_glb(small_rigged_glb(gaussians=True), META)
    doc = read_glb(vrm).document
    names = [n.get("name") for n in doc["nodes"]]
    assert "hair_splats" in names and "clothing_splats" in names
    path = tmp_path / "avatar.vrm"
    path.write_bytes(vrm)
    report = validate_glb(path)
    flagged = extension_semantic_errors(report)
    assert flagged and report.num_errors == len(flagged) and report.num_warnings == 0, report.summary()
    twin = tmp_path / "renamed.vrm"
    twin.write_bytes(with_renamed_semantics(vrm))
    renamed = validate_glb(twin)
    assert renamed.num_errors == 0 and renamed.num_warnings == 0, renamed.summary()


def test_vrm_of_a_single_skinned_mesh_export():
    """split_parts=False keeps eyes and teeth in head_mesh (for Unreal): the VRM binds that one node."""
    head = small_export_head()
    vrm = vrm_from_rigged_glb(build_rigged_glb(head, (), RigGlbConfig(split_parts=False)), META)
    doc, ext = _ext(vrm)
    mesh_nodes = [n.get("name") for n in doc["nodes"] if "mesh" in n]
    assert mesh_nodes == ["head_mesh"]
    for expression in ext["expressions"]["custom"].values():
        assert [doc["nodes"][b["node"]]["name"] for b in expression["morphTargetBinds"]] == ["head_mesh"]
    assert {"leftEye", "rightEye", "jaw"} <= set(ext["humanoid"]["humanBones"])
