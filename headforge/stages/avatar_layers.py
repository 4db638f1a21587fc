"""Layered avatars: the occlusion-correct composite of the mesh face and the Gaussian layers, hair swap, texture
edits.

Composite. The face layer is the fitted mesh with its baked texture (``render_mesh``: colour, coverage, depth);
the Gaussian layers (face Gaussians on top of the skin, hair, clothing) are splats. The Gaussian rasterizer has no
depth test against a mesh, so per view each Gaussian is tested by its *centre* only: a Gaussian whose centre
projects onto the mesh and lies behind the mesh surface there by more than ``tolerance`` (rig-frame metres,
scaled by the fit's similarity in the world) is left out of that view; the rest are rasterized over black and
composited over the mesh, ``C = C_g + (1 - A_g) (A_m C_m + (1 - A_m) background)``, ``A = A_g + (1 - A_g) A_m``.
The approximation: a kept Gaussian is drawn whole over the mesh (its tail beyond the surface too, so a
large Gaussian just in front of the skin may spill over a nearer silhouette), a dropped one not at all; a
Gaussian whose centre falls outside the mesh's coverage in a view is always kept. Gaussians on the skin (within
the tolerance) stay, so trained face Gaussians sit on top of their own mesh.

Hair swap (:func:`swap_hair`). The receiver keeps its face and clothing Gaussians and takes the donor's hair
layer, moved through the rigs' canonical space. With the same rig (same spec, or same source and faces) a hair
Gaussian keeps its triangle and its triangle-local values: it follows the receiver's scalp (size, shape,
expression). Across rigs each donor Gaussian is posed on the donor rig's *template* (the canonical head frame,
metres), its triangle is mapped to the nearest receiver triangle of the same region (scalp for scalp; the scalp
when the receiver lacks the region) by exact closest point from the donor triangle's centroid in the receiver's
template, and the Gaussian is moved with it: translated from the donor centroid to that closest point and
turned by the smallest rotation taking the donor triangle's normal to the receiver's, its metric size kept. So
its neutral position relative to the scalp (height above it, offset along it, orientation) is kept; it is then
bound to the receiver's triangle on the receiver template (the inverse of posing). SH degrees may differ: each
part is cut to its own degree and padded with zero bands.

Texture edits. :func:`tint_face` multiplies the mesh texture (clamped to [0, 1]) and the face-layer Gaussians'
colours (SH colour ``c = Y . sh + 0.5`` -> ``f c``: every band times ``f`` and the DC term shifted by
``(f - 1) 0.5 / C0``) by ``f``; hair and clothing are untouched. :func:`replace_face_texture` replaces the mesh
texture and rescales each face Gaussian's colour by (new + eps) / (old + eps) of the texture at its triangle's
UV: the texel under the projection of its local mean onto its triangle's plane (barycentrics clamped into the
triangle), in the avatar's atlas.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from headforge.errors import InputError
from headforge.geometry.bilinear import bilinear_image
from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import project_points
from headforge.geometry.rotations import rotmat_to_quat
from headforge.geometry.sh import SH_C0, num_sh_bases
from headforge.renderers.mesh_render import render_mesh
from headforge.representations.bound_gaussians import (
    Layer,
    bind_world_splats,
    pose_bound,
    quat_multiply,
    triangle_frames,
)
from headforge.representations.gaussians import Splats
from headforge.representations.mesh import uv_to_texel
from headforge.representations.rig.head_rig import HeadRig, Region
from headforge.stages.avatar import Avatar, BoundSplats, avatar_vertices, pose_avatar
from headforge.stages.gaussian_train import render_splats
from headforge.stages.landmark_embedding import closest_points_on_triangles
from headforge.stages.rig_params import RigParams
from headforge.stages.rig_texture import rig_textured_mesh

__all__ = ["DEFAULT_TOLERANCE", "closest_among", "composite_render", "gaussian_texture_uvs", "occluded_centres",
           "replace_face_texture", "same_rig", "scale_colors", "swap_hair", "tint_face", "transfer_bound"]

DEFAULT_TOLERANCE = 0.003  # rig-frame metres a Gaussian centre may lie behind the mesh surface and still show
RATIO_EPS = 0.02  # added to both texels of a texture ratio, so a near-black old texel does not explode
NEAREST_CANDIDATES = 8  # receiver triangles (by centroid) searched exactly for each donor triangle


# ------------------------------------------------------------------------------------------ composite
def occluded_centres(means: Tensor, cameras: Cameras, depth: Tensor, coverage: Tensor, tolerance: float) -> Tensor:
    """means [N, 3] world, mesh depth [C, H, W] (camera z, 0 where empty), coverage [C, H, W] -> [C, N] bool:
    the centre projects inside the image onto the mesh and lies more than ``tolerance`` behind its surface."""
    H, W = depth.shape[1:]
    uv, z = project_points(cameras.to(dtype=torch.float64), means.double())  # [C, N, 2], [C, N]
    col, row = torch.floor(uv[..., 0]).long(), torch.floor(uv[..., 1]).long()
    inside = (col >= 0) & (col < W) & (row >= 0) & (row < H) & (z > 0)
    flat = row.clamp(0, H - 1) * W + col.clamp(0, W - 1)  # [C, N]
    d = depth.flatten(1).double().gather(1, flat)
    on_mesh = coverage.flatten(1).gather(1, flat) > 0.5
    return inside & on_mesh & (d > 0) & (z > d + tolerance)


def _rasterize(splats: Splats, cameras: Cameras, sh_degree: int, background: Tensor | None
               ) -> tuple[Tensor, Tensor]:  # -> rgb [C, H, W, 3], alpha [C, H, W, 1]
    s = Splats(splats.means.float(), splats.quats.float(), splats.scales.float(), splats.opacities.float(),
               splats.sh[:, :num_sh_bases(sh_degree)].float())
    bg = None if background is None else background.float()
    out = render_splats(s, cameras.to(dtype=torch.float32), sh_degree, bg)
    return out.rgb, out.alpha


def composite_render(avatar: Avatar, params: RigParams, cameras: Cameras, background: Tensor, *,
                     mesh_face: bool = True, layers: tuple[Layer, ...] = tuple(Layer), world: bool = True,
                     tolerance: float = DEFAULT_TOLERANCE) -> tuple[Tensor, Tensor]:
    """The avatar under one frame of ``params`` from ``cameras`` (in the capture's world, or the rig frame
    with ``world=False``) over ``background`` [3] -> rgb [C, H, W, 3], alpha [C, H, W, 1] (see the module doc).
    ``mesh_face=False``: the plain Gaussian render of ``layers``. A preview and metric render: no gradients."""
    if params.num_frames != 1:
        raise ValueError(f"composite_render takes one frame, got {params.num_frames}")
    W, H = cameras.same_size()
    bg = background.float().reshape(3)
    with torch.no_grad():
        splats = pose_avatar(avatar, params, world=world, layers=tuple(layers)) if layers else None
        if not mesh_face:
            if splats is None or len(splats) == 0:
                return bg.expand(len(cameras), H, W, 3).clone(), torch.zeros(len(cameras), H, W, 1)
            return _rasterize(splats, cameras, avatar.sh_degree, bg)
        verts = avatar_vertices(avatar, params, world=world)[0]
        mesh = render_mesh(rig_textured_mesh(avatar.rig, verts, avatar.texture), cameras.to(dtype=torch.float32))
        a_m = mesh.alpha[..., None]
        under = mesh.rgb * a_m + (1 - a_m) * bg
        if splats is None or len(splats) == 0:
            return under, a_m
        tol = tolerance * (float(params.similarity.scale) if world else 1.0)
        hidden = occluded_centres(splats.means, cameras, mesh.depth, mesh.alpha, tol)  # [C, N]
        rgb, alpha = torch.empty_like(under), torch.empty_like(a_m)
        for c in range(len(cameras)):
            keep = ~hidden[c]
            if not bool(keep.any()):
                rgb[c], alpha[c] = under[c], a_m[c]
                continue
            s = splats
            g_rgb, g_a = _rasterize(Splats(s.means[keep], s.quats[keep], s.scales[keep], s.opacities[keep],
                                           s.sh[keep]), cameras[c], avatar.sh_degree, None)
            rgb[c] = g_rgb[0] + (1 - g_a[0]) * under[c]
            alpha[c] = g_a[0] + (1 - g_a[0]) * a_m[c]
    return rgb, alpha


# ------------------------------------------------------------------------------------------ hair swap
def same_rig(a: Avatar, b: Avatar) -> bool:
    """Both avatars are bound to one rig (same spec, or same source and the same faces)."""
    if a.rig.faces.shape != b.rig.faces.shape or a.rig.num_vertices != b.rig.num_vertices:
        return False
    return a.rig_spec == b.rig_spec or (a.rig.source == b.rig.source and torch.equal(a.rig.faces, b.rig.faces))


def _rotation_between(n_from: Tensor, n_to: Tensor) -> Tensor:  # [M, 3] unit, [M, 3] unit -> [M, 3, 3]
    """The smallest rotation taking each ``n_from`` to ``n_to`` (Rodrigues; a half turn about a perpendicular
    axis for opposite normals)."""
    v = torch.linalg.cross(n_from, n_to)
    c = (n_from * n_to).sum(-1)
    K = torch.zeros(len(v), 3, 3, dtype=v.dtype)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    K = K - K.transpose(1, 2)
    R = torch.eye(3, dtype=v.dtype) + K + K @ K / (1 + c).clamp_min(1e-9)[:, None, None]
    opposite = c < -1 + 1e-9
    if bool(opposite.any()):
        axis = torch.linalg.cross(n_from[opposite], _perpendicular(n_from[opposite]))
        axis = axis / axis.norm(dim=-1, keepdim=True)
        R[opposite] = 2 * axis[:, :, None] * axis[:, None, :] - torch.eye(3, dtype=v.dtype)
    return R


def _perpendicular(n: Tensor) -> Tensor:  # [M, 3] -> [M, 3] some vector not parallel to n
    e = torch.zeros_like(n)
    e[torch.arange(len(n)), n.abs().argmin(-1)] = 1.0
    return e


def _candidate_faces(rig: HeadRig, region: Region) -> Tensor:  # [F'] faces of the rig with all corners in region
    return rig.region_mask(region)[rig.faces].all(1).nonzero().squeeze(1)


def closest_among(points: Tensor, tris: Tensor, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """points [M, 3], each with its own candidate triangles [M, k, 3, 3] -> the closest point [M, 3] over its
    candidates and which candidate [M] (exact; ``closest_points_on_triangles`` on chunks, its diagonal blocks)."""
    M, k = tris.shape[:2]
    best_pt, best_j = torch.empty(M, 3, dtype=points.dtype), torch.empty(M, dtype=torch.long)
    for s in range(0, M, chunk):
        p, t = points[s:s + chunk], tris[s:s + chunk]
        n = len(p)
        pts, _ = closest_points_on_triangles(p, t.reshape(n * k, 3, 3))  # [n, n * k, 3]
        own = pts.reshape(n, n, k, 3)[torch.arange(n), torch.arange(n)]  # [n, k, 3]
        j = (own - p[:, None]).norm(dim=-1).argmin(1)
        best_pt[s:s + n], best_j[s:s + n] = own[torch.arange(n), j], j
    return best_pt, best_j


def transfer_bound(bound: BoundSplats, source: HeadRig, target: HeadRig) -> BoundSplats:
    """Re-bind Gaussians from ``source``'s triangles to ``target``'s through the templates (see the module doc)."""
    if Region.SCALP not in target.region_names or len(_candidate_faces(target, Region.SCALP)) == 0:
        raise InputError(f"the receiving rig ({target.source}) has no scalp triangles to carry hair",
                         fix="swap onto an avatar whose rig labels a scalp region")
    src_v, dst_v = source.template.double(), target.template.double()
    Rs, Ts, _ = triangle_frames(src_v, source.faces)
    Rt, _, _ = triangle_frames(dst_v, target.faces)
    tris = torch.unique(bound.binding)  # donor triangles used
    tri_region = source.regions[source.faces[tris, 0]]  # [U] region index of each (its first corner's)
    new_tri = torch.empty_like(tris)
    anchor = torch.empty(len(tris), 3, dtype=torch.float64)  # closest receiver point to each donor centroid
    for r in torch.unique(tri_region).tolist():
        region = source.region_names[r]
        cand = _candidate_faces(target, region) if region in target.region_names else torch.zeros(0, dtype=torch.long)
        if len(cand) == 0:
            cand = _candidate_faces(target, Region.SCALP)
        sel = tri_region == r
        centroids = Ts[tris[sel]]  # [M, 3]
        cand_centroids = dst_v[target.faces[cand]].mean(1)
        k = min(NEAREST_CANDIDATES, len(cand))
        _, near = cKDTree(cand_centroids.numpy()).query(centroids.numpy(), k=k)
        near = torch.from_numpy(np.asarray(near, dtype=np.int64).reshape(len(centroids), k))
        best_pt, best_j = closest_among(centroids, dst_v[target.faces[cand[near]]])
        new_tri[sel], anchor[sel] = cand[near.gather(1, best_j[:, None])[:, 0]], best_pt
    slot = torch.searchsorted(tris, bound.binding)  # [N] index into tris
    world = pose_bound(_double(bound.local), bound.binding, src_v, source.faces)  # donor template space
    turn = _rotation_between(Rs[tris][:, :, 1], Rt[new_tri][:, :, 1])[slot]  # normals are frame column 1
    means = anchor[slot] + torch.einsum("nij,nj->ni", turn, world.means - Ts[bound.binding])
    quats = quat_multiply(rotmat_to_quat(turn), world.quats)
    moved = Splats(means, quats, world.scales, world.opacities, world.sh)
    binding = new_tri[slot]
    local = bind_world_splats(moved, binding, dst_v, target.faces)
    dtype = bound.local.means.dtype
    return BoundSplats(Splats(*(t.to(dtype) for t in (local.means, local.quats, local.scales, local.opacities,
                                                      local.sh))), binding, bound.layer.clone())


def _double(s: Splats) -> Splats:
    return Splats(s.means.double(), s.quats.double(), s.scales.double(), s.opacities.double(), s.sh.double())


def _cut_sh(bound: BoundSplats, degree: int) -> BoundSplats:
    s = bound.local
    return BoundSplats(Splats(s.means, s.quats, s.scales, s.opacities, s.sh[:, :num_sh_bases(degree)]),
                       bound.binding, bound.layer)


def swap_hair(receiver: Avatar, donor: Avatar) -> Avatar:
    """The receiver with the donor's hair layer (see the module doc); counts: the receiver's face and clothing,
    the donor's hair."""
    hair = donor.gaussians.select(donor.gaussians.layer_mask(Layer.HAIR))
    if len(hair) == 0:
        raise InputError("the donor avatar has no hair Gaussians (layer 'hair' is empty)",
                         fix="choose a donor whose avatar has a hair layer")
    if not same_rig(receiver, donor):
        hair = transfer_bound(hair, donor.rig, receiver.rig)
    keep = receiver.gaussians.select(~receiver.gaussians.layer_mask(Layer.HAIR))
    degree = max(receiver.sh_degree, donor.sh_degree)
    merged = BoundSplats.concat([_cut_sh(keep, receiver.sh_degree), _cut_sh(hair, donor.sh_degree)])
    return replace(receiver, gaussians=merged, sh_degree=degree)


