"""Differentiable rig deformation as plain tensor functions, batched over frames.

    shaped  = template + identity_basis . identity                       # [B, V, 3]
    joints  = joint_regressor @ shaped                                   # [B, J, 3] rest joints of this identity
    blended = shaped + expression_basis . expression                     # [B, V, 3]
              (+ expression_components . components, a source's own expression coefficients [B, E])
              (+ pose_correctives . (R_j - I) for the non-root joints, FLAME's pose-dependent offsets)
    posed   = LBS(blended, skin_weights, joint_transforms(joints, parents, pose))

Pose: axis-angle rotation per joint [B, J, 3] (radians, in the parent's frame, about the joint's rest
position) plus a root translation [B, 3] in metres. Forward kinematics composes parent-before-child
(SMPL/FLAME convention): G_j = G_parent(j) [R_j | c_j - c_parent(j)], G_root = [R_root | c_root + t], and the
skinning transform of joint j is G_j [I | -c_j], which maps a rest-pose point to its posed position.
All functions keep the input dtype; gradients flow to every tensor argument (checked by gradcheck).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.representations.rig.head_rig import JOINTS, HeadRig, LandmarkSet

SMALL_ANGLE2 = 1e-8  # below this squared angle, Rodrigues' coefficients use their Taylor series


@dataclass(frozen=True)
class RigPose:
    """Joint rotations (axis-angle, radians) [B, J, 3] and the root translation [B, 3] in metres."""

    rotations: Tensor  # [B, J, 3]
    translation: Tensor  # [B, 3]

    def __post_init__(self):
        if self.rotations.ndim != 3 or self.rotations.shape[-1] != 3:
            raise ValueError(f"RigPose.rotations must be [B, J, 3] (got {list(self.rotations.shape)})")
        if self.translation.shape != (self.rotations.shape[0], 3):
            raise ValueError(f"RigPose.translation must be [B, 3] = [{self.rotations.shape[0]}, 3] "
                             f"(got {list(self.translation.shape)})")

    @staticmethod
    def rest(batch: int, num_joints: int = len(JOINTS), dtype: torch.dtype = torch.float32) -> RigPose:
        return RigPose(torch.zeros(batch, num_joints, 3, dtype=dtype), torch.zeros(batch, 3, dtype=dtype))


def axis_angle_to_matrix(r: Tensor) -> Tensor:  # [..., 3] axis * angle -> [..., 3, 3]
    """Rodrigues' formula R = I + A K + B K^2, with A = sin t / t, B = (1 - cos t) / t^2 and K = [r]_x.

    Near t = 0 the coefficients come from their Taylor series, so the value and the gradient are exact at the
    rest pose (where a fit starts) instead of 0/0.
    """
    t2 = (r * r).sum(-1)  # [...]
    small = t2 < SMALL_ANGLE2
    t = torch.sqrt(torch.where(small, torch.ones_like(t2), t2))
    A = torch.where(small, 1 - t2 / 6, torch.sin(t) / t)
    B = torch.where(small, 0.5 - t2 / 24, (1 - torch.cos(t)) / (t * t))
    x, y, z = r.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*r.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=r.dtype, device=r.device).expand_as(K)
    return eye + A[..., None, None] * K + B[..., None, None] * (K @ K)


def blend_shapes(template: Tensor, basis: Tensor, coeffs: Tensor) -> Tensor:
    """template [V, 3] or [B, V, 3], basis [K, V, 3], coeffs [B, K] -> [B, V, 3]."""
    return template + torch.einsum("bk,kvc->bvc", coeffs, basis)


def joint_transforms(rest_joints: Tensor, parents: tuple[int, ...], rotations: Tensor,
                     translation: Tensor) -> Tensor:
    """Skinning transforms [B, J, 4, 4] from rest joints [J, 3] or [B, J, 3], axis-angles [B, J, 3], root t [B, 3].

    ``parents[j]`` is the parent index of joint j (-1 for the root, which must be joint 0); parents precede
    children. The result maps rest-pose points to posed points for a vertex bound rigidly to joint j.
    """
    B, J = rotations.shape[:2]
    if len(parents) != J or parents[0] != -1 or any(not 0 <= p < j for j, p in enumerate(parents) if j > 0):
        raise ValueError(f"joint_transforms: parents {parents} must list {J} joints, root first, parents first")
    c = rest_joints.expand(B, J, 3)  # [B, J, 3]
    R = axis_angle_to_matrix(rotations)  # [B, J, 3, 3]
    bottom = torch.zeros(B, 1, 4, dtype=R.dtype, device=R.device)
    bottom[..., 3] = 1

    def rigid(Rj: Tensor, tj: Tensor) -> Tensor:  # [B, 3, 3], [B, 3] -> [B, 4, 4]
        return torch.cat([torch.cat([Rj, tj[..., None]], -1), bottom], -2)

    world = [rigid(R[:, 0], c[:, 0] + translation)]
    for j in range(1, J):
        p = parents[j]
        world.append(world[p] @ rigid(R[:, j], c[:, j] - c[:, p]))
    G = torch.stack(world, 1)  # [B, J, 4, 4] joint frames
    # skinning transform: G_j [I | -c_j]  ->  rotation part unchanged, translation t_j - R_j c_j
    t = G[..., :3, 3] - (G[..., :3, :3] @ c[..., None]).squeeze(-1)
    return torch.cat([torch.cat([G[..., :3, :3], t[..., None]], -1), bottom[:, None].expand(B, J, 1, 4)], -2)


def linear_blend_skinning(vertices: Tensor, weights: Tensor, transforms: Tensor) -> Tensor:
    """vertices [B, V, 3] (or [V, 3]), weights [V, J], transforms [B, J, 4, 4] -> [B, V, 3].

    v' = (sum_j w_vj T_j) v: the weighted transforms are blended first (3x4 per vertex), then applied.
    """
    T = torch.einsum("vj,bjrc->bvrc", weights, transforms[..., :3, :])  # [B, V, 3, 4]
    v = vertices.expand(transforms.shape[0], *vertices.shape[-2:])
    return (T[..., :3] @ v[..., None]).squeeze(-1) + T[..., 3]


def deform(rig: HeadRig, identity: Tensor | None, expression: Tensor, pose: RigPose,
           components: Tensor | None = None, offsets: Tensor | None = None) -> Tensor:
    """Posed vertices [B, V, 3] for identity [B, K] (or None: the template), expression [B, 52], pose, and
    optionally coefficients [B, E] of the rig's own ``expression_components`` and per-vertex ``offsets``
    [V, 3] or [B, V, 3] (metres, rig frame: a fit's detail, added to the identity shape before expressions).

    Rest joints follow the identity shape (``joint_regressor @ shaped``, offsets excluded); expressions and
    offsets do not move joints.
    A rig with ``pose_correctives`` adds them, weighted by the entries of R_j - I, before skinning.
    """
    dtype = rig.template.dtype
    B = expression.shape[0]
    if expression.shape != (B, rig.expression_basis.shape[0]):
        raise ValueError(f"deform: expression must be [B, 52] (got {list(expression.shape)})")
    if pose.rotations.shape != (B, len(rig.parents), 3):
        raise ValueError(f"deform: pose rotations must be [{B}, {len(rig.parents)}, 3] "
                         f"(got {list(pose.rotations.shape)})")
    if identity is None:
        shaped = rig.template.expand(B, -1, -1)
    else:
        if rig.identity_basis is None:
            raise ValueError("deform: this rig has no identity basis; pass identity=None")
        if identity.shape != (B, rig.num_identity):
            raise ValueError(f"deform: identity must be [{B}, {rig.num_identity}] (got {list(identity.shape)})")
        shaped = blend_shapes(rig.template, rig.identity_basis, identity.to(dtype))
    joints = rig.joint_regressor @ shaped  # [B, J, 3]
    if offsets is not None:
        if offsets.shape[-2:] != rig.template.shape or offsets.ndim not in (2, 3):
            raise ValueError(f"deform: offsets must be [V, 3] or [B, V, 3] with V = {rig.num_vertices} "
                             f"(got {list(offsets.shape)})")
        shaped = shaped + offsets.to(dtype)
    blended = blend_shapes(shaped, rig.expression_basis, expression.to(dtype))
    if components is not None:
        if rig.expression_components is None:
            raise ValueError("deform: this rig has no expression_components; pass components=None")
        if components.shape != (B, rig.num_components):
            raise ValueError(f"deform: components must be [{B}, {rig.num_components}] "
                             f"(got {list(components.shape)})")
        blended = blend_shapes(blended, rig.expression_components, components.to(dtype))
    rotations = pose.rotations.to(dtype)
    if rig.pose_correctives is not None:
        blended = blended + corrective_offsets(rig.pose_correctives, rotations)
    T = joint_transforms(joints, rig.parents, rotations, pose.translation.to(dtype))
    return linear_blend_skinning(blended, rig.skin_weights, T)


def corrective_offsets(correctives: Tensor, rotations: Tensor) -> Tensor:
    """correctives [J - 1, 9, V, 3], axis-angles [B, J, 3] -> offsets [B, V, 3] = sum_jk (R_j - I)_k C[j, k].

    The pose feature is the row-major entries of R_j - I for every non-root joint (zero at rest), the rule
    FLAME's ``posedirs`` are trained with.
    """
    R = axis_angle_to_matrix(rotations[:, 1:])  # [B, J - 1, 3, 3]
    feat = (R - torch.eye(3, dtype=R.dtype, device=R.device)).flatten(-2)  # [B, J - 1, 9]
    return torch.einsum("bjk,jkvc->bvc", feat, correctives)


def posed_joints(rig: HeadRig, identity: Tensor | None, pose: RigPose) -> Tensor:  # -> [B, J, 3]
    """Where the joints are after posing (the skinning transform applied to each rest joint)."""
    B = pose.rotations.shape[0]
    dtype = rig.template.dtype
    shaped = (rig.template.expand(B, -1, -1) if identity is None
              else blend_shapes(rig.template, rig.identity_basis, identity.to(dtype)))
    joints = rig.joint_regressor @ shaped
    T = joint_transforms(joints, rig.parents, pose.rotations.to(dtype), pose.translation.to(dtype))
    return (T[..., :3, :3] @ joints[..., None]).squeeze(-1) + T[..., :3, 3]


def landmarks(rig: HeadRig, vertices: Tensor, name: LandmarkSet | str) -> Tensor:
    """Landmark positions [B, L, 3] on (deformed) vertices [B, V, 3] from the rig's embedding ``name``."""
    kind = LandmarkSet(name)
    if kind not in rig.landmarks:
        raise KeyError(f"rig ({rig.source}) has no {kind} landmark embedding "
                       f"(it has: {[str(k) for k in rig.landmarks] or 'none'})")
    emb = rig.landmarks[kind]
    corners = vertices[:, rig.faces[emb.triangles]]  # [B, L, 3 corners, 3]
    return (emb.barycentrics.to(vertices.dtype)[None, :, :, None] * corners).sum(2)
