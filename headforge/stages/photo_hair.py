"""Stage: the hair layer of a one-photo fit: Gaussians over the scalp, bound to its triangles (``LayerCode.HAIR``).

The rule (all in the photo camera's world, on the fitted rig's scalp vertices, normals n, view cosine
c = n . (camera - vertex) / |camera - vertex|):

1. Presence, observed where the photo shows the scalp: a scalp vertex in front (c > 0, not hidden by the rig's
   own depth) has hair when its pixel is in the hair mask; a *rim* vertex (|c| < ``rim_cos`` whose outward
   normal leaves the head's rendered silhouette) has hair when the first step out along n lands in the mask.
2. Thickness, observed at the rim only (the one place one view measures it): march v + t n, t = step, 2 step,
   ... up to ``max_thickness``; the thickness is the length of the run of steps whose pixels are in the hair mask.
3. Everywhere else (the back and top the photo cannot see, the front where the hair lies toward the camera) both
   are the harmonic interpolation of the observations over the scalp's vertex graph (Laplace's equation with the
   observations fixed; screened by ``screen_weight`` toward no hair and ``default_thickness`` so a scalp part no
   observation reaches is defined). Unobserved vertices facing away from the camera (c < 0) then have their
   thickness scaled by ``back_fraction + (1 - back_fraction) (1 + c)``: continuous at the rim, ``back_fraction``
   at the very back (hair lies flatter there than the silhouette shows at the sides).
4. Gaussians: ``points`` anchors area-sampled on the scalp triangles (presence, thickness and normal
   interpolated by barycentrics), kept where presence >= 0.5 and thickness >= ``min_thickness``, each placed at
   anchor + u thickness n with u uniform in [``inner``, 1] (a volume, not a shell), isotropic with the mean
   distance to their neighbours as scale, bound to the triangle they were sampled on.
5. Colour: a Gaussian whose projection lands in the hair mask and is not behind the rig's surface there takes
   its pixel (bilinear); the others the median colour of the hair pixels plus a seeded jitter (``jitter`` per
   channel, Gaussian). A photo without hair pixels gives no hair Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at
import numpy as np
import torch
from torch import Tensor

from headforge.geometry.bilinear import bilinear_image
from headforge.geometry.rays import project_points, world_to_clip
from headforge.renderers.mesh_raster import rasterize
from headforge.representations.bound_gaussians import LayerCode, bind_world_splats
from headforge.representations.gaussians import Splats, init_splats
from headforge.representations.mesh import TexturedMesh
from headforge.representations.rig.head_rig import HeadRig, Region
from headforge.stages.avatar import BoundSplats
from headforge.stages.avatar_init import sample_triangles
from headforge.stages.photo_types import AlignedPhoto
from headforge.stages.rig_evaluate import drawn_faces
from headforge.stages.rig_params import RigParams, world_vertices
from headforge.stages.texture_complete import screened_poisson
from headforge.validation import Checked, Fraction, NonNegative, Positive

__all__ = ["HairObservations", "PhotoHairConfig", "empty_bound_splats", "hair_observations", "photo_hair"]

STAGE = "photo hair"


@dataclass(frozen=True)
class PhotoHairConfig(Checked):
    points: Annotated[int, at.Ge(1), at.Le(1_000_000)] = 20_000  # anchors sampled on the scalp
    max_thickness: Positive = 0.08  # metres marched out along the normal at the rim
    step: Positive = 0.002  # metres per march step
    rim_cos: Annotated[float, at.Gt(0), at.Lt(1)] = 0.35
    back_fraction: Fraction = 0.7
    default_thickness: Positive = 0.01  # metres, where no observation reaches
    min_thickness: NonNegative = 0.001
    inner: Fraction = 0.15
    screen_weight: Positive = 1e-4
    init_opacity: Annotated[float, at.Gt(0), at.Lt(1)] = 0.9
    jitter: NonNegative = 0.03
    depth_tolerance: Positive = 0.004  # metres a point may lie behind the rig's depth and still be seen


@dataclass(frozen=True, eq=False)
class HairObservations:
    vertices: Tensor  # [Vs] int64 scalp vertices
    presence: Tensor  # [Vs] float64 in [0, 1] after interpolation
    thickness: Tensor  # [Vs] float64 metres after interpolation and the back fall-off
    observed_presence: Tensor  # [Vs] bool
    observed_thickness: Tensor  # [Vs] bool (rim vertices)


def empty_bound_splats(sh_degree: int = 0) -> BoundSplats:
    k = (sh_degree + 1) ** 2
    z = torch.zeros
    return BoundSplats(Splats(z(0, 3), z(0, 4), z(0, 3), z(0), z(0, k, 3)), z(0, dtype=torch.long),
                       z(0, dtype=torch.long))


def _lookup(mask: Tensor, uv: Tensor) -> Tensor:  # [H, W] bool, pixels [P, 2] -> [P] bool (nearest, outside False)
    H, W = mask.shape
    col, row = torch.floor(uv[:, 0]).long(), torch.floor(uv[:, 1]).long()
    inside = (col >= 0) & (col < W) & (row >= 0) & (row < H)
    return inside & mask[row.clamp(0, H - 1), col.clamp(0, W - 1)]


def _harmonic(edges: np.ndarray, n: int, observed: np.ndarray, values: np.ndarray, default: float,
              screen: float) -> np.ndarray:
    """Screened harmonic interpolation on a graph: observed values fixed, the rest solve L f + screen (f - default)
    = 0 (L the graph Laplacian, edges [E, 2] each once)."""
    known = np.where(observed, values, default).astype(np.float64)[:, None]
    return screened_poisson(edges[:, 0], edges[:, 1], observed, known, None, np.full((n, 1), float(default)),
                            screen)[:, 0]


def _render_depth(rig: HeadRig, verts: Tensor, photo: AlignedPhoto) -> Tensor:  # -> [H, W] camera z, 0 = empty
    cam = photo.camera.to(dtype=torch.float32)
    dist = float((cam.centers()[0].double() - verts.mean(0)).norm())
    with torch.no_grad():
        clip = world_to_clip(cam, verts.float(), max(1e-3, dist * 0.2), dist * 5)
        return rasterize(clip, rig.faces[drawn_faces(rig)], (photo.size, photo.size)).depth[0]


def hair_observations(photo: AlignedPhoto, rig: HeadRig, verts: Tensor, config: PhotoHairConfig) -> HairObservations:
    """Steps 1-3 of the module doc on the fitted world vertices [V, 3]."""
    scalp_v = rig.region_mask(Region.SCALP).nonzero().squeeze(1)
    normals = TexturedMesh(verts.double(), rig.faces).vertex_normals()[scalp_v]
    p = verts.double()[scalp_v]
    cam = photo.camera.to(dtype=torch.float64)
    to_cam = cam.centers()[0] - p
    cos = (normals * to_cam).sum(-1) / to_cam.norm(dim=-1)
    depth = _render_depth(rig, verts, photo)
    hair, covered = photo.hair_mask.bool(), depth > 0
    uv, z = project_points(cam, p)
    H, W = depth.shape
    col, row = uv[0, :, 0].floor().long().clamp(0, W - 1), uv[0, :, 1].floor().long().clamp(0, H - 1)
    d = depth[row, col].double()
    front = (cos > 0) & (d > 0) & ((z[0] - d).abs() < config.depth_tolerance)
    steps = torch.arange(1, int(config.max_thickness / config.step) + 1, dtype=torch.float64) * config.step
    out_uv, _ = project_points(cam, (p[:, None] + steps[None, :, None] * normals[:, None]).reshape(-1, 3))
    in_hair = _lookup(hair, out_uv[0]).reshape(len(p), len(steps))
    outside = ~_lookup(covered, out_uv[0]).reshape(len(p), len(steps))
    rim = (cos.abs() < config.rim_cos) & outside[:, 0]
    run = torch.cumprod(in_hair.double(), 1).sum(1) * config.step  # metres of contiguous hair from the first step
    obs_p = front | rim
    presence_obs = torch.where(front, _lookup(hair, uv[0]).double(), in_hair[:, 0].double())
    # scalp edges (each once) in the scalp vertices' numbering
    pos = torch.full((rig.num_vertices,), -1, dtype=torch.long)
    pos[scalp_v] = torch.arange(len(scalp_v))
    e = torch.cat([rig.faces[:, [0, 1]], rig.faces[:, [1, 2]], rig.faces[:, [2, 0]]])
    e = pos[e]
    e = e[(e >= 0).all(1)]
    e = torch.unique(torch.sort(e, 1).values, dim=0).numpy()
    n = len(scalp_v)
    presence = _harmonic(e, n, obs_p.numpy(), presence_obs.numpy(), 0.0, config.screen_weight)
    has = rim & (run > 0)
    if bool(has.any()):
        thick = _harmonic(e, n, has.numpy(), run.numpy(), config.default_thickness, config.screen_weight)
    else:
        thick = np.full(n, config.default_thickness)
    thick = torch.from_numpy(thick)
    back = ~has & (cos < 0)
    fall = config.back_fraction + (1 - config.back_fraction) * (1 + cos)
    thick = torch.where(back, thick * fall, thick)
    return HairObservations(scalp_v, torch.from_numpy(presence).clamp(0, 1), thick, obs_p, has)


def photo_hair(photo: AlignedPhoto, rig: HeadRig, params: RigParams, config: PhotoHairConfig | None,
               generator: torch.Generator) -> BoundSplats:
    """The hair layer for ``rig`` fitted as ``params`` (one frame, world = the photo camera's world), see the
    module doc; bound to the fitted vertices (triangle-local, so it follows the scalp in any pose)."""
    config = config or PhotoHairConfig()
    if Region.SCALP not in rig.region_names:
        return empty_bound_splats()
    hair_px = photo.hair_mask.bool() & (photo.person_mask > 0.5)
    if int(hair_px.sum()) == 0:
        return empty_bound_splats()
    verts = world_vertices(rig, params)[0]
    obs = hair_observations(photo, rig, verts, config)
    scalp = rig.region_mask(Region.SCALP)
    faces = (scalp[rig.faces].all(1) & drawn_faces(rig)).nonzero().squeeze(1)
    points, face, bary = sample_triangles(verts.double(), rig.faces, faces, config.points, generator)
    pos = torch.full((rig.num_vertices,), -1, dtype=torch.long)
    pos[obs.vertices] = torch.arange(len(obs.vertices))
    corner = pos[rig.faces[face]]  # [P, 3] into the scalp vertices
    presence = (bary * obs.presence[corner]).sum(1)
    thickness = (bary * obs.thickness[corner]).sum(1)
    normals = TexturedMesh(verts.double(), rig.faces).vertex_normals()
    n = torch.nn.functional.normalize((bary[..., None] * normals[rig.faces[face]]).sum(1), dim=-1)
    keep = (presence >= 0.5) & (thickness >= config.min_thickness)
    if not bool(keep.any()):
        return empty_bound_splats()
    u = config.inner + (1 - config.inner) * torch.rand(int(keep.sum()), generator=generator, dtype=torch.float64)
    world = points[keep] + (u * thickness[keep])[:, None] * n[keep]
    face = face[keep]
    colors = _colors(photo, rig, verts, world, hair_px, config, generator)
    splats = init_splats(world.float(), colors.float(), max_sh_degree=0, init_opacity=config.init_opacity)
    local = bind_world_splats(splats, face, verts.float(), rig.faces)
    return BoundSplats(local, face.long(), torch.full((len(face),), int(LayerCode.HAIR), dtype=torch.long))


def _colors(photo: AlignedPhoto, rig: HeadRig, verts: Tensor, world: Tensor, hair_px: Tensor,
            config: PhotoHairConfig, generator: torch.Generator) -> Tensor:  # -> [P, 3] float64 in [0, 1]
    cam = photo.camera.to(dtype=torch.float64)
    uv, z = project_points(cam, world)
    depth = _render_depth(rig, verts, photo)
    H, W = depth.shape
    col, row = uv[0, :, 0].floor().long().clamp(0, W - 1), uv[0, :, 1].floor().long().clamp(0, H - 1)
    d = depth[row, col].double()
    unhidden = (d <= 0) | (z[0] <= d + config.depth_tolerance)
    seen = _lookup(hair_px, uv[0]) & unhidden
    median = photo.image[hair_px].double().median(0).values
    noise = torch.randn(len(world), 3, generator=generator, dtype=torch.float64) * config.jitter
    pixel = bilinear_image(photo.image.double(), uv[0] / torch.tensor([W, H], dtype=torch.float64))  # pixels -> st
    return torch.where(seen[:, None], pixel, median + noise).clamp(0, 1)
