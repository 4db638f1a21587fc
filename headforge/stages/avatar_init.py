"""Stage: the first bound Gaussians of an avatar, and the layer each one belongs to.

Surface Gaussians: points sampled on the fitted rig's textured triangles (area-weighted, the atlas faces that
renders draw), coloured from the baked texture, discs in their triangle's plane sized by their neighbours, bound to
the triangle they lie on. Those on scalp triangles (region labels) are the hair layer (hair painted on the scalp,
or short hair), the others the face layer.

Hair and clothing (MeGA's split: what the skin does not explain): points on the surface of the masks' visual
hull (the person segmentation of every train view of the first frame) that lie farther than ``layer_distance``
from the fitted skin. In the rig frame, those below the neck line (the lowest face-skin vertex, the chin) are
clothing, bound to the nearest neck triangle; the others are hair, bound to the nearest scalp triangle (ears or
any skin triangle when a rig lacks those regions). They keep their distance from the surface: their local means
are not pulled toward the triangle (the training's position prior applies to the face layer only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

import annotated_types as at
import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from headforge.geometry.bilinear import bilinear_image
from headforge.representations.bound_gaussians import LayerCode, bind_world_splats
from headforge.representations.gaussians import init_splats
from headforge.representations.mesh import uv_to_texel
from headforge.representations.rig.head_rig import HeadRig, Region
from headforge.stages.avatar import BoundSplats
from headforge.stages.gaussian_init import hull_surface_points, point_colors, visual_hull
from headforge.stages.rig_evaluate import drawn_faces
from headforge.stages.rig_params import Similarity
from headforge.stages.rig_texture import RigTexture
from headforge.stages.views import ViewBatch
from headforge.validation import Checked, NonNegativeInt, Positive

__all__ = ["AvatarInitConfig", "initial_bound_splats", "nearest_triangles", "sample_triangles"]


@dataclass(frozen=True)
class AvatarInitConfig(Checked):
    face_points: Annotated[int, at.Ge(1), at.Le(2_000_000)] = 30_000
    extra_points: NonNegativeInt = 20_000  # hull points drawn for hair / clothing (those near the skin dropped)
    layer_distance: Positive = 0.006  # metres from the fitted skin beyond which a hull point is hair or clothing
    hull_resolution: Annotated[int, at.Ge(8), at.Le(512)] = 96
    init_opacity: Annotated[float, at.Gt(0), at.Lt(1)] = 0.7
    disc_spread: Positive = 1.2  # face layer: in-plane scale / the mean neighbour distance
    disc_thickness: Positive = 0.3  # face layer: normal scale / the mean neighbour distance
    max_sh_degree: Annotated[int, at.Ge(0), at.Le(3)] = 3


def sample_triangles(vertices: Tensor, faces: Tensor, candidates: Tensor, count: int,
                     generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``count`` area-weighted points on the ``candidates`` [C] faces of the mesh (vertices [V, 3]):
    -> (points [count, 3], face indices [count], barycentrics [count, 3])."""
    tri = vertices[faces[candidates]].double()  # [C, 3, 3]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=-1) / 2
    if float(area.sum()) <= 0:
        raise ValueError("the candidate triangles have no area")
    pick = torch.multinomial(area, count, replacement=True, generator=generator)
    u, v = torch.rand(2, count, generator=generator, dtype=torch.float64)
    flip = u + v > 1
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    bary = torch.stack([1 - u - v, u, v], -1)
    points = (tri[pick] * bary[..., None]).sum(1)
    return points.to(vertices.dtype), candidates[pick], bary


