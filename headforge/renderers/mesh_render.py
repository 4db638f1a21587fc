"""Render a :class:`TexturedMesh` from :class:`Cameras`: colour, alpha, depth and normals.

Composes the rasterizer primitives (rasterize -> interpolate -> texture -> antialias). Colours are
unlit albedo (the texture, or vertex colours), which is what multi-view reconstruction is scored on;
``shading`` adds a simple head-light Lambert term for previews.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import world_to_clip
from headforge.renderers.mesh_raster import rasterize
from headforge.renderers.mesh_shading import TextureBoundary, TextureFilter, antialias, interpolate, texture
from headforge.representations.mesh import TexturedMesh, uv_to_texel


@dataclass(frozen=True)
class MeshRender:
    rgb: Tensor  # [N, H, W, 3] sRGB in [0, 1], black where empty
    alpha: Tensor  # [N, H, W] coverage in [0, 1]
    depth: Tensor  # [N, H, W] camera-space z (OpenCV), 0 where empty
    normals: Tensor  # [N, H, W, 3] world-space unit normals, 0 where empty


def render_mesh(mesh: TexturedMesh, cameras: Cameras, *, near: float = 0.01, far: float = 100.0,
                supersample: int = 1, antialiased: bool = True, shading: bool = False,
                max_mip_level: int | None = 4) -> MeshRender:
    """Render every camera (which must share one image size). ``supersample`` renders at k-times the
    resolution and box-filters down, which gives clean edges for synthetic ground truth."""
    width, height = cameras.same_size()
    k = max(1, int(supersample))
    cams = cameras if k == 1 else cameras.resize(width * k, height * k)
    clip = world_to_clip(cams, mesh.vertices.to(cams.fx), near, far)  # [N, V, 4]
    rast = rasterize(clip, mesh.faces, (height * k, width * k))
    mask = rast.mask.to(clip.dtype)[..., None]  # [N, H, W, 1]
    if mesh.has_texture:
        uv = interpolate(uv_to_texel(mesh.uvs.to(clip)), rast, mesh.faces_uv)
        filt = TextureFilter.LINEAR_MIPMAP_LINEAR if max_mip_level else TextureFilter.LINEAR
        color = texture(mesh.texture.to(clip), uv, filter=filt, boundary=TextureBoundary.CLAMP,
                        max_mip_level=max_mip_level)
    elif mesh.vertex_colors is not None:
        color = interpolate(mesh.vertex_colors.to(clip), rast, mesh.faces)
    else:
        color = torch.full((*rast.triangle_id.shape, 3), 0.7, dtype=clip.dtype)
    normals = F.normalize(interpolate(mesh.vertex_normals().to(clip), rast, mesh.faces), dim=-1) * mask
    if shading:
        to_cam = F.normalize(cams.centers()[:, None, None, :] - _surface_points(cams, rast), dim=-1)
        lambert = (normals * to_cam).sum(-1, keepdim=True).clamp(0, 1)
        color = color * (0.35 + 0.65 * lambert)
    color = color * mask
    rgba = torch.cat([color, mask], -1)
    if antialiased:
        rgba = antialias(rgba, rast, clip, mesh.faces)
    depth = rast.depth[..., None]
    if k > 1:
        pool = lambda x: F.avg_pool2d(x.permute(0, 3, 1, 2), k).permute(0, 2, 3, 1)  # noqa: E731
        rgba, normals = pool(rgba), pool(normals)
        # depth: average of the covered sub-pixels only, so silhouettes do not blend toward 0
        cover = pool(mask)
        depth = pool(depth * mask) / cover.clamp_min(1e-8)
        normals = F.normalize(normals, dim=-1) * (cover > 0)
    alpha = rgba[..., 3].clamp(0, 1)
    rgb = rgba[..., :3] / alpha[..., None].clamp_min(1e-8) * (alpha[..., None] > 0)  # un-premultiply
    return MeshRender(rgb.clamp(0, 1), alpha, depth[..., 0], normals)


def _surface_points(cams: Cameras, rast) -> Tensor:  # [N, H, W, 3] world points of visible surface
    from headforge.geometry.rays import generate_rays

    rays = generate_rays(cams)
    return rays.origins + rays.directions * (rast.depth / rays.z_scale)[..., None]
