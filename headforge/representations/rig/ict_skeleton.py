"""ICT-FaceKit has no skeleton: regions, joints and skinning weights derived from its geometry by fixed rules.

Every rule uses the kit's documented vertex ranges (its README / FaceXModel layout) and the rig's own shapes,
measured in the head frame (metres, +y up, face toward +z, +x the subject's left):

Regions. Eyeballs, eye sockets, the eye overlays (tear film, eye blend, occlusion shells, lashes), the mouth
interior (mouth socket + gums and tongue) and teeth are their ranges. The skin (face + head-and-neck ranges)
is split: **neck** below the chin (the lowest vertex of the narrow face area); **ears** the lateral skin at ear
height: |x| >= EAR_X_FRACTION of the skin's widest |x| in the band from the jaw pivot's height - 2.5 cm to
the eye centres' height + 1.5 cm, within that band, and more than 4 cm behind the eye centres; the rest of
the face range is **face skin**, the rest of the head-and-neck range **scalp**.

Joints.
- **eyes**: centre of the least-squares sphere through each eyeball's vertices (exact for a sphere; the
  kit's eyeball is slightly elongated, its vertices 12-17 mm from that centre, which lies within 2 mm of
  the eyeball's bounding-box centre).
- **jaw**: the kit's ``jawOpen`` shape carries the lower teeth rigidly (residual ~0.2 mm). The lower teeth
  are the teeth that ``jawOpen`` moves more than JAW_MIN_MOTION (the kit's split is clean: 2,208 teeth
  vertices do not move at all, 2,204 move 1.9 cm or more); the rigid motion that best carries them
  (Kabsch) is a turn about a left-right axis, and the jaw joint is that turn's fixed point in the sagittal
  (y, z) plane, at the lower teeth's mean x.
- **root** and **neck**: the centroid of the neck's base ring (skin within NECK_BASE_BAND of its lowest point).
- **head**: midway between the two ears' centroids, at the jaw pivot's height (the skull turns on the spine
  at about the height of the jaw hinge, between the ears).
Each joint's regressor row is the minimum-norm affine combination of its supporting vertices (eyeball;
lower teeth and ears; neck base ring; ears) that reproduces it, so joints follow identity changes.

Skinning weights (rows sum to 1).
- eyeballs: rigid to their eye joint.
- jaw: for each vertex of the face skin, neck, mouth interior and teeth, the fraction of the fitted rigid jaw
  turn that best explains its ``jawOpen`` displacement, w = clamp(<d_rigid, d> / |d_rigid|^2, 0, 1), zero
  where the rigid turn moves the vertex less than JAW_MIN_MOTION; the lower teeth get exactly 1. The kit's
  own ``jawOpen`` is smooth, so these weights are smooth and fall off over the chin, cheeks and lips.
- the rest of each vertex's weight goes along the neck by height: with s = 0 at the neck base and 1 at the
  chin, root = smoothstep(1 - 2s), head = smoothstep(2s - 1), neck = the remainder; so everything above the
  chin follows the head, the torso end stays with the root, and the neck bends in between.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from headforge.errors import InputError
from headforge.representations.rig.head_rig import JOINTS, Joint, Region, affine_regressor

ICT_NUM_VERTICES = 26719


def _span(first: int, last: int) -> np.ndarray:  # inclusive vertex range, as the kit documents them
    return np.arange(first, last + 1)


FACE = _span(0, 9408)
NARROW_FACE = _span(0, 6705)
HEAD_AND_NECK = _span(9409, 11247)
SKIN = _span(0, 11247)
MOUTH_SOCKET = _span(11248, 13293)
EYE_SOCKETS = _span(13294, 14061)  # left 13294-13677, right 13678-14061
GUMS_AND_TONGUE = _span(14062, 17038)
TEETH = _span(17039, 21450)
EYEBALL_LEFT = _span(21451, 23020)  # the kit's _L side is +x, the subject's left
EYEBALL_RIGHT = _span(23021, 24590)
EYE_OVERLAYS = _span(24591, 26718)

MIN_JAW_TURN_DEG = 5.0
JAW_MIN_MOTION = 1e-3  # m
NECK_BASE_BAND = 0.01  # m
EAR_X_FRACTION = 0.8
EAR_BAND_BELOW_JAW = 0.025  # m
EAR_BAND_ABOVE_EYES = 0.015  # m
EAR_BEHIND_EYES = 0.04  # m


def sphere_centre(points: np.ndarray) -> np.ndarray:  # [N, 3] -> [3] least-squares sphere |p - c|^2 = r^2
    A = np.concatenate([2 * points, np.ones((len(points), 1))], 1)
    sol = np.linalg.lstsq(A, (points ** 2).sum(1), rcond=None)[0]
    return sol[:3]


def kabsch(P: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # [N, 3] x2 -> R [3, 3], t [3]
    """The rotation and translation minimising |R p + t - q|^2 over the point pairs."""
    pc, qc = P.mean(0), Q.mean(0)
    U, _, Vt = np.linalg.svd((P - pc).T @ (Q - qc))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    return R, qc - R @ pc


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def jaw_hinge(template: np.ndarray, jaw_delta: np.ndarray, source: Path | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> jaw joint [3], lower-teeth vertex indices, and the rigid turn (R [3, 3], t [3]) jawOpen applies to them.

    ``source`` is the file the jawOpen shape came from, named in errors."""
    moved = np.linalg.norm(jaw_delta[TEETH], axis=1)
    lower = TEETH[moved > JAW_MIN_MOTION]
    if len(lower) < 4:
        raise InputError("ICT-FaceKit's jawOpen shape does not move the lower teeth", path=source,
                         fix="restore the kit's jawOpen shape (the jaw joint is derived from it)")
    R, t = kabsch(template[lower], template[lower] + jaw_delta[lower])
    angle = np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))
    if angle < MIN_JAW_TURN_DEG:
        raise InputError(f"ICT-FaceKit's jawOpen turns the lower teeth by only {angle:.1f} degrees", path=source,
                         fix="restore the kit's jawOpen shape (the jaw joint is derived from it)")
    yz = np.linalg.solve(np.eye(2) - R[1:, 1:], t[1:])  # fixed point of the sagittal turn
    return np.array([template[lower, 0].mean(), yz[0], yz[1]]), lower, R, t


