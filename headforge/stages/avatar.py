"""The avatar: a fitted rig with its texture and Gaussians bound to its triangles, and how to pose it.

``Avatar`` holds the rig, the fitted state (``RigParams``: similarity world-from-rig, identity, offsets and the
fitted frames' expression and pose), the baked texture (the mesh face layer) and the bound Gaussians
(:class:`BoundSplats`: triangle-local splats, their triangle and their layer). Gaussians are bound to the rig's
vertices in the *rig frame* (metres, head frame), so posing is one call: deform the rig with any ARKit weights
and joint rotations, then :func:`headforge.representations.bound_gaussians.pose_bound`; ``world=True`` applies
the fit's similarity (the capture's world, where the cameras are).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.representations.bound_gaussians import Layer, LayerCode, pose_bound
from headforge.representations.gaussians import Splats
from headforge.representations.rig.head_rig import HeadRig
from headforge.stages.rig_params import RigParams, rig_vertices
from headforge.stages.rig_texture import RigTexture

__all__ = ["Avatar", "BoundSplats", "avatar_vertices", "pose_avatar"]


@dataclass(frozen=True, eq=False)
class BoundSplats:
    """Triangle-local splats (activated: linear local scales, unit local quats) with their binding and layer."""

    local: Splats  # [N]
    binding: Tensor  # [N] int64 into the rig's faces
    layer: Tensor  # [N] int64 LayerCode

    def __post_init__(self):
        n = len(self.local)
        if self.binding.shape != (n,) or self.layer.shape != (n,):
            raise ValueError(f"binding {list(self.binding.shape)} and layer {list(self.layer.shape)} must be [{n}]")

    def __len__(self) -> int:
        return len(self.local)

    def select(self, keep: Tensor) -> BoundSplats:  # keep [N] bool or indices
        s = self.local
        return BoundSplats(Splats(s.means[keep], s.quats[keep], s.scales[keep], s.opacities[keep], s.sh[keep]),
                           self.binding[keep], self.layer[keep])

    def layer_mask(self, *layers: Layer) -> Tensor:  # [N] bool
        codes = torch.tensor([int(LayerCode[layer.name]) for layer in layers], dtype=torch.long)
        return torch.isin(self.layer, codes)

    def counts(self) -> dict[str, int]:
        return {str(layer): int(self.layer_mask(layer).sum()) for layer in Layer}

    @staticmethod
    def concat(parts: list[BoundSplats]) -> BoundSplats:
        k = max(p.local.sh.shape[1] for p in parts)
        sh = [torch.cat([p.local.sh, p.local.sh.new_zeros(len(p), k - p.local.sh.shape[1], 3)], 1) for p in parts]
        cat = lambda name: torch.cat([getattr(p.local, name) for p in parts])  # noqa: E731
        return BoundSplats(Splats(cat("means"), cat("quats"), cat("scales"), cat("opacities"), torch.cat(sh)),
                           torch.cat([p.binding for p in parts]), torch.cat([p.layer for p in parts]))


@dataclass(frozen=True, eq=False)
class Avatar:
    rig: HeadRig
    rig_spec: str  # how the rig is loaded again (``builtin``, ``ict-facekit:PATH``, ``flame:PATH``)
    params: RigParams  # the fit: similarity, identity, offsets, and the fitted frames' expression and pose
    texture: RigTexture  # the mesh face layer's baked texture
    gaussians: BoundSplats
    sh_degree: int  # the SH degree the Gaussians were trained to

    def neutral_params(self) -> RigParams:
        """One frame: the subject's identity and offsets, no expression, rest pose."""
        return self.params.posed()

    def frame_params(self, expression: Tensor | None = None, rotations: Tensor | None = None) -> RigParams:
        """One frame with ARKit weights [52] (None: neutral) and joint rotations [J, 3] axis-angle (None: rest)."""
        return self.params.posed(expression, rotations)


def avatar_vertices(avatar: Avatar, params: RigParams, *, world: bool = True) -> Tensor:
    """[B, V, 3] float32 vertices of the rig under ``params`` (in the capture's world, or the rig frame)."""
    v = rig_vertices(avatar.rig, params)
    return (params.similarity.apply(v) if world else v).float()


def pose_avatar(avatar: Avatar, params: RigParams | None = None, *, world: bool = True,
                layers: tuple[Layer, ...] | None = None) -> Splats:
    """World (or rig-frame) splats of the avatar under one frame of ``params`` (None: neutral), optionally only
    some layers."""
    params = avatar.neutral_params() if params is None else params
    if params.num_frames != 1:
        raise ValueError(f"pose_avatar takes one frame, got {params.num_frames}")
    g = avatar.gaussians if layers is None else avatar.gaussians.select(avatar.gaussians.layer_mask(*layers))
    verts = avatar_vertices(avatar, params, world=world)[0]
    return pose_bound(g.local, g.binding, verts.to(g.local.means.dtype), avatar.rig.faces)
