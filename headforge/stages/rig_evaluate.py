"""Scores of a fitted rig against views: face-region renders, masked PSNR.

The face region of a view is where the fitted rig's face skin (``Region.FACE_SKIN``) is the front-most surface
and the capture's mask is set: hair, neck and shoulders that the rig does not model are not scored. A render
of the textured fit there is compared with the view (PSNR in dB, sRGB in [0, 1]).
"""

from __future__ import annotations

import torch
from torch import Tensor

from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import project_points, world_to_clip
from headforge.metrics import psnr
from headforge.renderers.mesh_raster import rasterize
from headforge.renderers.mesh_render import render_mesh
from headforge.representations.mesh import TexturedMesh
from headforge.representations.rig.head_rig import HeadRig, Region
from headforge.stages.rig_texture import RigTexture, rig_textured_mesh

OCCLUSION_CELL_PX = 6  # z-buffer cell size (pixels) of the occlusion test


def drawn_faces(rig: HeadRig) -> Tensor:  # [F] bool: every face but the eye overlay shells
    if Region.EYE_OVERLAYS not in rig.region_names:
        return torch.ones(rig.faces.shape[0], dtype=torch.bool)
    return ~rig.region_mask(Region.EYE_OVERLAYS)[rig.faces].any(-1)


def rig_mesh(rig: HeadRig, vertices: Tensor, texture: Tensor | None = None) -> TexturedMesh:
    """The rig as a ``TexturedMesh``: vertices [V, 3], its faces, its per-corner UVs (shared rows merged),
    an optional texture [S, S, 3]. Eye overlay shells (tear film, occlusion: transparent in the source) are
    left out, as in every render of a rig."""
    keep = drawn_faces(rig)
    faces = rig.faces[keep]
    uvs, faces_uv = torch.unique(rig.uvs[keep].reshape(-1, 2).float(), dim=0, return_inverse=True)
    return TexturedMesh(vertices.float(), faces, uvs, faces_uv.reshape(-1, 3),
                        None if texture is None else texture.float(), None, rig.regions,
                        tuple(str(r) for r in rig.region_names))


def region_pixels(rig: HeadRig, vertices: Tensor, cameras: Cameras, region: Region = Region.FACE_SKIN
                  ) -> Tensor:  # -> [N, H, W] bool: pixels whose front-most rig triangle is in ``region``
    faces, tri = front_triangles(rig, vertices, cameras)
    in_region = rig.region_mask(region)[faces].all(-1)  # [F'] every corner in the region
    return (tri >= 0) & in_region[tri.clamp_min(0)]


def front_triangles(rig: HeadRig, vertices: Tensor, cameras: Cameras) -> tuple[Tensor, Tensor]:
    """The drawn faces [F', 3] (eye overlays left out) and the front-most one per pixel [N, H, W] (-1: none)."""
    faces = rig_mesh(rig, vertices).faces
    width, height = cameras.same_size()
    clip = world_to_clip(cameras, vertices.to(cameras.fx), 0.01, 100.0)
    return faces, rasterize(clip, faces, (height, width)).triangle_id


def face_psnr(rig: HeadRig, vertices: Tensor, texture: RigTexture, cameras: Cameras, images: Tensor,
              masks: Tensor) -> Tensor:
    """PSNR (dB) per view [N] of the textured fit over its face region; images [N, H, W, 3] sRGB, masks
    [N, H, W]. A view where the face region is empty scores NaN."""
    with torch.no_grad():
        render = render_mesh(rig_textured_mesh(rig, vertices, texture), cameras, antialiased=False)
        region = region_pixels(rig, vertices, cameras) & (masks > 0.5)
        out = psnr(render.rgb.to(images), images, region.to(images))
    return torch.where(region.flatten(1).any(1), out.double(), torch.full_like(out.double(), float("nan")))


def visible_points(rig: HeadRig, vertices: Tensor, cameras: Cameras, points: Tensor, tolerance: float,
                   cell_px: int = OCCLUSION_CELL_PX) -> Tensor:
    """[N, L] bool: world point l [L, 3] is not hidden behind the rig (world vertices [V, 3]) in view n.

    A coarse z-buffer of the rig's vertices (eye overlay shells left out; square cells of ``cell_px`` pixels
    keep the nearest depth): a point is visible when it is in front of its camera and its depth is within
    ``tolerance`` metres of its cell's. Rig vertices are millimetres apart, far denser than the cells, so the
    buffer has no holes on the head; a point outside the head's image counts as visible."""
    verts = vertices.double()
    if Region.EYE_OVERLAYS in rig.region_names:
        verts = verts[~rig.region_mask(Region.EYE_OVERLAYS)]
    width, height = cameras.same_size()
    cols, rows = max(1, -(-width // cell_px)), max(1, -(-height // cell_px))

    def cells(uv: Tensor) -> Tensor:  # [N, P, 2] pixels -> [N, P] flat cell index (clamped)
        c = (uv[..., 0] / cell_px).floor().long().clamp(0, cols - 1)
        r = (uv[..., 1] / cell_px).floor().long().clamp(0, rows - 1)
        return r * cols + c

    cams = cameras.to(dtype=torch.float64)
    uv_v, z_v = project_points(cams, verts)  # [N, P, 2], [N, P]
    zbuf = torch.full((len(cams), rows * cols), float("inf"), dtype=torch.float64)
    zbuf.scatter_reduce_(1, cells(uv_v), torch.where(z_v > 0, z_v, torch.full_like(z_v, float("inf"))), "amin")
    uv, z = project_points(cams, points.double())  # [N, L, 2], [N, L]
    return (z > 0) & (z <= zbuf.gather(1, cells(uv)) + tolerance)


def uv_grid(rig: HeadRig, vertices: Tensor, cameras: Cameras, cells: int = 32) -> Tensor:
    """[N, H, W] int64: the cell of a ``cells`` x ``cells`` grid over the rig's own UVs seen at each pixel (-1
    where the rig is not). Its cell boundaries draw the mesh's parametrisation over a photo, which stays
    readable where the triangles themselves are a few pixels wide."""
    from headforge.renderers.mesh_shading import interpolate

    keep = drawn_faces(rig)
    width, height = cameras.same_size()
    clip = world_to_clip(cameras, vertices.to(cameras.fx), 0.01, 100.0)
    rast = rasterize(clip, rig.faces[keep], (height, width))
    F_ = int(keep.sum())
    uv = interpolate(rig.uvs[keep].reshape(-1, 2).to(clip), rast, torch.arange(3 * F_).reshape(F_, 3))
    cell = (uv * cells).floor().long()
    label = cell[..., 0] * (64 * cells) + cell[..., 1]
    return torch.where(rast.triangle_id >= 0, label, torch.full_like(label, -1))
