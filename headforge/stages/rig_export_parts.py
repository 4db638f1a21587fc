"""The maths of the rigged GLB (``rig_export.py``): mesh parts, unwelded vertices, skin weights, sparse deltas.

Conventions: rig frame = the head frame (metres, +y up, face toward +z), which is glTF's axes already. Rig
faces carry per-corner UVs (OBJ convention, v up); glTF vertices carry one UV each, so a part's vertices are
the unique (rig vertex, corner UV) pairs of its faces (``PartGeometry.source`` maps them back to rig vertices).
glTF's texture coordinate is (u, 1 - v). Quaternions here are glTF's xyzw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from headforge.representations.mesh import TexturedMesh
from headforge.representations.rig.head_rig import JOINTS, HeadRig, Joint, Region

EYE_PARTS = {"left_eye_mesh": Joint.LEFT_EYE, "right_eye_mesh": Joint.RIGHT_EYE}
TEETH_PARTS = {"upper_teeth_mesh": Joint.HEAD, "lower_teeth_mesh": Joint.JAW}
HEAD_MESH = "head_mesh"
RIGID_WEIGHT = 1 - 1e-6  # a part is split out rigidly when every vertex has at least this weight on its joint
DROPPED_REGIONS = (Region.EYE_OVERLAYS,)  # transparent shells outside the atlas: an opaque copy would hide the eyes


@dataclass(frozen=True)
class PartGeometry:
    """One exported mesh: unwelded vertices, their rig vertex, UVs, triangles (textured / plain)."""

    name: str
    joint: Joint | None  # None: skinned by the whole skin; else rigidly attached to this joint
    source: np.ndarray  # [N] int64 rig vertex of each glTF vertex
    uv: np.ndarray  # [N, 2] float32 glTF texture coordinates (u, 1 - v); 0 for plain-only vertices
    textured: np.ndarray  # [Ft, 3] int64 triangles into the part's vertices, drawn with the baked texture
    plain: np.ndarray  # [Fp, 3] int64 triangles outside the atlas, drawn with a plain colour


def face_parts(rig: HeadRig, split: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """-> (part name -> rig faces [F_p] (int64) it draws, dropped [F] bool: faces no part draws). With ``split``,
    eyes and teeth are split off when they are bound rigidly to one joint (teeth: upper = dominant joint head,
    lower = jaw); everything else is the head mesh."""
    faces = rig.faces.numpy()
    weights = rig.skin_weights.double().numpy()  # [V, J]
    dominant = weights.argmax(1)  # [V]
    owner = np.full(len(faces), HEAD_MESH, dtype=object)
    for name, region_joints in ((Region.EYES, EYE_PARTS), (Region.TEETH, TEETH_PARTS)):
        if not split or name not in rig.region_names:
            continue
        in_region = rig.region_mask(name).numpy()[faces].all(1)
        for part, joint in region_joints.items():
            j = JOINTS.index(joint)
            mine = in_region & (dominant[faces] == j).all(1)
            verts = np.unique(faces[mine])
            if len(verts) and weights[verts, j].min() >= RIGID_WEIGHT:
                owner[mine] = part
    dropped = np.zeros(len(faces), dtype=bool)
    for region in DROPPED_REGIONS:
        if region in rig.region_names:
            dropped |= rig.region_mask(region).numpy()[faces].all(1)
    out = {}
    for part in (HEAD_MESH, *EYE_PARTS, *TEETH_PARTS):
        ids = np.nonzero(owner == part)[0]
        if len(ids):
            out[part] = ids
    return out, dropped


def part_geometry(rig: HeadRig, name: str, faces: np.ndarray, atlas_faces: np.ndarray, atlas_uvs: np.ndarray,
                  dropped: np.ndarray) -> PartGeometry:
    """Unweld the part's faces [F_p] (rig face ids): faces in the atlas (``atlas_faces`` [Fk] with ``atlas_uvs``
    [Fk, 3, 2], OBJ convention) are textured; the others are plain unless ``dropped`` [F] (rig faces left out)."""
    row = np.full(rig.faces.shape[0], -1, dtype=np.int64)
    row[atlas_faces] = np.arange(len(atlas_faces))
    faces = faces[~dropped[faces]]
    tex = faces[row[faces] >= 0]
    plain = faces[row[faces] < 0]
    rig_faces = rig.faces.numpy()
    # textured corners: key (vertex, uv); plain corners: key (vertex, nan) so they never merge with a UV vertex
    corner_v = np.concatenate([rig_faces[tex].reshape(-1), rig_faces[plain].reshape(-1)])
    corner_uv = np.concatenate([atlas_uvs[row[tex]].reshape(-1, 2).astype(np.float32),
                                np.full((3 * len(plain), 2), -1.0, np.float32)])
    key = np.concatenate([corner_v[:, None].astype(np.float64), corner_uv.astype(np.float64)], 1)
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    source = uniq[:, 0].astype(np.int64)
    uv = uniq[:, 1:].astype(np.float32)
    uv = np.where(uv < 0, np.float32(0), np.stack([uv[:, 0], 1 - uv[:, 1]], 1)).astype(np.float32)
    tri = inverse.reshape(-1, 3)
    joint = EYE_PARTS.get(name) or TEETH_PARTS.get(name)
    return PartGeometry(name, joint, source, uv, tri[:len(tex)], tri[len(tex):])


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals [V, 3] float64 (``TexturedMesh.vertex_normals``) of vertices [V, 3] over
    triangles [F, 3]; vertices without a non-degenerate triangle get +z (glTF normals must be unit)."""
    n = TexturedMesh(torch.from_numpy(vertices.astype(np.float64)), torch.from_numpy(faces)).vertex_normals().numpy()
    return np.where(np.linalg.norm(n, axis=1, keepdims=True) > 0.5, n, np.array([0.0, 0.0, 1.0]))


