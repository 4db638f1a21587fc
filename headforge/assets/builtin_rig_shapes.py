"""The built-in rig's 52 ARKit shapes and its jaw weights: smooth procedural displacement fields.

Every field is a plain function of design positions P [N, 3] (the sample head's :class:`HeadShape` coordinates:
metres, y = 0 at eye level, face toward +z, +x the subject's left), the lower-lip flag of each vertex (the lip
seam of :mod:`headforge.assets.builtin_rig_mesh` splits the lips, so a lip shape can move one lip and not the other)
and the vertex's part. A field is a sum of terms, each a displacement vector times a compact weight
(``bump``: (1 - r^2)^3 inside an ellipsoid, exactly zero outside; ``ramp``: smoothstep bands), so each shape
moves only its named area and is exactly zero beyond its support. "Left" is the subject's left (+x); a Left
shape is the mirror image of its Right twin (the fields are built from one function with a side sign).

Amplitudes (metres at weight 1) are chosen to read clearly on the rig sheet; the jaw shapes use the jaw skinning
weights (:func:`jaw_weight`), so ``jawOpen`` is the jaw joint's turn by JAW_OPEN_RAD, linearised.
Eyelid shapes move the lids over the eyeball and are pushed back outside it (EYELID_CLEARANCE); the eyeballs
themselves never move in a shape (the eye joints turn them), so ``eyeLook*`` move the lids following the gaze.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from headforge.assets.builtin_rig_mesh import CUT_X, Part
from headforge.assets.head_sdf import HeadShape
from headforge.representations.rig.arkit import ArkitShape as A

JAW_PIVOT = (0.0, -0.032, -0.002)  # design position of the jaw hinge (in front of the ears, below them)
JAW_BAND = 0.45  # radians about the hinge over which the jaw weight falls from 1 to 0 across the cheeks
JAW_OPEN_RAD = 0.3  # jawOpen turns the jaw this far (about 17 degrees), linearised
EYELID_CLEARANCE = 0.0008  # m: lids stay this far outside the eyeball
LIP_Z = 0.085  # design z of the lips' sides (mouth corners)


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def ramp(v: np.ndarray, a: float, b: float) -> np.ndarray:  # 0 below a, 1 above b, smooth between
    return smoothstep((v - a) / (b - a))


def bump(P: np.ndarray, c, r) -> np.ndarray:  # [N, 3] -> [N], 1 at c, exactly 0 outside the ellipsoid (c, r)
    q = ((P - np.asarray(c)) / np.asarray(r)) ** 2
    return np.clip(1.0 - q.sum(1), 0.0, None) ** 3


def lowerness(P: np.ndarray, lower: np.ndarray, s: HeadShape, soft_width: float = 0.012) -> np.ndarray:
    """[N] in [0, 1]: how much a vertex belongs to the lower lip / lower face. Along the cut seam it is the
    vertex's side (sharp, the lips are separate there); toward the mouth corners and away from the mouth it
    blends into a smooth function of height about the mouth line."""
    x, y, z = np.abs(P[:, 0]), P[:, 1], P[:, 2]
    near = (1 - ramp(x, CUT_X - 0.006, CUT_X)) * (1 - ramp(np.abs(y - s.mouth_y), 0.008, 0.016)) * ramp(z, 0.065, 0.075)
    soft = smoothstep((s.mouth_y - y) / soft_width + 0.5)
    return near * lower + (1 - near) * soft


def jaw_weight(P: np.ndarray, lower: np.ndarray, parts: np.ndarray, s: HeadShape) -> np.ndarray:  # -> [N]
    """Share of the jaw joint in each vertex's skinning. Face skin and neck: the angle below the hinge,
    relative to the mouth line's, blended over JAW_BAND radians (sharp along the lip seam), faded behind the
    hinge and down the throat; the mouth bag by height about the mouth line; the tongue 1; the rest 0."""
    j = np.asarray(JAW_PIVOT)
    phi = np.arctan2(j[1] - P[:, 1], P[:, 2] - j[2])  # angle below the forward horizontal through the hinge
    phi_m = np.arctan2(j[1] - s.mouth_y, LIP_Z - j[2])
    soft = smoothstep((phi - phi_m) / JAW_BAND + 0.5)
    x, y, z = np.abs(P[:, 0]), P[:, 1], P[:, 2]
    near = (1 - ramp(x, CUT_X - 0.006, CUT_X)) * (1 - ramp(np.abs(y - s.mouth_y), 0.008, 0.016)) * ramp(z, 0.065, 0.075)
    w = near * lower + (1 - near) * soft
    chin_y = s.chin_c[1] - s.chin_r[1]
    w = w * ramp(z, j[2] + 0.005, j[2] + 0.04) * ramp(y, chin_y - 0.03, chin_y - 0.005)
    w = np.where(np.isin(parts, [Part.FACE, Part.NECK]), w, 0.0)
    w = np.where(parts == Part.BAG, smoothstep((s.mouth_y - y) / 0.012 + 0.5), w)
    return np.where(parts == Part.TONGUE, 1.0, w)


def _rodrigues_x(angle: float) -> np.ndarray:
    c, sn = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -sn], [0, sn, c]])


# ------------------------------------------------------------------------------------------ field pieces
class Ctx:
    """What a field needs: design positions, lower-lip flag, jaw weight, parts, the head's design points."""

    def __init__(self, P: np.ndarray, lower: np.ndarray, parts: np.ndarray, s: HeadShape):
        self.P, self.s, self.parts = P, s, parts
        self.skin = (parts == Part.FACE).astype(np.float64)
        self.low = lowerness(P, lower.astype(np.float64), s)
        self.jaw = jaw_weight(P, lower.astype(np.float64), parts, s)

    def term(self, weight: np.ndarray, vec) -> np.ndarray:  # skin-only displacement weight * vec -> [N, 3]
        return (self.skin * weight)[:, None] * np.asarray(vec, dtype=np.float64)

    def corner(self, sx: float) -> tuple[float, float, float]:
        return (sx * 0.0235, self.s.mouth_y, LIP_Z)

    def lids(self, sx: float) -> tuple[np.ndarray, np.ndarray]:  # upper- and lower-lid weights [N]
        s, P = self.s, self.P
        ex, ey = sx * s.eye_c[0], s.eye_c[1]
        dy = P[:, 1] - ey
        lat = 1 - ramp(np.abs(P[:, 0] - ex), 0.012, 0.02)
        front = ramp(P[:, 2], 0.068, 0.076)
        upper = ramp(dy, -0.002, 0.0015) * (1 - ramp(dy, 0.007, 0.015)) * lat * front
        lower = ramp(-dy, -0.002, 0.0015) * (1 - ramp(-dy, 0.005, 0.011)) * lat * front
        return upper, lower

    def outside_eye(self, d: np.ndarray, sx: float) -> np.ndarray:  # push moved lid vertices off the eyeball
        c = np.array(self.s.eye_c) * np.array([sx, 1.0, 1.0])
        q = self.P + d - c
        r = np.linalg.norm(q, axis=1)
        rmin = self.s.eye_r + EYELID_CLEARANCE
        moved = np.linalg.norm(d, axis=1) > 0
        push = moved & (r < rmin) & (self.skin > 0)
        d[push] += q[push] * (rmin / np.maximum(r[push], 1e-9) - 1)[:, None]
        return d