def ict_regions(template: np.ndarray, jaw_y: float, eye_y: float, eye_z: float) -> np.ndarray:
    """Region index [V] (into tuple(Region)) by the rules in the module docstring."""
    regions = np.full(len(template), -1, np.int64)
    index = {r: i for i, r in enumerate(Region)}
    for part, region in ((FACE, Region.FACE_SKIN), (HEAD_AND_NECK, Region.SCALP),
                         (MOUTH_SOCKET, Region.MOUTH_INTERIOR), (GUMS_AND_TONGUE, Region.MOUTH_INTERIOR),
                         (EYE_SOCKETS, Region.EYE_SOCKETS), (TEETH, Region.TEETH), (EYEBALL_LEFT, Region.EYES),
                         (EYEBALL_RIGHT, Region.EYES), (EYE_OVERLAYS, Region.EYE_OVERLAYS)):
        regions[part] = index[region]
    skin = template[SKIN]
    chin_y = template[NARROW_FACE, 1].min()
    band = (skin[:, 1] >= jaw_y - EAR_BAND_BELOW_JAW) & (skin[:, 1] <= eye_y + EAR_BAND_ABOVE_EYES)
    wide = np.abs(skin[:, 0]) >= EAR_X_FRACTION * np.abs(skin[band, 0]).max()
    ears = band & wide & (skin[:, 2] < eye_z - EAR_BEHIND_EYES)
    regions[SKIN[ears]] = index[Region.EARS]
    regions[SKIN[skin[:, 1] < chin_y]] = index[Region.NECK]
    return regions


