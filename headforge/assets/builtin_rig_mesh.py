"""The built-in rig's mesh: the sample head re-cut so that its mouth and eyes can move.

Starting from :func:`headforge.assets.sample_head.load_sample_head` (one closed genus-0 surface in the head
frame, metres), three edits, all in the sample head's design coordinates (:class:`HeadShape`; the head frame
is a pure translation of them, recovered by :func:`design_offset`):

1. **Lip seam.** The lips are two ellipsoids fused along ``mouth_y``. Every vertex in the lip box (|x| < CUT_X,
   z > CUT_Z, within CUT_DY of the mouth line) shared by a face whose centroid lies below ``mouth_y`` and a face
   above it is duplicated for the faces below, so the mesh opens into a slit along the mouth line that closes at
   the mouth corners (|x| >= CUT_X stays joined).
2. **Eyeballs.** The faces whose corners all lie on the sample head's eyeball caps (label ``eyes``) are
   removed and replaced by two closed icospheres of radius ``eye_r`` about ``eye_c`` (separate components,
   so the eye joints can turn them without tearing the lids).
3. **Mouth interior.** A closed ellipsoid bag (faces turned inward, so its far wall shows through the slit)
   behind the lips and a tongue (a closed ellipsoid lying in the bag), both separate components.

Faces are put in a canonical order (:func:`canonical_faces`). UVs stay the sample head's per-corner UVs; the new
parts take the UV of the nearest original vertex (the eyeballs keep their painted iris and pupil, the mouth parts
the lip colour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from headforge.assets.head_sdf import HeadShape, head_sdf
from headforge.assets.sample_head import SampleHead

CUT_X = 0.0195  # m, half-width of the lip seam (the slit closes beyond it, at the mouth corners)
CUT_Z = 0.075  # m, design z in front of which the seam is cut
CUT_DY = 0.004  # m, faces within this of the mouth line may be cut
BAG_C = (0.0, 0.0, 0.054)  # mouth bag centre: x, offset from mouth_y, z (design)
BAG_R = (0.02, 0.0105, 0.021)
TONGUE_C = (0.0, -0.0055, 0.052)
TONGUE_R = (0.0145, 0.0042, 0.02)
INNER_LOWER_LIP = (65, 66, 67)  # iBUG-68 points (0-based) on the lower lip's inner edge


class Part:
    """Integer part labels of the rig mesh's vertices (before they become HeadRig regions)."""

    FACE, SCALP, EARS, NECK, EYE_LEFT, EYE_RIGHT, BAG, TONGUE = range(8)


@dataclass(frozen=True)
class RigMesh:
    vertices: np.ndarray  # [V, 3] float64 head frame, metres
    faces: np.ndarray  # [F, 3] int64, counter-clockwise from outside
    uvs: np.ndarray  # [F, 3, 2] float32 per corner
    parts: np.ndarray  # [V] int64 Part
    lower_lip: np.ndarray  # [V] bool: vertices on the lower side of the lip seam (the duplicates and below)
    seam: np.ndarray  # [V] bool: vertices of the cut (both copies)
    offset: np.ndarray  # [3] design = head frame + offset
    landmark_ids: np.ndarray  # [68] int64 iBUG vertex ids on the new mesh


