"""Real spherical harmonics up to degree 3 for view-dependent Gaussian colour.

Same basis functions, constants and coefficient ordering as gsplat (``spherical_harmonics``) and the
graphdeco 3DGS reference (``eval_sh``): coefficient k of a Gaussian multiplies basis k below, bases
are evaluated at the *normalised* direction, and degree d uses the first (d + 1)^2 coefficients.
The renderer adds 0.5 and clamps at 0 afterwards (that offset is not part of this module).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814  # 1 / (2 sqrt(pi))
MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    return (degree + 1) ** 2


def sh_degree_from_bases(k: int) -> int:
    """Largest degree a coefficient count K supports; K must be a square 1, 4, 9 or 16."""
    d = math.isqrt(k) - 1
    if k < 1 or (d + 1) ** 2 != k or d > MAX_SH_DEGREE:
        raise ValueError(f"SH coefficient count must be 1, 4, 9 or 16, got {k}")
    return d


def rgb_to_sh0(rgb: Tensor) -> Tensor:  # [..., 3] in [0, 1] -> DC coefficient [..., 3]
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Tensor) -> Tensor:  # [..., 3] -> [..., 3]
    return sh0 * SH_C0 + 0.5


def sh_basis(degree: int, dirs: Tensor) -> Tensor:  # [..., 3] unit directions -> [..., (degree+1)^2]
    """The bases in gsplat's order (Sloan's fast evaluation; equal to graphdeco's C0..C3 forms)."""
    n = num_sh_bases(degree)
    out = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        a = 0.48860251190292
        out += [-a * y, a * z, -a * x]
    if degree >= 2:
        z2 = z * z
        b = -1.092548430592079 * z
        c1 = x * x - y * y
        s1 = 2 * x * y
        out += [0.5462742152960395 * s1, b * y, 0.9461746957575601 * z2 - 0.3153915652525201,
                b * x, 0.5462742152960395 * c1]
    if degree >= 3:
        tc = -2.285228997322329 * z2 + 0.4570457994644658
        tb = 1.445305721320277 * z
        ta = -0.5900435899266435
        c2 = x * c1 - y * s1
        s2 = x * s1 + y * c1
        out += [ta * s2, tb * s1, tc * y, z * (1.865881662950577 * z2 - 1.119528997770346),
                tc * x, tb * c1, ta * c2]
    assert len(out) == n
    return torch.stack(out, -1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Colour from SH coefficients. coeffs [..., K, 3] (K >= (degree+1)^2), dirs [..., 3] -> [..., 3].

    ``dirs`` need not be unit length (they are normalised here, as gsplat does). Coefficients past
    (degree+1)^2 are ignored, which is how training raises the degree progressively.
    """
    n = num_sh_bases(degree)
    if coeffs.shape[-1] != 3 or coeffs.shape[-2] < n:
        raise ValueError(f"SH coefficients must be [..., K >= {n}, 3] for degree {degree}, "
                         f"got {tuple(coeffs.shape)}")
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    basis = sh_basis(degree, unit)  # [..., n]
    return (basis[..., None] * coeffs[..., :n, :]).sum(-2)