# ------------------------------------------------------------------------------------------ texture edits
def scale_colors(sh: Tensor, factor: Tensor) -> Tensor:
    """SH [N, K, 3] whose colour (Y . sh + 0.5, any direction) is ``factor`` [N, 3] or [3] times the old one."""
    f = factor.to(sh).expand(sh.shape[0], 3)
    out = sh * f[:, None]
    out[:, 0] = out[:, 0] + (f - 1) * 0.5 / SH_C0
    return out


def _with_colors(avatar: Avatar, mask: Tensor, factor: Tensor) -> BoundSplats:  # factor [M, 3] for mask's rows
    g = avatar.gaussians
    sh = g.local.sh.clone()
    sh[mask] = scale_colors(sh[mask], factor)
    s = g.local
    return BoundSplats(Splats(s.means, s.quats, s.scales, s.opacities, sh), g.binding, g.layer)


def tint_face(avatar: Avatar, rgb: tuple[float, float, float]) -> Avatar:
    """Multiply the face texture and the face-layer Gaussians' colours by ``rgb`` (each finite and > 0)."""
    f = torch.tensor(rgb, dtype=torch.float64)
    if f.shape != (3,) or not bool(torch.isfinite(f).all()) or bool((f <= 0).any()):
        raise InputError(f"a tint must be three finite numbers > 0, got {tuple(rgb)}",
                         fix="give R,G,B factors such as 1.1,1.0,0.9")
    face = avatar.gaussians.layer_mask(Layer.FACE)
    texture = (avatar.texture.texture * f.float()).clamp(0, 1)
    return replace(avatar, texture=replace(avatar.texture, texture=texture),
                   gaussians=_with_colors(avatar, face, f.expand(int(face.sum()), 3)))