def design_offset(vertices: np.ndarray, s: HeadShape, iterations: int = 8) -> np.ndarray:
    """The translation t with head_sdf(v + t) ~ 0 for the sample head's head-frame vertices (Gauss-Newton on a
    subset, numerical SDF gradients). -> [3]."""
    sub = vertices[:: max(1, len(vertices) // 3000)]
    # start: the crown and the nose tip's design heights against the mesh's highest and most forward points
    top = s.cranium_c[1] + s.cranium_r[1]
    front = s.nose_tip[2] + s.nose_tip_r
    t = np.array([0.0, top - vertices[:, 1].max(), front - vertices[:, 2].max()])
    h = 1e-4
    for _ in range(iterations):
        P = sub + t
        r = head_sdf(P, s)
        J = np.stack([(head_sdf(P + h * e, s) - head_sdf(P - h * e, s)) / (2 * h) for e in np.eye(3)], 1)
        t = t - np.linalg.lstsq(J, r, rcond=None)[0]
    return t


def _icosphere(centre: np.ndarray, radii: np.ndarray, subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    ico = trimesh.creation.icosphere(subdivisions=subdivisions)
    return np.asarray(ico.vertices) * radii + centre, np.asarray(ico.faces, dtype=np.int64)


def cut_lips(V: np.ndarray, F: np.ndarray, P: np.ndarray, s: HeadShape
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Duplicate the seam vertices for the lower-lip faces. V [V, 3] head frame, P design positions.
    -> vertices, faces, source index of every new vertex [V'], seam mask [V']."""
    c = P[F].mean(1)  # [F, 3]
    below = c[:, 1] < s.mouth_y
    used_below = np.zeros(len(V), bool)
    used_below[F[below].ravel()] = True
    used_above = np.zeros(len(V), bool)
    used_above[F[~below].ravel()] = True
    inside = (np.abs(P[:, 0]) < CUT_X) & (P[:, 2] > CUT_Z) & (np.abs(P[:, 1] - s.mouth_y) < CUT_DY)
    dup = np.nonzero(used_below & used_above & inside)[0]
    new_id = np.arange(len(V))
    new_id[dup] = len(V) + np.arange(len(dup))
    F2 = F.copy()
    F2[below] = new_id[F[below]]
    source = np.concatenate([np.arange(len(V)), dup])
    seam = np.zeros(len(source), bool)
    seam[dup] = True
    seam[len(V):] = True
    return V[source], F2, source, seam


def build_rig_mesh(head: SampleHead, s: HeadShape) -> RigMesh:
    m = head.mesh
    V0 = m.vertices.double().numpy()
    F0 = m.faces.numpy().astype(np.int64)
    corner_uv = m.uvs.numpy()[m.faces_uv.numpy()]  # [F, 3, 2]
    names = m.label_names
    lab0 = m.vertex_labels.numpy()
    offset = design_offset(V0, s)
    V, F, source, seam = cut_lips(V0, F0, V0 + offset, s)
    lab = lab0[source]
    P = V + offset
    lower = seam & (np.arange(len(V)) >= len(V0))
    lower |= ~seam & (P[:, 1] < s.mouth_y)

    # eyeballs: drop the faces on the painted caps, add closed spheres
    is_eye = lab == names.index("eyes")
    keep = ~is_eye[F].all(1)
    F, corner_uv = F[keep], corner_uv[keep]
    parts = np.full(len(V), Part.FACE)
    for label, part in (("scalp", Part.SCALP), ("ears", Part.EARS), ("neck", Part.NECK)):
        parts[lab == names.index(label)] = part
    eye_src = np.nonzero(is_eye)[0]
    eye_src = eye_src[np.isin(eye_src, np.unique(F0[is_eye[F0].all(1)]))]
    lip_src = np.nonzero(lab == names.index("lips"))[0]
    lip_uv_src = lip_src[np.argmin(np.abs(P[lip_src, 1] - s.mouth_y) + np.abs(P[lip_src, 0]))]
    blocks_v, blocks_f, blocks_uv, blocks_p = [V], [F], [corner_uv], [parts]
    n = len(V)
    orig_uv = m.uvs.numpy()[m.faces_uv.numpy()]
    orig_vert_uv = np.zeros((len(V0), 2), np.float32)
    orig_vert_uv[F0.ravel()] = orig_uv.reshape(-1, 2)
    for sign, part in ((1.0, Part.EYE_LEFT), (-1.0, Part.EYE_RIGHT)):
        centre = np.array(s.eye_c) * np.array([sign, 1.0, 1.0]) - offset
        ev, ef = _icosphere(centre, np.full(3, s.eye_r), 3)
        mine = eye_src[np.sign(V0[eye_src, 0] + offset[0]) == sign]
        near = mine[np.argmin(((ev[:, None] - V0[mine][None]) ** 2).sum(-1), 1)]
        blocks_v.append(ev)
        blocks_f.append(ef + n)
        blocks_uv.append(orig_vert_uv[near][ef])
        blocks_p.append(np.full(len(ev), part))
        n += len(ev)
    for c, r, part, flip in ((BAG_C, BAG_R, Part.BAG, True), (TONGUE_C, TONGUE_R, Part.TONGUE, False)):
        centre = np.array([c[0], s.mouth_y + c[1], c[2]]) - offset
        pv, pf = _icosphere(centre, np.asarray(r), 2)
        if flip:
            pf = pf[:, ::-1].copy()  # faces inward: the bag is seen from inside
        blocks_v.append(pv)
        blocks_f.append(pf + n)
        blocks_uv.append(np.broadcast_to(orig_vert_uv[source[lip_uv_src]], (len(pf), 3, 2)))
        blocks_p.append(np.full(len(pv), part))
        n += len(pv)
    V = np.concatenate(blocks_v)
    F = np.concatenate(blocks_f)
    parts = np.concatenate(blocks_p)
    used = np.zeros(len(V), bool)
    used[F.ravel()] = True  # the removed eye caps' inner vertices are dropped
    remap = np.cumsum(used) - 1
    pad = len(V) - len(lower)
    lower = np.concatenate([lower, np.zeros(pad, bool)])[used]
    seam = np.concatenate([seam, np.zeros(pad, bool)])[used]
    V, F, parts = V[used], remap[F], parts[used]
    F, uvs = canonical_faces(F, np.concatenate(blocks_uv).astype(np.float32))
    P = V + offset
    # iBUG-68: the nearest outer-surface vertex to each of the sample head's landmark vertices, on the lower
    # lip's side of the seam for the inner lower lip (65-67), on the upper side for every other point
    outer = np.isin(parts, [Part.FACE, Part.EYE_LEFT, Part.EYE_RIGHT])
    lm = V0[head.landmark_vertex_ids.numpy()]
    ids = np.zeros(len(lm), np.int64)
    for i, p in enumerate(lm):
        cand = np.nonzero(outer & (lower if i in INNER_LOWER_LIP else ~(lower & seam)))[0]
        ids[i] = cand[np.argmin(((V[cand] - p) ** 2).sum(-1))]
    inside = head_sdf(P[parts == Part.BAG], s).max()
    if inside > -5e-4:
        raise RuntimeError(f"built-in rig: the mouth bag pokes out of the head ({inside * 1000:.2f} mm)")
    return RigMesh(V, F, uvs, parts, lower, seam, offset, ids)


def canonical_faces(F: np.ndarray, uvs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Faces [F, 3] (and their corner UVs [F, 3, 2]) rotated to start at their smallest index (orientation kept)
    and sorted: the topology (and its hash, which keys the generated MediaPipe embedding) then depends only on
    the triangle set, not on the order in which the sample head's mesher emitted them."""
    k = np.argmin(F, 1)
    cols = (k[:, None] + np.arange(3)[None]) % 3
    rows = np.arange(len(F))[:, None]
    F, uvs = F[rows, cols], uvs[rows, cols]
    order = np.lexsort(F.T[::-1])
    return F[order], uvs[order]
