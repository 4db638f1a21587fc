"""The signed-distance function of the built-in sample head (metres, y up, face toward +z).

The head is built from ellipsoids, capsules and a capped cylinder joined with smooth unions and
carved with smooth subtractions. All sizes live in :class:`HeadShape` (frozen, so a version string
can key the cache). Design coordinates: y = 0 at eye level, the crown at ~+0.115 m and the chin at
~-0.115 m; x is the subject's left. The package's head frame is applied afterwards.

Everything here is plain numpy on point arrays P [N, 3] -> distances [N] (negative inside).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Vec = tuple[float, float, float]


@dataclass(frozen=True)
class HeadShape:
    cranium_c: Vec = (0.0, 0.02, -0.012)
    cranium_r: Vec = (0.076, 0.095, 0.099)
    face_c: Vec = (0.0, -0.04, 0.018)
    face_r: Vec = (0.063, 0.072, 0.072)
    jaw_c: Vec = (0.0, -0.068, 0.004)
    jaw_r: Vec = (0.063, 0.045, 0.07)
    chin_c: Vec = (0.0, -0.099, 0.068)
    chin_r: Vec = (0.022, 0.017, 0.018)
    cheek_c: Vec = (0.042, -0.012, 0.05)  # mirrored to -x
    cheek_r: Vec = (0.024, 0.017, 0.022)
    brow_c: Vec = (0.0, 0.024, 0.074)
    brow_r: Vec = (0.052, 0.012, 0.016)
    nose_top: Vec = (0.0, 0.008, 0.092)
    nose_tip: Vec = (0.0, -0.034, 0.104)
    nose_bridge_r: float = 0.0075
    nose_tip_r: float = 0.0105
    ala_c: Vec = (0.0135, -0.041, 0.096)  # nostril wing, mirrored
    ala_r: float = 0.0085
    nostril_c: Vec = (0.0075, -0.047, 0.1)
    nostril_r: Vec = (0.0042, 0.0035, 0.0065)
    upper_lip_c: Vec = (0.0, -0.062, 0.089)
    upper_lip_r: Vec = (0.023, 0.008, 0.012)
    lower_lip_c: Vec = (0.0, -0.0745, 0.086)
    lower_lip_r: Vec = (0.02, 0.008, 0.0115)
    mouth_y: float = -0.0685  # mouth line (groove between the lips)
    socket_c: Vec = (0.032, 0.004, 0.088)  # eye socket, mirrored
    socket_r: Vec = (0.019, 0.012, 0.015)
    eye_c: Vec = (0.032, 0.004, 0.071)  # eyeball centre, mirrored
    eye_r: float = 0.0125
    ear_c: Vec = (0.082, -0.02, -0.016)  # mirrored
    ear_r: Vec = (0.009, 0.031, 0.019)
    ear_tilt: float = 0.25  # radians, top of the ear leans back
    concha_c: Vec = (0.0905, -0.024, -0.012)
    concha_r: Vec = (0.0055, 0.017, 0.011)
    neck_c: Vec = (0.0, 0.0, -0.028)  # x, (unused), z of the neck axis
    neck_r: float = 0.05
    neck_top: float = -0.02
    neck_bottom: float = -0.2


def _mirror(c: Vec) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(c, dtype=np.float64)
    return a, a * np.array([-1.0, 1.0, 1.0])


def ellipsoid(P: np.ndarray, c, r) -> np.ndarray:  # [N, 3] -> [N], good bound near the surface
    q = (P - np.asarray(c)) / np.asarray(r)
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm(q / np.asarray(r), axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def sphere(P: np.ndarray, c, r: float) -> np.ndarray:
    return np.linalg.norm(P - np.asarray(c), axis=-1) - r


def capsule(P: np.ndarray, a, b, ra: float, rb: float) -> np.ndarray:  # tapered: radius ra at a, rb at b
    a, b = np.asarray(a), np.asarray(b)
    ab = b - a
    t = np.clip(((P - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(P - (a + t[:, None] * ab), axis=-1) - (ra + (rb - ra) * t)


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:  # smooth union
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def ssub(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:  # a minus b, smoothly
    return -smin(-a, b, k)


def _rot_x(P: np.ndarray, c: np.ndarray, angle: float) -> np.ndarray:  # rotate about x through c
    q = P - c
    cs, sn = np.cos(angle), np.sin(angle)
    return np.stack([q[:, 0], cs * q[:, 1] - sn * q[:, 2], sn * q[:, 1] + cs * q[:, 2]], -1) + c


def part_distances(P: np.ndarray, s: HeadShape) -> dict[str, np.ndarray]:
    """Distance to each named part group (used for the SDF and for region labels)."""
    head = smin(ellipsoid(P, s.cranium_c, s.cranium_r), ellipsoid(P, s.face_c, s.face_r), 0.03)
    head = smin(head, ellipsoid(P, s.jaw_c, s.jaw_r), 0.025)
    head = smin(head, ellipsoid(P, s.chin_c, s.chin_r), 0.015)
    head = smin(head, ellipsoid(P, s.brow_c, s.brow_r), 0.02)
    for c in _mirror(s.cheek_c):
        head = smin(head, ellipsoid(P, c, s.cheek_r), 0.025)
    nose = capsule(P, s.nose_top, s.nose_tip, s.nose_bridge_r, s.nose_bridge_r * 1.1)
    nose = smin(nose, sphere(P, s.nose_tip, s.nose_tip_r), 0.008)
    for c in _mirror(s.ala_c):
        nose = smin(nose, sphere(P, c, s.ala_r), 0.006)
    lips = smin(ellipsoid(P, s.upper_lip_c, s.upper_lip_r), ellipsoid(P, s.lower_lip_c, s.lower_lip_r), 0.004)
    ears = np.full(len(P), np.inf)
    eyes = np.full(len(P), np.inf)
    sockets = np.full(len(P), np.inf)
    for sign, c in zip((1.0, -1.0), _mirror(s.ear_c), strict=True):
        Q = _rot_x(P, c, s.ear_tilt)
        ear = ellipsoid(Q, c, s.ear_r)
        cc = np.asarray(s.concha_c) * np.array([sign, 1.0, 1.0])
        ear = ssub(ear, ellipsoid(_rot_x(P, c, s.ear_tilt), cc, s.concha_r), 0.003)
        ears = np.minimum(ears, ear)
    for c in _mirror(s.socket_c):
        sockets = np.minimum(sockets, ellipsoid(P, c, s.socket_r))
    for c in _mirror(s.eye_c):
        eyes = np.minimum(eyes, sphere(P, c, s.eye_r))
    radial = np.hypot(P[:, 0] - s.neck_c[0], P[:, 2] - s.neck_c[2]) - s.neck_r
    neck = np.maximum(radial, np.maximum(s.neck_bottom - P[:, 1], P[:, 1] - s.neck_top))
    return {"head": head, "nose": nose, "lips": lips, "ears": ears, "eyes": eyes, "sockets": sockets,
            "neck": neck}


def head_sdf(P: np.ndarray, s: HeadShape) -> np.ndarray:  # [N, 3] -> [N]
    d = part_distances(P, s)
    body = smin(d["head"], d["nose"], 0.01)
    body = smin(body, d["lips"], 0.01)
    body = smin(body, d["ears"], 0.006)
    body = smin(body, d["neck"], 0.03)
    # nostrils and the mouth line are carved; then the eyes sit in their sockets
    for c in _mirror(s.nostril_c):
        body = ssub(body, ellipsoid(P, c, s.nostril_r), 0.002)
    mouth = ellipsoid(P, (0.0, s.mouth_y, s.upper_lip_c[2] + 0.004), (0.026, 0.0012, 0.014))
    body = ssub(body, mouth, 0.002)
    body = ssub(body, d["sockets"], 0.006)
    return np.minimum(body, d["eyes"])
