"""The built-in rig's identity basis: the sample head's own generator parameters as shape directions.

The sample head is a signed-distance function of :class:`HeadShape` (:mod:`headforge.assets.head_sdf`). For each
parameter in :data:`IDENTITY_PARAMETERS` the direction moves every template vertex onto the perturbed SDF's zero
level along the surface normal, to first order:

    delta_k(v) = -(sdf(v; s + sigma_k e_k / 2) - sdf(v; s - sigma_k e_k / 2)) * n(v),  n = grad sdf / |grad sdf|

so one unit of coefficient k is one ``sigma_k`` of that parameter (a plausible person-to-person spread); the
coefficients are meant to be ~N(0, 1). The directions are not orthonormalised (each stays one named measurement:
``head_width`` widens the cranium, ``nose_length`` pushes the nose tip forward, ...); their norms are reported in
the rig's DESIGN.md. Parts outside the SDF move rigidly: each eyeball with its eye centre (the ``eye_spacing``
parameter moves eye_c and socket_c together), the mouth bag and tongue with the mean motion of the lips.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from headforge.assets.builtin_rig_mesh import Part
from headforge.assets.head_sdf import HeadShape, head_sdf


@dataclass(frozen=True)
class IdentityParameter:
    name: str
    fields: tuple[str, ...]  # HeadShape fields moved together
    component: int | None  # index into a vector field; None for a scalar field
    sigma: float  # metres per unit coefficient


IDENTITY_PARAMETERS: tuple[IdentityParameter, ...] = (
    IdentityParameter("head_width", ("cranium_r",), 0, 0.004),
    IdentityParameter("cranium_length", ("cranium_r",), 2, 0.005),
    IdentityParameter("cranium_height", ("cranium_r",), 1, 0.004),
    IdentityParameter("face_width", ("face_r",), 0, 0.003),
    IdentityParameter("face_length", ("face_r",), 1, 0.004),
    IdentityParameter("jaw_width", ("jaw_r",), 0, 0.004),
    IdentityParameter("chin_forward", ("chin_c",), 2, 0.003),
    IdentityParameter("chin_height", ("chin_c",), 1, 0.003),
    IdentityParameter("nose_length", ("nose_tip",), 2, 0.004),
    IdentityParameter("nose_width", ("ala_c",), 0, 0.002),
    IdentityParameter("brow_ridge", ("brow_c",), 2, 0.003),
    IdentityParameter("cheek_fullness", ("cheek_r",), 0, 0.003),
    IdentityParameter("ear_size", ("ear_r",), 1, 0.003),
    IdentityParameter("eye_spacing", ("eye_c", "socket_c"), 0, 0.002),
    IdentityParameter("lip_fullness", ("upper_lip_r", "lower_lip_r"), 2, 0.002),
    IdentityParameter("neck_width", ("neck_r",), None, 0.005),
)


def perturbed(s: HeadShape, p: IdentityParameter, amount: float) -> HeadShape:
    """``s`` with parameter ``p`` moved by ``amount`` metres (every field of p, one component)."""
    changes = {}
    for name in p.fields:
        value = getattr(s, name)
        if p.component is None:
            changes[name] = value + amount
        else:
            v = list(value)
            v[p.component] += amount
            changes[name] = tuple(v)
    return dataclasses.replace(s, **changes)


def sdf_normals(P: np.ndarray, s: HeadShape, h: float = 1e-4) -> np.ndarray:  # [N, 3] -> [N, 3] unit
    g = np.stack([(head_sdf(P + h * e, s) - head_sdf(P - h * e, s)) / (2 * h) for e in np.eye(3)], 1)
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)


def identity_basis(P: np.ndarray, parts: np.ndarray, lips: np.ndarray, s: HeadShape) -> np.ndarray:
    """Directions [K, N, 3] (metres per unit coefficient) at design positions P [N, 3]; ``lips`` [N] bool marks
    the lip vertices whose mean motion the mouth bag and tongue follow."""
    surface = np.isin(parts, [Part.FACE, Part.SCALP, Part.EARS, Part.NECK])
    n = sdf_normals(P[surface], s)
    out = np.zeros((len(IDENTITY_PARAMETERS), len(P), 3))
    for k, p in enumerate(IDENTITY_PARAMETERS):
        hi, lo = perturbed(s, p, p.sigma / 2), perturbed(s, p, -p.sigma / 2)
        out[k, surface] = -(head_sdf(P[surface], hi) - head_sdf(P[surface], lo))[:, None] * n
        for sx, part in ((1.0, Part.EYE_LEFT), (-1.0, Part.EYE_RIGHT)):
            move = (np.asarray(hi.eye_c) - np.asarray(lo.eye_c)) * np.array([sx, 1.0, 1.0])
            out[k, parts == part] = move
        out[k, np.isin(parts, [Part.BAG, Part.TONGUE])] = out[k, lips].mean(0)
    return out
