"""glTF builder: layout rules, round trips through the GLB reader, and the Khronos validator on every
GLB the project writes (mesh, splats, and builder-level skins / morph targets / animations)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from gltf_validator import extension_semantic_errors, require_validator, validate_glb, with_renamed_semantics

from headforge.errors import InputError
from headforge.io.gaussian_splatting import extension_attribute_names
from headforge.io.glb import dequantize, read_glb
from headforge.io.gltf import GltfBuilder
from headforge.io.gltf_types import (
    AccessorType,
    AlphaMode,
    AnimationChannel,
    AnimationPath,
    BufferTarget,
    ComponentType,
    Interpolation,
    Material,
    Node,
    Primitive,
)
from headforge.representations.gaussians import Splats
from headforge.representations.mesh import TexturedMesh
from headforge.representations.mesh_io import save_glb
from headforge.representations.splat_io import save_splats_glb

VERTEX = BufferTarget.ARRAY_BUFFER


@pytest.fixture
def validator():
    require_validator()


def _chunks(glb: bytes) -> tuple[dict, bytes]:
    jlen = struct.unpack_from("<I", glb, 12)[0]
    return json.loads(glb[20:20 + jlen]), glb[28 + jlen:]


def _rot_z(angle: float) -> np.ndarray:  # xyzw quaternion about +z
    return np.array([0, 0, np.sin(angle / 2), np.cos(angle / 2)], np.float32)


def _trs(t, angle_z: float) -> np.ndarray:  # [4, 4] row-major: translate @ rotate_z
    c, s = np.cos(angle_z), np.sin(angle_z)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = t
    return m


def rigged_glb() -> tuple[bytes, dict]:
    """A textured strip of 8 vertices with a 2-joint skin, 2 sparse morph targets, a matrix node,
    uint8 VEC3 colours (padded stride) and an animation on TRS and weights. -> (GLB, inputs)."""
    rng = np.random.default_rng(0)
    x = np.repeat(np.arange(4, dtype=np.float32), 2)
    pos = np.stack([x, np.tile([0.0, 1.0], 4).astype(np.float32), np.zeros(8, np.float32)], 1)
    faces = np.array([[0, 2, 1], [1, 2, 3], [2, 4, 3], [3, 4, 5], [4, 6, 5], [5, 6, 7]])
    uv = np.stack([x / 3, np.tile([0.0, 1.0], 4)], 1).astype(np.float32)
    colors = rng.integers(0, 256, (8, 3), dtype=np.uint8)
    w1 = x / 3
    joints = np.zeros((8, 4), np.uint8)
    joints[w1 > 0, 1] = 1  # a joint with zero weight must be 0 (the validator warns otherwise)
    weights = np.stack([1 - w1, w1, np.zeros(8), np.zeros(8)], 1).astype(np.float32)
    moved = np.array([5, 7])
    deltas = [np.array([[0, 0, 0.5], [0, 0, 0.25]], np.float32), np.array([[0.1, 0, 0], [0, 0.2, 0]], np.float32)]
    b = GltfBuilder()
    texture = b.add_texture(b.add_image_png(rng.integers(0, 256, (4, 8, 3), dtype=np.uint8)))
    material = b.add_material(Material(name="skin", base_color_texture=texture, metallic_factor=0.0,
                                       alpha_mode=AlphaMode.MASK, alpha_cutoff=0.3, double_sided=True))
    attrs = {"POSITION": b.add_accessor(pos, AccessorType.VEC3, target=VERTEX, min_max=True),
             "TEXCOORD_0": b.add_accessor(uv, AccessorType.VEC2, target=VERTEX),
             "COLOR_0": b.add_accessor(colors, AccessorType.VEC3, target=VERTEX, normalized=True),
             "JOINTS_0": b.add_accessor(joints, AccessorType.VEC4, target=VERTEX),
             "WEIGHTS_0": b.add_accessor(weights, AccessorType.VEC4, target=VERTEX)}
    targets = tuple({"POSITION": b.add_sparse_accessor(8, moved.astype(np.uint16), d, AccessorType.VEC3,
                                                       min_max=True)} for d in deltas)
    prim = Primitive(attrs, indices=b.add_indices(faces), material=material, targets=targets)
    mesh = b.add_mesh([prim], weights=[0.0, 0.5], target_names=["raise", "shift"], name="strip")
    joint_local = [_trs([0, 0, 0], 0.0), _trs([1.5, 0, 0], 0.0)]
    parent = _trs([0.0, 0.0, -1.0], 0.3)  # the matrix node above the joints
    j1 = b.add_node(Node(name="joint1", translation=(1.5, 0.0, 0.0)))
    j0 = b.add_node(Node(name="joint0", children=(j1,), translation=(0.0, 0.0, 0.0)))
    root = b.add_node(Node(name="rig", children=(j0,), matrix=parent))
    world = [parent @ joint_local[0], parent @ joint_local[0] @ joint_local[1]]
    ibm = np.stack([np.linalg.inv(m) for m in world]).astype(np.float32)
    skin = b.add_skin([j0, j1], ibm, skeleton=j0, name="rig")
    body = b.add_node(Node(name="body", mesh=mesh, skin=skin))
    b.add_scene([body, root])
    times = np.array([0.0, 0.5, 1.0], np.float32)
    angles = [0.0, 0.4, 0.8]
    channels = [
        AnimationChannel(j1, AnimationPath.ROTATION, times, np.stack([_rot_z(a) for a in angles])),
        AnimationChannel(j0, AnimationPath.TRANSLATION, times, np.array([[0, 0, 0], [0, 0.1, 0], [0, 0.2, 0]],
                                                                        np.float32), Interpolation.STEP),
        AnimationChannel(j1, AnimationPath.SCALE, times[:2], np.array([[1, 1, 1], [1.2, 1, 1]], np.float32)),
        AnimationChannel(body, AnimationPath.WEIGHTS, times, np.array([[0, 0], [1, 0.5], [0, 1]], np.float32)),
    ]
    b.add_animation(channels, name="wave")
    inputs = dict(pos=pos, uv=uv, colors=colors, joints=joints, weights=weights, faces=faces, moved=moved,
                  deltas=deltas, ibm=ibm, parent=parent, channels=channels)
    return b.to_glb(), inputs


# ------------------------------------------------------------------------------------------ layout
def test_glb_layout_alignment_and_padding():
    glb, _ = rigged_glb()
    assert glb[:4] == b"glTF" and struct.unpack_from("<II", glb, 4) == (2, len(glb)) and len(glb) % 4 == 0
    jlen, jtype = struct.unpack_from("<I4s", glb, 12)
    assert jtype == b"JSON" and jlen % 4 == 0
    blen, btype = struct.unpack_from("<I4s", glb, 20 + jlen)
    assert btype == b"BIN\0" and blen % 4 == 0 and 28 + jlen + blen == len(glb)
    doc, blob = _chunks(glb)
    assert doc["buffers"] == [{"byteLength": blen}]
    views = doc["bufferViews"]
    assert all(v["byteOffset"] % 4 == 0 and v["byteOffset"] + v["byteLength"] <= blen for v in views)
    acc = doc["accessors"]
    attrs = doc["meshes"][0]["primitives"][0]["attributes"]
    color_view = views[acc[attrs["COLOR_0"]]["bufferView"]]
    assert color_view["byteStride"] == 4 and color_view["target"] == 34962  # uint8 VEC3 padded to 4 bytes
    assert "byteStride" not in views[acc[attrs["POSITION"]]["bufferView"]]
    assert views[acc[doc["meshes"][0]["primitives"][0]["indices"]]["bufferView"]]["target"] == 34963
    ibm_view = views[acc[doc["skins"][0]["inverseBindMatrices"]]["bufferView"]]
    assert "target" not in ibm_view
    assert acc[attrs["COLOR_0"]]["normalized"] is True


def test_node_matrix_is_column_major_and_bounds_match_data():
    glb, inp = rigged_glb()
    doc, _ = _chunks(glb)
    rig = next(n for n in doc["nodes"] if n.get("name") == "rig")
    np.testing.assert_allclose(rig["matrix"][12:15], inp["parent"][:3, 3])  # translation in the last column
    np.testing.assert_allclose(np.array(rig["matrix"]).reshape(4, 4).T, inp["parent"])
    pos_acc = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    assert pos_acc["min"] == inp["pos"].min(0).tolist() and pos_acc["max"] == inp["pos"].max(0).tolist()
    target0 = doc["accessors"][doc["meshes"][0]["primitives"][0]["targets"][0]["POSITION"]]
    assert "bufferView" not in target0 and target0["sparse"]["count"] == 2
    assert target0["max"] == [0.0, 0.0, 0.5] and target0["min"] == [0.0, 0.0, 0.0]  # zeros of unmoved vertices count
    mesh = doc["meshes"][0]
    assert mesh["weights"] == [0.0, 0.5] and mesh["extras"]["targetNames"] == ["raise", "shift"]


def test_round_trip_through_reader_expands_sparse():
    glb, inp = rigged_glb()
    g = read_glb(glb)
    prim = g.document["meshes"][0]["primitives"][0]
    a = prim["attributes"]
    np.testing.assert_array_equal(g.accessor(a["POSITION"]), inp["pos"])
    np.testing.assert_array_equal(g.accessor(a["TEXCOORD_0"]), inp["uv"])
    np.testing.assert_array_equal(g.accessor(a["COLOR_0"], normalize=False), inp["colors"])  # through the stride
    np.testing.assert_allclose(g.accessor(a["COLOR_0"]), inp["colors"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(g.accessor(a["JOINTS_0"]), inp["joints"])
    np.testing.assert_array_equal(g.accessor(a["WEIGHTS_0"]), inp["weights"])
    np.testing.assert_array_equal(g.accessor(prim["indices"]), inp["faces"].reshape(-1))
    assert g.accessor(prim["indices"]).dtype == np.uint16
    for target, delta in zip(prim["targets"], inp["deltas"], strict=True):
        dense = np.zeros((8, 3), np.float32)
        dense[inp["moved"]] = delta
        np.testing.assert_array_equal(g.accessor(target["POSITION"]), dense)
    np.testing.assert_array_equal(g.accessor(g.document["skins"][0]["inverseBindMatrices"]), inp["ibm"])
    anim = g.document["animations"][0]
    for channel, sampler, given in zip(anim["channels"], anim["samplers"], inp["channels"], strict=True):
        assert channel["target"]["path"] == given.path.value and sampler["interpolation"] == given.interpolation
        np.testing.assert_array_equal(g.accessor(sampler["input"]), given.times)
        np.testing.assert_array_equal(g.accessor(sampler["output"]).reshape(given.values.shape), given.values)
    png = g.image_bytes(0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_indices_widen_to_uint32_and_dequantize_matches_spec():
    b = GltfBuilder()
    idx = b.add_indices(np.array([[0, 70000, 1]]))
    g = read_glb(b.to_glb())
    assert g.accessor(idx).dtype == np.uint32 and g.accessor(idx).tolist() == [0, 70000, 1]
    signed = dequantize(np.array([-128, -127, 0, 127], np.int8), ComponentType.BYTE)
    np.testing.assert_allclose(signed, [-1, -1, 0, 1])
    np.testing.assert_allclose(dequantize(np.array([0, 65535], np.uint16), ComponentType.UNSIGNED_SHORT), [0, 1])


def test_builder_refuses_bad_input():
    b = GltfBuilder()
    with pytest.raises(TypeError, match="float64"):
        b.add_accessor(np.zeros((3, 3)), AccessorType.VEC3)
    with pytest.raises(ValueError, match="strictly increase"):
        b.add_sparse_accessor(4, np.array([2, 1], np.uint16), np.zeros((2, 3), np.float32), AccessorType.VEC3)
    with pytest.raises(ValueError, match="shape"):
        b.add_accessor(np.zeros((3, 4), np.float32), AccessorType.VEC3)
    prim = Primitive({"POSITION": 0}, targets=({"POSITION": 0},))
    with pytest.raises(ValueError, match="1 morph targets"):
        b.add_mesh([prim], weights=[0.0, 1.0])
    with pytest.raises(ValueError, match="not both"):
        b.add_node(Node(matrix=np.eye(4), translation=(0.0, 0.0, 0.0)))
    with pytest.raises(ValueError, match="increasing"):
        b.add_animation([AnimationChannel(0, AnimationPath.SCALE, np.array([1.0, 0.5], np.float32),
                                          np.ones((2, 3), np.float32))])


def test_reader_rejects_truncated_files():
    glb, _ = rigged_glb()
    with pytest.raises(InputError, match="truncated"):
        read_glb(glb[:-100])
    cut = glb[:-100]
    with pytest.raises(InputError, match="BIN chunk"):
        read_glb(cut[:8] + struct.pack("<I", len(cut)) + cut[12:])  # header patched to the shorter length
    with pytest.raises(InputError, match="not a GLB"):
        read_glb(b"glTF\x01\0\0\0" + glb[8:])


# ------------------------------------------------------------------------------------------ validator
def _cube_mesh(textured: bool) -> TexturedMesh:
    v = torch.tensor([[x, y, z] for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)])
    faces = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                          [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    if not textured:
        return TexturedMesh(v, faces, vertex_colors=torch.rand(8, 3))
    uvs = torch.rand(36, 2)
    return TexturedMesh(v, faces, uvs, torch.arange(36).reshape(12, 3), torch.rand(8, 8, 3))


def _splats(n: int, degree: int) -> Splats:
    return Splats(torch.randn(n, 3) * 0.05, torch.nn.functional.normalize(torch.randn(n, 4), dim=-1),
                  torch.rand(n, 3) * 0.01 + 1e-3, torch.rand(n) * 0.9 + 0.05, torch.randn(n, (degree + 1) ** 2, 3))


@pytest.mark.parametrize("textured", [True, False])
def test_mesh_glb_passes_the_validator(validator, tmp_path, textured):
    path = save_glb(_cube_mesh(textured), tmp_path / "m.glb")
    report = validate_glb(path)
    assert report.num_errors == 0 and report.num_warnings == 0, report.summary()


def test_rigged_builder_glb_passes_the_validator(validator, tmp_path):
    path = tmp_path / "rig.glb"
    path.write_bytes(rigged_glb()[0])
    report = validate_glb(path)
    assert report.num_errors == 0 and report.num_warnings == 0, report.summary()
    info = report.raw["info"]
    assert info["animationCount"] == 1 and info["hasSkins"] and info["hasMorphTargets"] and info["hasTextures"]


@pytest.mark.parametrize("degree", [0, 3])
def test_splat_glb_passes_the_validator(validator, tmp_path, degree):
    path = save_splats_glb(_splats(64, degree), tmp_path / "s.glb")
    report = validate_glb(path)
    # this validator release does not know KHR_gaussian_splatting: exactly its semantics are flagged
    flagged = extension_semantic_errors(report)
    assert sorted(flagged) == sorted(extension_attribute_names((degree + 1) ** 2)), report.summary()
    assert report.num_errors == len(flagged) and report.num_warnings == 0, report.summary()
    assert any(i.code == "UNSUPPORTED_EXTENSION" for i in report.issues)
    twin = tmp_path / "renamed.glb"
    twin.write_bytes(with_renamed_semantics(path.read_bytes()))
    renamed = validate_glb(twin)  # same accessors under core-legal names: checked with no exemption
    assert renamed.num_errors == 0 and renamed.num_warnings == 0, renamed.summary()


def test_validator_counts_errors_of_a_broken_glb(validator, tmp_path):
    """Negative control: an accessor whose count runs past its buffer view must give errors."""
    b = GltfBuilder()
    pos = b.add_accessor(np.eye(3, dtype=np.float32), AccessorType.VEC3, target=VERTEX, min_max=True)
    b.add_scene([b.add_node(Node(mesh=b.add_mesh([Primitive({"POSITION": pos})])))])
    b.doc["accessors"][pos]["count"] = 30
    path = tmp_path / "broken.glb"
    path.write_bytes(b.to_glb())
    report = validate_glb(path)
    assert report.num_errors > 0 and any(i.code == "ACCESSOR_TOO_LONG" for i in report.errors), report.summary()
    with pytest.raises(InputError, match="needs"):
        read_glb(path.read_bytes()).accessor(pos)


def test_missing_validator_skips_locally_and_fails_under_ci(monkeypatch, tmp_path):
    import gltf_validator

    monkeypatch.setattr(gltf_validator, "PACKAGE", tmp_path / "nowhere")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        gltf_validator.require_validator()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        gltf_validator.require_validator()


def test_extension_lists_and_primitive_extensions():
    b = GltfBuilder()
    pos = b.add_accessor(np.eye(3, dtype=np.float32), AccessorType.VEC3, target=VERTEX, min_max=True)
    b.add_mesh([Primitive({"POSITION": pos}, extensions={"EXT_example": {"a": 1}})])
    b.use_extension("EXT_needed", required=True)
    doc = read_glb(b.to_glb()).document
    assert doc["extensionsUsed"] == ["EXT_example", "EXT_needed"] and doc["extensionsRequired"] == ["EXT_needed"]
    assert doc["meshes"][0]["primitives"][0]["extensions"] == {"EXT_example": {"a": 1}}
    assert "extensionsRequired" not in GltfBuilder().document()


def _quantized_morph_glb(extension: bool) -> tuple[bytes, np.ndarray]:
    """A triangle with one sparse morph target of normalized int16 deltas (KHR_mesh_quantization). -> (GLB, codes)."""
    b = GltfBuilder()
    pos = b.add_accessor(np.eye(3, dtype=np.float32), AccessorType.VEC3, target=VERTEX, min_max=True)
    codes = np.array([[-32767, 5, 0], [12, 32767, -3]], np.int16)
    target = b.add_sparse_accessor(3, np.array([0, 2]), codes, AccessorType.VEC3, normalized=True, min_max=True)
    b.add_mesh([Primitive({"POSITION": pos}, indices=b.add_indices(np.array([[0, 1, 2]])),
                          targets=({"POSITION": target},))], weights=[0.5])
    b.add_node(Node(name="tri", mesh=0))
    b.add_scene([0])
    if extension:
        b.use_extension("KHR_mesh_quantization", required=True)
    return b.to_glb(), codes


def test_sparse_normalized_accessor_bounds_and_round_trip():
    glb, codes = _quantized_morph_glb(True)
    g = read_glb(glb)
    acc = g.document["accessors"][1]
    assert acc["normalized"] is True and acc["componentType"] == int(ComponentType.SHORT)
    # min/max are the stored integers (the normalized flag has no effect on them), the unstored zero row included
    assert acc["min"] == [-32767, 0, -3] and acc["max"] == [12, 32767, 0]
    assert g.view_bytes(acc["sparse"]["values"]["bufferView"])[0] == codes.tobytes()  # 6 bytes a row, no stride
    want = np.zeros((3, 3), np.float32)
    want[[0, 2]] = codes / 32767.0
    np.testing.assert_allclose(g.accessor(1), want, rtol=1e-7)
    np.testing.assert_array_equal(g.accessor(1, normalize=False)[[0, 2]], codes)
    with pytest.raises(ValueError, match="normalized is only"):
        GltfBuilder().add_sparse_accessor(3, np.array([1]), np.ones((1, 3), np.float32), AccessorType.VEC3,
                                          normalized=True)


def test_quantized_morph_target_needs_the_extension(validator, tmp_path):
    path = tmp_path / "q.glb"
    path.write_bytes(_quantized_morph_glb(True)[0])
    report = validate_glb(path)
    assert report.num_errors == 0 and report.num_warnings == 0, report.summary()
    path.write_bytes(_quantized_morph_glb(False)[0])  # without it, core glTF allows only FLOAT morph deltas
    codes = {i.code for i in validate_glb(path).issues if i.severity == 0}
    assert codes == {"MESH_PRIMITIVE_ATTRIBUTES_ACCESSOR_INVALID_FORMAT"}, codes