def ict_skeleton(template: np.ndarray, jaw_delta: np.ndarray, source: Path | None = None
                 ) -> tuple[Tensor, tuple[Region, ...], Tensor, Tensor]:
    """template [V, 3], jawOpen delta [V, 3] (head frame, metres) -> regions [V], region names,
    joint regressor [J, V] and skinning weights [V, J] (float64), by the rules in the module docstring.
    ``source`` is the file the shapes came from, named in errors."""
    V = len(template)
    eye_left, eye_right = sphere_centre(template[EYEBALL_LEFT]), sphere_centre(template[EYEBALL_RIGHT])
    jaw, lower, R, t = jaw_hinge(template, jaw_delta, source)
    eyes = 0.5 * (eye_left + eye_right)
    regions = ict_regions(template, jaw[1], eyes[1], eyes[2])
    names = tuple(Region)
    ear_idx = np.nonzero(regions == names.index(Region.EARS))[0]
    left_ear, right_ear = ear_idx[template[ear_idx, 0] > 0], ear_idx[template[ear_idx, 0] < 0]
    if len(left_ear) < 4 or len(right_ear) < 4:
        raise InputError("could not find both ears on the ICT-FaceKit mesh",
                         path=None if source is None else source.parent / "generic_neutral_mesh.obj",
                         fix="use the kit's unmodified neutral mesh")
    head = 0.5 * (template[left_ear].mean(0) + template[right_ear].mean(0))
    head[1] = jaw[1]
    skin = template[SKIN]
    base_y = skin[:, 1].min()
    ring = SKIN[skin[:, 1] <= base_y + NECK_BASE_BAND]
    neck = template[ring].mean(0)

    points = {Joint.ROOT: neck, Joint.NECK: neck, Joint.HEAD: head, Joint.JAW: jaw,
              Joint.LEFT_EYE: eye_left, Joint.RIGHT_EYE: eye_right}
    support_idx = {Joint.ROOT: ring, Joint.NECK: ring, Joint.HEAD: ear_idx,
                   Joint.JAW: np.concatenate([lower, ear_idx]), Joint.LEFT_EYE: EYEBALL_LEFT,
                   Joint.RIGHT_EYE: EYEBALL_RIGHT}
    support = torch.zeros(len(JOINTS), V, dtype=torch.bool)
    for j, joint in enumerate(JOINTS):
        support[j, torch.from_numpy(support_idx[joint])] = True
    tv = torch.from_numpy(template)
    regressor = affine_regressor(tv, torch.tensor(np.stack([points[j] for j in JOINTS])), support)

    # jaw fraction of each vertex that jawOpen moves
    d_rigid = template @ R.T + t - template  # [V, 3]
    n2 = (d_rigid ** 2).sum(1)
    w_jaw = np.where(n2 > JAW_MIN_MOTION ** 2, (d_rigid * jaw_delta).sum(1) / np.maximum(n2, 1e-30), 0.0)
    jaw_regions = [names.index(r) for r in (Region.FACE_SKIN, Region.NECK, Region.MOUTH_INTERIOR, Region.TEETH)]
    w_jaw = np.where(np.isin(regions, jaw_regions), np.clip(w_jaw, 0.0, 1.0), 0.0)
    w_jaw[lower] = 1.0
    # along the neck by height
    chin_y = template[NARROW_FACE, 1].min()
    s = np.clip((template[:, 1] - base_y) / (chin_y - base_y), 0.0, 1.0)
    w_root, w_head = smoothstep(1 - 2 * s), smoothstep(2 * s - 1)
    w_neck = 1.0 - w_root - w_head
    W = np.zeros((V, len(JOINTS)))
    rest = 1.0 - w_jaw
    for joint, w in ((Joint.ROOT, w_root), (Joint.NECK, w_neck), (Joint.HEAD, w_head)):
        W[:, JOINTS.index(joint)] = rest * w
    W[:, JOINTS.index(Joint.JAW)] = w_jaw
    for eyeball, joint in ((EYEBALL_LEFT, Joint.LEFT_EYE), (EYEBALL_RIGHT, Joint.RIGHT_EYE)):
        W[eyeball] = 0.0
        W[eyeball, JOINTS.index(joint)] = 1.0
    return torch.from_numpy(regions), names, regressor, torch.from_numpy(W)
