"""Which axes a splat file stores (:class:`SplatFrame`), the turn between them, and ``.spz`` for :class:`Splats`.

headforge's head frame is x = the subject's left (the viewer's right), y up, z out of the face toward the
viewer: the RUB axes of glTF, three.js and ``.spz``. 3DGS tools (graphdeco, SuperSplat and
``@playcanvas/splat-transform``, gsplat's viewers) read PLY and ``.splat`` in the COLMAP / OpenCV world,
x right, y down, z forward (into the scene, away from the viewer), and show head-frame files upside
down. ``SplatFrame.OPENCV`` is that frame: a 180-degree turn about x of the head frame, which keeps
the face toward a camera looking along +z. The turn is exact in float32 (only signs and a fixed
permutation of quaternion components change), so writing in one frame and reading back is lossless.

The turn T = diag(1, -1, -1) acts on every part of a splat: means p -> T p; rotations R -> T R, i.e.
the quaternion is left-multiplied by T's quaternion (w x y z) = (0 1 0 0); SH coefficients get the
sign the real basis takes under T (Y_k(T d) = s_k Y_k(d), so c_k -> s_k c_k keeps the colour seen
from every direction); the signs are derived from :func:`headforge.geometry.sh.sh_basis` itself.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import torch

from headforge.atomic import atomic_path
from headforge.geometry.sh import MAX_SH_DEGREE, sh_basis
from headforge.io.spz import SpzOptions, encode_spz, read_spz
from headforge.representations.gaussians import Splats


class SplatFrame(StrEnum):
    """The axes a splat file's values are in."""

    OPENCV = "opencv"  # x right, y down, z forward: what 3DGS viewers expect of PLY and .splat
    HEAD = "head"  # headforge's head frame unchanged (RUB: x right, y up, z toward the viewer)


FRAME_SENTENCES = {
    SplatFrame.OPENCV: "x right, y down, z forward (the 3DGS / OpenCV world); headforge's head frame turned "
                       "180 degrees about x",
    SplatFrame.HEAD: "headforge's head frame: x the subject's left, y up, z out of the face (glTF's axes)",
}


def _turn_signs(num_coefficients: int) -> torch.Tensor:  # -> [K] of +-1
    """s_k with Y_k(T d) = s_k Y_k(d) for T = diag(1, -1, -1), measured on the basis at generic directions."""
    dirs = torch.nn.functional.normalize(torch.tensor([[0.3, 0.5, 0.8], [-0.7, 0.2, 0.4], [0.1, -0.9, 0.3]],
                                                      dtype=torch.float64), dim=-1)
    turned = dirs * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    ratio = sh_basis(MAX_SH_DEGREE, turned) / sh_basis(MAX_SH_DEGREE, dirs)  # [3, 16]
    signs = ratio[0].sign()
    if not torch.allclose(ratio, signs.expand_as(ratio), atol=1e-9):
        raise AssertionError("the SH basis is not even or odd under the turn about x")
    return signs[:num_coefficients].float()


def turn_about_x(splats: Splats, inverse: bool = False) -> Splats:
    """The splats turned 180 degrees about x (head frame <-> OpenCV frame); ``inverse`` undoes it exactly.

    Quaternions: q' = (0, 1, 0, 0) * q = (-x, w, -z, y) (wxyz); the inverse uses (0, -1, 0, 0), which gives
    back q itself, not -q, so a round trip is bit-exact.
    """
    s = splats
    w, x, y, z = s.quats.unbind(-1)
    quats = torch.stack([x, -w, z, -y], -1) if inverse else torch.stack([-x, w, -z, y], -1)
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=s.means.dtype, device=s.means.device)
    signs = _turn_signs(s.sh.shape[1]).to(s.sh)
    return Splats(s.means * flip, quats, s.scales, s.opacities, s.sh * signs[:, None])


def to_frame(splats: Splats, frame: SplatFrame) -> Splats:
    """Head-frame splats expressed in ``frame``."""
    return turn_about_x(splats) if SplatFrame(frame) is SplatFrame.OPENCV else splats


def from_frame(splats: Splats, frame: SplatFrame) -> Splats:
    """Splats stored in ``frame`` brought back to the head frame."""
    return turn_about_x(splats, inverse=True) if SplatFrame(frame) is SplatFrame.OPENCV else splats


def save_splats_spz(splats: Splats, path: str | Path, options: SpzOptions | None = None) -> Path:
    """Write Niantic's .spz (``SpzOptions()``: version 3, 12 fractional bits, 5/4 SH bits). spz stores RUB, the
    head frame: no turn is needed."""
    s = splats.detach()
    q = s.quats / s.quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    f32 = lambda t: t.float().cpu().numpy()  # noqa: E731
    data = encode_spz(f32(s.means), f32(q[:, [1, 2, 3, 0]]), f32(s.scales), f32(s.opacities), f32(s.sh),
                      options or SpzOptions())
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def load_splats_spz(path: str | Path) -> Splats:
    """Read a version 2 or 3 .spz (any other, or a damaged file, is an ``InputError`` naming it)."""
    c = read_spz(path)
    t = torch.from_numpy
    return Splats(t(c.positions), t(c.rotations_xyzw[:, [3, 0, 1, 2]].copy()), t(c.scales), t(c.opacities),
                  t(c.sh)).validate(path)


__all__ = ["SplatFrame", "FRAME_SENTENCES", "turn_about_x", "to_frame", "from_frame", "save_splats_spz",
           "load_splats_spz"]
