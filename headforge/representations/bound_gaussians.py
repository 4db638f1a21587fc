"""Gaussians bound to the triangles of a deforming mesh (GaussianAvatars' binding).

Each Gaussian belongs to one triangle (``binding`` [N] int64 into the mesh's faces) and its trained
parameters live in that triangle's frame. For a triangle (v0, v1, v2) (counter-clockwise from outside):

    a0 = normalise(v1 - v0)                      the first edge
    a1 = normalise(a0 x (v2 - v0))               the normal
    a2 = a0 x a1                                 in the plane, completing a right-handed frame
    R  = [a0 | a1 | a2]  (columns)               [.., F, 3, 3]
    T  = (v0 + v1 + v2) / 3                      the centroid
    k  = (|v1 - v0| + |a2 . (v2 - v0)|) / 2      the triangle's size (mean of its base and its height)

and a bound Gaussian with local mean mu, local log-scales s and local rotation q (wxyz) is, in the world,

    mean = R mu k + T,   scales = exp(s) k,   rotation = R q   (quaternion product, R as a unit quaternion).

So a Gaussian moves rigidly with its triangle under a rigid motion of the mesh and grows with it under a
scale. ``layer`` [N] (int64, :class:`Layer` codes) says which part of the head a Gaussian makes up; both are
side tensors of :class:`GaussianModel`, so densification carries them (children keep their parent's triangle).
``pose_bound_twin`` is the float64, one-Gaussian-at-a-time reference the batched path is tested against.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

import torch
from torch import Tensor

from headforge.geometry.rotations import quat_to_rotmat, rotmat_to_quat
from headforge.representations.gaussians import GaussianModel, Splats, activate

__all__ = ["BoundGaussianModel", "Layer", "LayerCode", "bind_world_splats", "pose_bound", "pose_bound_twin",
           "quat_multiply", "triangle_frames"]


class Layer(StrEnum):
    """The parts of a layered avatar (MeGA's split): skin-bound face, hair, neck and clothing."""

    FACE = "face"  # on the skin: face, scalp skin, ears, eyes, mouth
    HAIR = "hair"  # what the skin does not explain above the neck line, bound to the scalp
    CLOTHING = "clothing"  # below the neck line: neck, shoulders, clothing


class LayerCode(IntEnum):  # the integer stored per Gaussian (PLY column ``layer``)
    FACE = 0
    HAIR = 1
    CLOTHING = 2


LAYER_CODES: dict[Layer, int] = {Layer.FACE: LayerCode.FACE, Layer.HAIR: LayerCode.HAIR,
                                 Layer.CLOTHING: LayerCode.CLOTHING}


def triangle_frames(vertices: Tensor, faces: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor, Tensor]:
    """Frames of every triangle: vertices [..., V, 3], faces [F, 3] -> R [..., F, 3, 3] (columns a0, a1, a2),
    centroids T [..., F, 3], sizes k [..., F] (see the module doc)."""
    v0, v1, v2 = (vertices[..., faces[:, i], :] for i in range(3))
    e1, e2 = v1 - v0, v2 - v0
    a0 = e1 / e1.norm(dim=-1, keepdim=True).clamp_min(eps)
    n = torch.cross(a0, e2, dim=-1)
    a1 = n / n.norm(dim=-1, keepdim=True).clamp_min(eps)
    a2 = torch.cross(a0, a1, dim=-1)
    R = torch.stack([a0, a1, a2], -1)
    k = (e1.norm(dim=-1) + (a2 * e2).sum(-1).abs()) / 2
    return R, (v0 + v1 + v2) / 3, k


def quat_multiply(p: Tensor, q: Tensor) -> Tensor:  # [..., 4] wxyz, [..., 4] wxyz -> [..., 4] wxyz
    """Hamilton product p * q (the rotation q applied first, then p)."""
    pw, px, py, pz = p.unbind(-1)
    qw, qx, qy, qz = q.unbind(-1)
    return torch.stack([pw * qw - px * qx - py * qy - pz * qz,
                        pw * qx + px * qw + py * qz - pz * qy,
                        pw * qy - px * qz + py * qw + pz * qx,
                        pw * qz + px * qy - py * qx + pz * qw], -1)


def pose_bound(local: Splats, binding: Tensor, vertices: Tensor, faces: Tensor) -> Splats:
    """Local splats [N] (means in triangle units, linear local scales, unit local quats) bound to ``binding``
    [N] -> world splats on the mesh ``vertices`` [V, 3] (differentiable in both)."""
    R, T, k = triangle_frames(vertices, faces)
    Rb, Tb, kb = R[binding], T[binding], k[binding]  # [N, 3, 3], [N, 3], [N]
    means = torch.einsum("nij,nj->ni", Rb, local.means) * kb[:, None] + Tb
    quats = quat_multiply(rotmat_to_quat(Rb), local.quats)
    return Splats(means, quats, local.scales * kb[:, None], local.opacities, local.sh)


def pose_bound_twin(local: Splats, binding: Tensor, vertices: Tensor, faces: Tensor) -> Splats:
    """The slow reference of :func:`pose_bound`: float64, one Gaussian at a time, covariances composed as
    matrices (R Rq diag(s k)); rotations are returned as unit quaternions of the composed matrix."""
    V = vertices.double()
    means, quats, scales = [], [], []
    for i in range(len(binding)):
        a, b, c = (V[int(faces[int(binding[i]), j])] for j in range(3))
        a0 = (b - a) / (b - a).norm()
        a1 = torch.linalg.cross(a0, c - a)
        a1 = a1 / a1.norm()
        a2 = torch.linalg.cross(a0, a1)
        R = torch.stack([a0, a1, a2], 1)
        k = ((b - a).norm() + (a2 @ (c - a)).abs()) / 2
        means.append(R @ local.means[i].double() * k + (a + b + c) / 3)
        quats.append(rotmat_to_quat(R @ quat_to_rotmat(local.quats[i].double())))
        scales.append(local.scales[i].double() * k)
    return Splats(torch.stack(means), torch.stack(quats), torch.stack(scales), local.opacities.double(),
                  local.sh.double())


def bind_world_splats(world: Splats, binding: Tensor, vertices: Tensor, faces: Tensor) -> Splats:
    """The inverse of :func:`pose_bound`: world splats and their triangles -> local splats on ``vertices``."""
    R, T, k = triangle_frames(vertices, faces)
    Rb, Tb, kb = R[binding], T[binding], k[binding].clamp_min(1e-12)
    means = torch.einsum("nji,nj->ni", Rb, world.means - Tb) / kb[:, None]
    conj = rotmat_to_quat(Rb) * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=Rb.dtype)
    quats = quat_multiply(conj, world.quats / world.quats.norm(dim=-1, keepdim=True))
    return Splats(means, quats, world.scales / kb[:, None], world.opacities, world.sh)


