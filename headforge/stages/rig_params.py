"""The state a rig fit carries from stage to stage: similarity, identity, expression, pose, offsets.

Conventions: world = s R x_rig + t (``Similarity``, world from rig; the rig's root joint stays at rest, the
similarity is its global pose). ``RigParams`` holds B frames that share one identity (and one set of offsets);
expression and pose are per frame. Offsets are per-vertex displacements in the rig frame (metres), added to the
identity shape before expressions and skinning (joints ignore them), so they move with the face (detail the
bases cannot express).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from headforge.representations.rig.arkit import NUM_ARKIT
from headforge.representations.rig.deform import RigPose, deform
from headforge.representations.rig.head_rig import JOINTS, HeadRig


@dataclass(frozen=True, eq=False)
class Similarity:
    """world = scale * rotation @ x + translation (world from rig)."""

    scale: Tensor  # [] > 0
    rotation: Tensor  # [3, 3] proper rotation
    translation: Tensor  # [3]

    def apply(self, points: Tensor) -> Tensor:  # [..., 3] rig frame -> [..., 3] world
        return self.scale * points @ self.rotation.T.to(points) + self.translation.to(points)

    def inverse_apply(self, points: Tensor) -> Tensor:  # [..., 3] world -> [..., 3] rig frame
        return (points - self.translation.to(points)) @ self.rotation.to(points) / self.scale


@dataclass(frozen=True, eq=False)
class RigParams:
    """A fitted rig state for B frames (float64)."""

    similarity: Similarity  # world from rig, shared by the frames
    identity: Tensor  # [K] (K = 0 for a rig without identity basis)
    expression: Tensor  # [B, 52] ARKit weights in [0, 1]; rows the rig lacks stay 0
    pose: RigPose  # [B, J, 3] rotations (root zero), translation [B, 3] zero
    offsets: Tensor | None = None  # [V, 3] rig-frame metres, shared by the frames

    def __post_init__(self):
        B = self.expression.shape[0]
        if self.expression.ndim != 2 or self.expression.shape[1] != NUM_ARKIT:
            raise ValueError(f"RigParams.expression must be [B, {NUM_ARKIT}] (got {list(self.expression.shape)})")
        if self.pose.rotations.shape != (B, len(JOINTS), 3):
            raise ValueError(f"RigParams.pose must have [{B}, {len(JOINTS)}, 3] rotations "
                             f"(got {list(self.pose.rotations.shape)})")
        if self.identity.ndim != 1:
            raise ValueError(f"RigParams.identity must be [K] (got {list(self.identity.shape)})")
        if self.offsets is not None and (self.offsets.ndim != 2 or self.offsets.shape[1] != 3):
            raise ValueError(f"RigParams.offsets must be [V, 3] (got {list(self.offsets.shape)})")

    @property
    def num_frames(self) -> int:
        return self.expression.shape[0]

    def frame(self, b: int) -> RigParams:
        """The one-frame params of frame b (identity and offsets shared)."""
        pose = RigPose(self.pose.rotations[b:b + 1], self.pose.translation[b:b + 1])
        return replace(self, expression=self.expression[b:b + 1], pose=pose)

    def posed(self, expression: Tensor | None = None, rotations: Tensor | None = None) -> RigParams:
        """One frame of this subject (similarity, identity, offsets) with ARKit weights [52] (None: neutral) and
        joint rotations [J, 3] axis-angle (None: rest), float64."""
        D = torch.float64
        if expression is None:
            expression = torch.zeros(NUM_ARKIT, dtype=D)
        if expression.shape != (NUM_ARKIT,):
            raise ValueError(f"expression must be [{NUM_ARKIT}], got {list(expression.shape)}")
        if rotations is None:
            rotations = torch.zeros(len(JOINTS), 3, dtype=D)
        if rotations.shape != (len(JOINTS), 3):
            raise ValueError(f"rotations must be [{len(JOINTS)}, 3], got {list(rotations.shape)}")
        return replace(self, expression=expression.to(D)[None],
                       pose=RigPose(rotations.to(D)[None], torch.zeros(1, 3, dtype=D)))

    def is_finite(self) -> bool:
        parts = [self.similarity.scale, self.similarity.rotation, self.similarity.translation, self.identity,
                 self.expression, self.pose.rotations, self.pose.translation]
        if self.offsets is not None:
            parts.append(self.offsets)
        return all(bool(torch.isfinite(p).all()) for p in parts)


def rig_vertices(rig: HeadRig, params: RigParams) -> Tensor:
    """The rig's vertices [B, V, 3] in its own frame (float64), offsets included."""
    dtype = rig.template.dtype
    ident = params.identity.to(dtype)[None].expand(params.num_frames, -1) if rig.num_identity else None
    pose = RigPose(params.pose.rotations.to(dtype), params.pose.translation.to(dtype))
    return deform(rig, ident, params.expression.to(dtype), pose, offsets=params.offsets).double()


def world_vertices(rig: HeadRig, params: RigParams) -> Tensor:
    """The fitted rig's vertices [B, V, 3] in the world (float64)."""
    return params.similarity.apply(rig_vertices(rig, params))
