"""The slow twin of the rigged GLB: glTF's own skinning and morphing, evaluated in float64 from the file.

It reads only what the GLB holds (``io.glb.read_glb``: accessors with sparse substitution, nodes, skins,
animations) and applies glTF 2.0's rules, independently of how ``rig_export`` built the file:

    morphed  = POSITION + sum_k w_k target_k.POSITION
    skinned  = sum_s sum_i WEIGHTS_s[i] * (world(mesh node)^-1 world(JOINTS_s[i]) IBM[JOINTS_s[i]]) morphed
    world    = world(mesh node) skinned            (a mesh without skin: world(node) morphed)

Node local matrices are T R S (rotation xyzw), or ``matrix``; an animation sets a node's TRS or a mesh's weights
at a key. The tests compare this with ``deform`` (the rig's own maths) for random expressions and poses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from headforge.io.glb import GlbFile


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:  # [..., 4] xyzw (normalised here) -> [..., 3, 3]
    q = np.asarray(q, np.float64)
    x, y, z, w = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                     2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                     2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1).reshape(
        *q.shape[:-1], 3, 3)


@dataclass(frozen=True)
class GlbPose:
    """Overrides of the file's rest state: node name -> TRS parts; mesh node name -> morph weights [T]."""

    rotations: Mapping[str, np.ndarray] | None = None  # node name -> [4] xyzw
    translations: Mapping[str, np.ndarray] | None = None  # node name -> [3]
    weights: Mapping[str, np.ndarray] | None = None  # mesh node name -> [T]


def _local(node: dict, rotation=None, translation=None) -> np.ndarray:  # -> [4, 4]
    if "matrix" in node:
        return np.array(node["matrix"], np.float64).reshape(4, 4).T
    m = np.eye(4)
    r = node.get("rotation", [0, 0, 0, 1]) if rotation is None else rotation
    s = np.array(node.get("scale", [1, 1, 1]), np.float64)
    m[:3, :3] = quat_xyzw_to_matrix(np.array(r, np.float64)) * s[None, :]
    m[:3, 3] = node.get("translation", [0, 0, 0]) if translation is None else translation
    return m


def world_matrices(doc: dict, pose: GlbPose = GlbPose()) -> np.ndarray:
    """[num nodes, 4, 4] world matrices of every node under the default scene (others: identity)."""
    nodes = doc["nodes"]
    rot, tra = pose.rotations or {}, pose.translations or {}
    out = np.tile(np.eye(4), (len(nodes), 1, 1))
    stack = [(n, np.eye(4)) for n in doc["scenes"][doc.get("scene", 0)]["nodes"]]
    while stack:
        i, parent = stack.pop()
        node = nodes[i]
        name = node.get("name")
        out[i] = parent @ _local(node, rot.get(name), tra.get(name))
        stack += [(c, out[i]) for c in node.get("children", [])]
    return out


def evaluate_glb(glb: GlbFile, pose: GlbPose = GlbPose()) -> dict[str, list[np.ndarray]]:
    """Mesh node name -> world positions [N, 3] (float64) of each primitive, posed and morphed as glTF says."""
    doc = glb.document
    worlds = world_matrices(doc, pose)
    out: dict[str, list[np.ndarray]] = {}
    weights_of = pose.weights or {}
    for i, node in enumerate(doc["nodes"]):
        if "mesh" not in node:
            continue
        mesh = doc["meshes"][node["mesh"]]
        w = np.asarray(weights_of.get(node.get("name"), mesh.get("weights", [])), np.float64)
        posed = []
        for prim in mesh["primitives"]:
            p = glb.accessor(prim["attributes"]["POSITION"]).astype(np.float64)
            targets = prim.get("targets", [])
            if len(w) != len(targets) and targets:
                raise ValueError(f"node {node.get('name')}: {len(w)} weights for {len(targets)} targets")
            for wk, t in zip(w, targets, strict=False):
                if wk != 0 and "POSITION" in t:
                    p = p + wk * glb.accessor(t["POSITION"]).astype(np.float64)
            ph = np.concatenate([p, np.ones((len(p), 1))], 1)  # [N, 4]
            if "skin" in node:
                skin = doc["skins"][node["skin"]]
                ibm = glb.accessor(skin["inverseBindMatrices"]).astype(np.float64)  # [J, 4, 4]
                joint_mats = np.linalg.inv(worlds[i]) @ worlds[skin["joints"]] @ ibm  # [J, 4, 4]
                blended = np.zeros((len(p), 4, 4))
                s = 0
                while f"JOINTS_{s}" in prim["attributes"]:
                    jn = glb.accessor(prim["attributes"][f"JOINTS_{s}"]).astype(np.int64)  # [N, 4]
                    wn = glb.accessor(prim["attributes"][f"WEIGHTS_{s}"]).astype(np.float64)  # [N, 4]
                    blended += np.einsum("nk,nkrc->nrc", wn, joint_mats[jn])
                    s += 1
                ph = np.einsum("nrc,nc->nr", blended, ph)
            posed.append((ph @ worlds[i].T)[:, :3])
        out[node.get("name", f"node{i}")] = posed
    return out


def animation_key(glb: GlbFile, animation: int, key: int) -> GlbPose:
    """The pose of animation ``animation`` at its ``key``-th keyframe (every sampler keyed alike; LINEAR/STEP)."""
    doc = glb.document
    anim = doc["animations"][animation]
    rot, tra, wts = {}, {}, {}
    for ch in anim["channels"]:
        sampler = anim["samplers"][ch["sampler"]]
        values = glb.accessor(sampler["output"]).astype(np.float64)
        n_keys = glb.document["accessors"][sampler["input"]]["count"]
        name = doc["nodes"][ch["target"]["node"]].get("name")
        path = ch["target"]["path"]
        if path == "weights":
            wts[name] = values.reshape(n_keys, -1)[key]
        elif path == "rotation":
            rot[name] = values[key]
        elif path == "translation":
            tra[name] = values[key]
        else:
            raise ValueError(f"animation_key: path {path} is not evaluated by this twin")
    return GlbPose(rot, tra, wts)


def animation_times(glb: GlbFile, animation: int) -> list[np.ndarray]:
    """The input times [K] of every sampler of an animation."""
    anim = glb.document["animations"][animation]
    return [glb.accessor(s["input"]).astype(np.float64).reshape(-1) for s in anim["samplers"]]