def normal_deltas(neutral: np.ndarray, basis: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """NORMAL morph deltas [K, V, 3]: the unit normals of neutral [V, 3] + basis[k] [V, 3] minus the neutral's,
    so N + delta_k is exactly the normal of shape k at weight 1 (glTF blends them linearly, then normalises)."""
    rest = vertex_normals(neutral, faces)
    return np.stack([vertex_normals(neutral + b, faces) - rest for b in basis])


def top_influences(weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Skin weights [N, J] -> (joints [N, 4 * S] uint8, weights [N, 4 * S] float32) with S = ceil(k / 4) sets:
    the k largest per vertex, renormalised to sum to 1 (the float32 largest takes the rounding remainder),
    zero-weight slots point at joint 0 (glTF asks unused slots to be 0)."""
    N, J = weights.shape
    width = 4 * -(-k // 4)
    order = np.argsort(-weights, axis=1, kind="stable")[:, :min(k, J)]  # [N, k']
    w = np.take_along_axis(weights, order, 1).astype(np.float64)
    w = np.where(w > 0, w, 0.0)
    w /= w.sum(1, keepdims=True)
    if J > 256:
        raise ValueError(f"top_influences: {J} joints do not fit uint8 joint indices")
    joints = np.zeros((N, width), np.uint8)
    out = np.zeros((N, width), np.float32)
    joints[:, :order.shape[1]] = np.where(w > 0, order, 0)
    out[:, :order.shape[1]] = w.astype(np.float32)
    rest = out[:, 1:].astype(np.float64).sum(1)
    out[:, 0] = (1.0 - rest).astype(np.float32)  # column 0 holds the largest weight
    return joints, out


def sparse_delta(delta: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """A morph delta [N, 3] -> (indices [S] increasing, values [S, 3] float32) of the vertices moving more
    than ``epsilon`` (max-abs component); a target that moves nothing keeps index 0 with a zero delta (a
    sparse accessor needs count >= 1)."""
    moving = np.nonzero(np.abs(delta).max(1) > epsilon)[0]
    if len(moving) == 0:
        return np.zeros(1, np.int64), np.zeros((1, 3), np.float32)
    return moving, delta[moving].astype(np.float32)


SHORT_MAX = 32767  # KHR_mesh_quantization's normalized SHORT: value = max(c / 32767, -1)
QUANT_STEP = 1.0 / SHORT_MAX  # 30.5 um for a POSITION delta in metres; rounding errs by at most half of it


def quantize_delta(delta: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray] | None:
    """A morph delta [N, 3] (float64, |components| <= 1) -> (indices [S] increasing, codes [S, 3] int16) of the
    vertices moving more than ``epsilon`` whose rounded code c = round(delta * 32767) is not all zero (deltas
    below half a step quantise to 0 and are dropped); glTF decodes c / 32767, within half a step (15.3 um per
    metre of range) of the delta. None when a component lies outside [-1, 1] (normalized SHORT cannot hold it);
    a target that keeps nothing keeps index 0 with a zero code (a sparse accessor needs count >= 1)."""
    if not np.all(np.abs(delta) <= 1.0):
        return None
    codes = np.rint(delta * SHORT_MAX).astype(np.int16)  # round to nearest (ties to even: still half a step)
    keep = np.nonzero((np.abs(delta).max(1) > epsilon) & codes.any(1))[0]
    if len(keep) == 0:
        return np.zeros(1, np.int64), np.zeros((1, 3), np.int16)
    return keep, codes[keep]


def axis_angle_to_quat_xyzw(r: np.ndarray) -> np.ndarray:
    """[..., 3] axis * angle -> [..., 4] unit quaternions xyzw (float64)."""
    t = np.linalg.norm(r, axis=-1, keepdims=True)
    small = t < 1e-8
    s = np.where(small, 0.5 - t * t / 48, np.sin(t / 2) / np.where(small, 1.0, t))
    return np.concatenate([r * s, np.cos(t / 2)], -1)


def continuous_quats(q: np.ndarray) -> np.ndarray:
    """[K, 4] -> the same rotations with signs flipped so consecutive keys lie in one hemisphere (slerp then
    takes the short way between every pair of keys)."""
    q = q.copy()
    for k in range(1, len(q)):
        if float(q[k] @ q[k - 1]) < 0:
            q[k] = -q[k]
    return q


def rest_joints(rig: HeadRig, identity_vertices: np.ndarray) -> np.ndarray:
    """[J, 3] rest joints of the identity shape [V, 3] (offsets excluded, as ``deform`` does)."""
    return rig.joint_regressor.double().numpy() @ identity_vertices.astype(np.float64)