def gaussian_texture_uvs(avatar: Avatar, bound: BoundSplats) -> tuple[Tensor, Tensor]:
    """Atlas UVs (OBJ convention) [N, 2] under each Gaussian's projection onto its triangle, and [N] bool: its
    triangle is in the texture atlas (else the UV is 0)."""
    verts = avatar_vertices(avatar, avatar.neutral_params(), world=False)[0].double()
    faces = avatar.rig.faces
    R, T, k = triangle_frames(verts, faces)
    b = bound.binding
    mu = bound.local.means.double()
    p = T[b] + k[b, None] * (R[b][:, :, 0] * mu[:, :1] + R[b][:, :, 2] * mu[:, 2:])  # in-plane point [N, 3]
    a, bb, c = (verts[faces[b, i]] for i in range(3))
    n = torch.linalg.cross(bb - a, c - a)
    nn = (n * n).sum(-1).clamp_min(1e-30)
    w0 = (torch.linalg.cross(bb - p, c - p) * n).sum(-1) / nn
    w1 = (torch.linalg.cross(c - p, a - p) * n).sum(-1) / nn
    bary = torch.stack([w0, w1, 1 - w0 - w1], -1).clamp_min(0)
    bary = bary / bary.sum(-1, keepdim=True).clamp_min(1e-12)
    row = torch.full((faces.shape[0],), -1, dtype=torch.long)
    row[avatar.texture.faces] = torch.arange(len(avatar.texture.faces))
    r = row[b]
    found = r >= 0
    uvs = avatar.texture.uvs.double()[r.clamp_min(0)]  # [N, 3, 2]
    uv = (bary[:, :, None] * uvs).sum(1)
    return torch.where(found[:, None], uv, torch.zeros_like(uv)), found