def _jaw_turn(c: Ctx, angle: float) -> np.ndarray:
    rel = c.P - np.asarray(JAW_PIVOT)
    return c.jaw[:, None] * (rel @ (_rodrigues_x(angle) - np.eye(3)).T)


def _eye(c: Ctx, sx: float, upper_vec, lower_vec) -> np.ndarray:
    up, lo = c.lids(sx)
    return c.outside_eye(c.term(up, upper_vec) + c.term(lo, lower_vec), sx)


def _sided(sx: float) -> dict[str, Callable[[Ctx], np.ndarray]]:
    """The shapes with a side, for side sign sx (+1: the subject's left, +x)."""
    def lips(c: Ctx, upper_vec, lower_vec, r=(0.016, 0.014, 0.02)) -> np.ndarray:  # one half of both lips
        w = bump(c.P, c.corner(sx), r) * ramp(sx * c.P[:, 0], -0.006, 0.004)
        return c.term(w * (1 - c.low), upper_vec) + c.term(w * c.low, lower_vec)

    def at_corner(c: Ctx, vec, r=(0.02, 0.02, 0.025)) -> np.ndarray:
        return c.term(bump(c.P, c.corner(sx), r), vec)

    out = {
        "eyeBlink": lambda c: _eye(c, sx, (0, -0.0095, 0.0015), (0, 0.0032, 0.0008)),
        "eyeLookDown": lambda c: _eye(c, sx, (0, -0.0025, 0.0005), (0, -0.0015, 0)),
        "eyeLookIn": lambda c: _eye(c, sx, (-sx * 0.0015, 0, 0), (-sx * 0.0012, 0, 0)),
        "eyeLookOut": lambda c: _eye(c, sx, (sx * 0.0015, 0, 0), (sx * 0.0012, 0, 0)),
        "eyeLookUp": lambda c: _eye(c, sx, (0, 0.002, 0), (0, 0.001, 0)),
        "eyeSquint": lambda c: _eye(c, sx, (0, -0.0012, 0), (0, 0.0025, 0.0005))
        + c.term(bump(c.P, (sx * (c.s.eye_c[0] + 0.004), c.s.eye_c[1] - 0.02, 0.075), (0.018, 0.012, 0.02)),
                 (0, 0.0018, 0.0005)),
        "eyeWide": lambda c: _eye(c, sx, (0, 0.003, 0.0005), (0, -0.001, 0)),
        "mouthSmile": lambda c: at_corner(c, (sx * 0.003, 0.0055, -0.002)),
        "mouthFrown": lambda c: at_corner(c, (sx * 0.001, -0.005, -0.0005)),
        "mouthDimple": lambda c: at_corner(c, (sx * 0.0025, 0.0, -0.004)),
        "mouthStretch": lambda c: at_corner(c, (sx * 0.0055, -0.002, -0.0015)),
        "mouthPress": lambda c: lips(c, (0, -0.0012, -0.0015), (0, 0.0015, -0.0015)),
        "mouthLowerDown": lambda c: lips(c, (0, 0, 0), (0, -0.0045, 0.0005)),
        "mouthUpperUp": lambda c: lips(c, (0, 0.0045, 0.0005), (0, 0, 0)),
        "browDown": lambda c: c.term(bump(c.P, (sx * 0.03, 0.024, 0.085), (0.028, 0.016, 0.03)),
                                     (-sx * 0.0015, -0.0045, 0.0008)),
        "browOuterUp": lambda c: c.term(bump(c.P, (sx * 0.046, 0.026, 0.075), (0.02, 0.018, 0.03)),
                                        (0, 0.005, 0)),
        "cheekSquint": lambda c: c.term(bump(c.P, (sx * 0.04, -0.012, 0.072), (0.02, 0.016, 0.025)),
                                        (0, 0.003, 0.001)),
        "noseSneer": lambda c: c.term(bump(c.P, (sx * 0.012, -0.03, 0.095), (0.012, 0.02, 0.02)),
                                      (sx * 0.0008, 0.0035, 0.0005)),
    }
    return out