class BoundGaussianModel(GaussianModel):
    """A :class:`GaussianModel` whose parameters are triangle-local, with ``binding`` and ``layer`` side tensors.

    ``means`` are in triangle units (see the module doc), ``log_scales`` are logs of local scales. Use
    :meth:`posed` to get world splats on a mesh; densification splits and duplicates in local coordinates,
    which is consistent because one triangle's frame is a similarity."""

    @staticmethod
    def from_local(local: Splats, binding: Tensor, layer: Tensor, max_sh_degree: int | None = None
                   ) -> BoundGaussianModel:
        base = GaussianModel.from_splats(local, max_sh_degree)
        return BoundGaussianModel(base.means.data, base.quats.data, base.log_scales.data,
                                  base.logit_opacities.data, base.sh0.data, base.shN.data,
                                  side={"binding": binding.long(), "layer": layer.long()})

    @staticmethod
    def from_tensors(tensors: dict[str, Tensor]) -> BoundGaussianModel:
        core = ("means", "quats", "log_scales", "logit_opacities", "sh0", "shN")
        return BoundGaussianModel(*(tensors[n] for n in core), side={n: t for n, t in tensors.items()
                                                                     if n not in core})

    def posed(self, vertices: Tensor, faces: Tensor, sh_degree: int | None = None) -> Splats:
        """World splats on ``vertices`` [V, 3] (differentiable in the parameters and the vertices)."""
        return pose_bound(activate(self, sh_degree), self.binding, vertices.to(self.means.dtype), faces)