def replace_face_texture(avatar: Avatar, image: Tensor) -> Avatar:
    """The avatar with ``image`` [S, S, 3] (atlas layout, sRGB in [0, 1], the avatar's texture size) as its
    face texture; face-layer Gaussians rescaled by new / old texture colour at their UV (see the module doc)."""
    old = avatar.texture.texture
    if tuple(image.shape) != tuple(old.shape):
        raise InputError(f"the new texture is {list(image.shape)}, the avatar's is {list(old.shape)}",
                         fix="resample it to the avatar's texture size (edit-texture does)")
    if not bool(torch.isfinite(image).all()):
        raise InputError("the new texture has non-finite values", fix="give an 8- or 16-bit PNG")
    face = avatar.gaussians.layer_mask(Layer.FACE)
    g = avatar.gaussians.select(face)
    uv, found = gaussian_texture_uvs(avatar, g)
    st = uv_to_texel(uv)
    ratio = (bilinear_image(image.double(), st) + RATIO_EPS) / (bilinear_image(old.double(), st) + RATIO_EPS)
    ratio = torch.where(found[:, None], ratio, torch.ones_like(ratio))
    return replace(avatar, texture=replace(avatar.texture, texture=image.float().clone()),
                   gaussians=_with_colors(avatar, face, ratio))

