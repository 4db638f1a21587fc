"""A small exportable head for the export tests (rigged GLB, VRM, Blender, viewers): the built-in rig at its
neutral identity, a procedural texture in its atlas layout and, optionally, an avatar's bound Gaussians (face and
hair layers from ``avatar_fixtures.make_avatar``, plus a few clothing splats on the neck)."""

from __future__ import annotations

import functools

import torch
from avatar_fixtures import make_avatar, neutral_params, procedural_texture, region_faces

from headforge.assets.rigs import load_rig, parse_rig_spec
from headforge.pipeline.fitted_rig import texture_from_image
from headforge.representations.bound_gaussians import LayerCode
from headforge.representations.gaussians import Splats
from headforge.representations.rig.head_rig import HeadRig, Region
from headforge.stages.avatar import BoundSplats
from headforge.stages.rig_export import ExportHead


@functools.cache
def builtin_rig() -> HeadRig:
    return load_rig(parse_rig_spec("builtin"))


def _clothing(rig: HeadRig, n: int, seed: int) -> BoundSplats:
    """n splats bound to neck triangles, a third of a triangle out along its normal (triangle units, y normal)."""
    g = torch.Generator().manual_seed(seed)
    tris = region_faces(rig, Region.NECK)
    binding = tris[torch.randint(len(tris), (n,), generator=g)]
    means = 0.2 * torch.rand(n, 3, generator=g) + torch.tensor([0.0, 0.3, 0.0])
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4).clone()
    local = Splats(means, quats, torch.full((n, 3), 0.5), torch.full((n,), 0.8), torch.full((n, 1, 3), -0.5))
    return BoundSplats(local, binding, torch.full((n,), int(LayerCode.CLOTHING)))


def small_export_head(*, gaussians: bool = False, offsets: bool = False, clothing: bool = True,
                      seed: int = 0) -> ExportHead:
    """The built-in rig, neutral params (identity 0; ``offsets``: a smooth random field of ~1 mm), a 128 px
    procedural texture; ``gaussians``: an avatar's face + hair Gaussians (+ ``clothing`` splats on the neck)."""
    rig = builtin_rig()
    params = neutral_params(rig)
    if offsets:
        g = torch.Generator().manual_seed(seed)
        freq = torch.randn(3, 3, generator=g, dtype=torch.float64) * 20
        t = rig.template.double()
        params = type(params)(params.similarity, params.identity, params.expression, params.pose,
                              0.001 * torch.sin(t @ freq.T))
    if not gaussians:
        return ExportHead(rig, params, texture_from_image(rig, procedural_texture()))
    avatar = make_avatar(rig, "builtin", seed=seed, n_face=400, n_hair=200)
    bound = avatar.gaussians
    if clothing:
        bound = BoundSplats.concat([bound, _clothing(rig, 50, seed)])
    return ExportHead(rig, params, avatar.texture, bound)


@functools.cache
def small_rigged_glb(gaussians: bool = False) -> bytes:
    """The small head (with offsets) as a rigged GLB with the 4 built-in clips (blink, head_turn, smile, talk)."""
    from headforge.representations.rig.clips import builtin_clip_names, read_clip
    from headforge.stages.rig_export import build_rigged_glb

    clips = [read_clip(f"builtin:{n}") for n in builtin_clip_names()]
    return build_rigged_glb(small_export_head(gaussians=gaussians, offsets=True), clips)