def nearest_triangles(vertices: Tensor, faces: Tensor, candidates: Tensor, points: Tensor,
                      samples_per_face: int = 4) -> tuple[Tensor, Tensor]:
    """For points [P, 3]: the nearest of the ``candidates`` faces (by a dense sample of each: its centroid and
    ``samples_per_face`` fixed interior points) and the distance to that sample -> (faces [P], dist [P])."""
    tri = vertices[faces[candidates]].double().numpy()  # [C, 3, 3]
    w = np.array([[1, 1, 1]] + [[4, 1, 1], [1, 4, 1], [1, 1, 4], [2, 2, 1]][:samples_per_face], np.float64)
    w /= w.sum(1, keepdims=True)
    pts = np.einsum("sk,ckd->csd", w, tri).reshape(-1, 3)
    dist, idx = cKDTree(pts).query(points.double().numpy())
    return candidates[torch.from_numpy(idx // len(w))], torch.from_numpy(dist)


def _region_faces(rig: HeadRig, regions: tuple[Region, ...], allowed: Tensor) -> Tensor:
    mask = torch.zeros(rig.num_vertices, dtype=torch.bool)
    for r in regions:
        if r in rig.region_names:
            mask |= rig.region_mask(r)
    return (mask[rig.faces].all(1) & allowed).nonzero().squeeze(1)


def initial_bound_splats(rig: HeadRig, vertices: Tensor, similarity: Similarity, texture: RigTexture,
                         views: ViewBatch | None, bounds: tuple[Tensor, Tensor] | None, cfg: AvatarInitConfig,
                         generator: torch.Generator) -> BoundSplats:
    """Bound Gaussians on the fitted rig (``vertices`` [V, 3] world, the first frame) and, when ``views`` with
    masks are given, the hair and clothing layers from their visual hull within ``bounds`` (world)."""
    drawn = drawn_faces(rig)
    atlas = torch.zeros(rig.faces.shape[0], dtype=torch.bool)
    atlas[texture.faces] = True
    candidates = (drawn & atlas).nonzero().squeeze(1)
    points, face, bary = sample_triangles(vertices, rig.faces, candidates, cfg.face_points, generator)
    slot = torch.full((rig.faces.shape[0],), -1, dtype=torch.long)
    slot[texture.faces] = torch.arange(len(texture.faces))
    uv = (texture.uvs[slot[face]].double() * bary[..., None]).sum(1)  # [P, 2] OBJ convention
    colors = bilinear_image(texture.texture.double(), uv_to_texel(uv)).clamp(0, 1)
    surface = _bind(points, colors, face, LayerCode.FACE, rig, vertices, cfg, disc=True)
    if Region.SCALP in rig.region_names:  # what grows on the scalp is hair, painted on or standing off it
        scalp = rig.region_mask(Region.SCALP)[rig.faces[face]].all(1)
        surface = replace(surface, layer=torch.where(scalp, int(LayerCode.HAIR), surface.layer))
    parts = [surface]
    if views is not None and views.alphas is not None and cfg.extra_points > 0 and bounds is not None:
        extra = _hair_and_clothing(rig, vertices, similarity, views, bounds, cfg, generator, candidates)
        parts += extra
    return BoundSplats.concat(parts)


def _bind(points: Tensor, colors: Tensor, face: Tensor, layer: LayerCode, rig: HeadRig, vertices: Tensor,
          cfg: AvatarInitConfig, disc: bool = False) -> BoundSplats:
    world = init_splats(points.float(), colors.float(), max_sh_degree=cfg.max_sh_degree,
                        init_opacity=cfg.init_opacity)
    local = bind_world_splats(world, face, vertices.float(), rig.faces)
    if disc:  # surface Gaussians: discs in the triangle's plane (local y is the normal), overlapping a little
        flat = torch.tensor([cfg.disc_spread, cfg.disc_thickness, cfg.disc_spread])
        quats = torch.zeros_like(local.quats)
        quats[:, 0] = 1
        local = replace(local, quats=quats, scales=local.scales[:, :1] * flat)
    return BoundSplats(local, face.long(), torch.full((len(face),), int(layer), dtype=torch.long))


def _hair_and_clothing(rig: HeadRig, vertices: Tensor, similarity: Similarity, views: ViewBatch,
                       bounds: tuple[Tensor, Tensor], cfg: AvatarInitConfig, generator: torch.Generator,
                       skin_faces: Tensor) -> list[BoundSplats]:
    lo, hi = bounds
    occ = visual_hull(views.cameras, views.alphas, lo, hi, cfg.hull_resolution)
    points = hull_surface_points(occ, lo, hi, cfg.extra_points, generator)
    _, dist = nearest_triangles(vertices, rig.faces, skin_faces, points)
    far = dist > cfg.layer_distance
    points = points[far]
    if len(points) == 0:
        return []
    rig_points = similarity.inverse_apply(points.double())
    face_skin = rig.region_mask(Region.FACE_SKIN) if Region.FACE_SKIN in rig.region_names else None
    chin_y = float("-inf") if face_skin is None else float(
        similarity.inverse_apply(vertices[face_skin].double())[:, 1].min())
    below = rig_points[:, 1] < chin_y
    drawn = drawn_faces(rig)
    out = []
    for layer, mask, regions in ((LayerCode.HAIR, ~below, (Region.SCALP, Region.EARS)),
                                 (LayerCode.CLOTHING, below, (Region.NECK,))):
        if not bool(mask.any()):
            continue
        targets = _region_faces(rig, regions, drawn)
        if len(targets) == 0:
            targets = skin_faces
        face, _ = nearest_triangles(vertices, rig.faces, targets, points[mask])
        colors = point_colors(points[mask], views)
        out.append(_bind(points[mask], colors, face, layer, rig, vertices, cfg))
    return out