def _central(s: HeadShape) -> dict[str, Callable[[Ctx], np.ndarray]]:
    my = s.mouth_y

    def mouth_area(c: Ctx) -> np.ndarray:
        return bump(c.P, (0, my, LIP_Z), (0.036, 0.022, 0.035))

    def pucker(c: Ctx, forward: float, inward: float, open_: float) -> np.ndarray:
        w = bump(c.P, (0, my, LIP_Z + 0.005), (0.034, 0.02, 0.03))
        d = c.term(w, (0, 0, forward)) + c.term(w, (1, 0, 0)) * (-inward * np.clip(c.P[:, 0] / 0.024, -1, 1))[:, None]
        return d + c.term(w * (1 - c.low), (0, open_, 0)) + c.term(w * c.low, (0, -open_, 0))

    lip_upper = lambda c: bump(c.P, (0, my + 0.006, 0.095), (0.03, 0.012, 0.025)) * (1 - c.low)  # noqa: E731
    lip_lower = lambda c: bump(c.P, (0, my - 0.006, 0.093), (0.028, 0.012, 0.025)) * c.low  # noqa: E731
    return {
        "jawOpen": lambda c: _jaw_turn(c, JAW_OPEN_RAD),
        "jawForward": lambda c: c.jaw[:, None] * np.array([0, 0, 0.006]),
        "jawLeft": lambda c: c.jaw[:, None] * np.array([0.006, 0, 0]),
        "jawRight": lambda c: c.jaw[:, None] * np.array([-0.006, 0, 0]),
        "mouthClose": lambda c: c.term(lip_upper(c), (0, -0.002, 0)) + c.term(lip_lower(c), (0, 0.0045, 0.001)),
        "mouthFunnel": lambda c: pucker(c, 0.004, 0.003, 0.0018),
        "mouthPucker": lambda c: pucker(c, 0.005, 0.0065, 0.0),
        "mouthLeft": lambda c: c.term(mouth_area(c), (0.006, 0, -0.001)),
        "mouthRight": lambda c: c.term(mouth_area(c), (-0.006, 0, -0.001)),
        "mouthRollLower": lambda c: c.term(lip_lower(c), (0, 0.0015, -0.0035)),
        "mouthRollUpper": lambda c: c.term(lip_upper(c), (0, -0.0015, -0.0035)),
        "mouthShrugLower": lambda c: c.term(bump(c.P, (0, my - 0.018, 0.088), (0.03, 0.03, 0.03)) * c.low,
                                            (0, 0.003, 0.0015)),
        "mouthShrugUpper": lambda c: c.term(lip_upper(c), (0, 0.0025, 0.001)),
        "browInnerUp": lambda c: c.term(bump(c.P, (0, 0.024, 0.088), (0.03, 0.018, 0.03)), (0, 0.005, 0)),
        "cheekPuff": lambda c: c.term(bump(c.P, (0.042, my + 0.012, 0.065), (0.025, 0.025, 0.03)), (0.005, 0, 0.002))
        + c.term(bump(c.P, (-0.042, my + 0.012, 0.065), (0.025, 0.025, 0.03)), (-0.005, 0, 0.002)),
        "tongueOut": lambda c: (c.parts == Part.TONGUE)[:, None] * np.array([0, -0.004, 0.03])
        * ramp(c.P[:, 2], 0.032, 0.072)[:, None],
    }


def expression_fields(P: np.ndarray, lower: np.ndarray, parts: np.ndarray, s: HeadShape) -> np.ndarray:
    """Displacements [52, N, 3] (metres) of design positions P [N, 3] for the ARKit shapes in ARKIT_NAMES order."""
    c = Ctx(P, lower, parts, s)
    fields = _central(s)
    for sx, side in ((1.0, "Left"), (-1.0, "Right")):
        fields.update({name + side: f for name, f in _sided(sx).items()})
    missing = {str(a) for a in A} ^ set(fields)
    if missing:
        raise RuntimeError(f"built-in rig: shape fields and ARKit names differ: {sorted(missing)}")
    return np.stack([fields[str(a)](c) for a in A]).astype(np.float64)
