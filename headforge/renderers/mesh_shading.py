"""Attribute interpolation, texture sampling (bilinear / trilinear mipmaps) and analytic antialiasing.

All ops are plain differentiable torch; shapes follow nvdiffrast (images are [B, H, W, C]).
"""

from __future__ import annotations

from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor

from headforge.geometry.bilinear import bilinear_flat
from headforge.renderers.mesh_raster import Rasterization, check_mesh_inputs


class TextureFilter(StrEnum):
    NEAREST = "nearest"
    LINEAR = "linear"  # bilinear
    LINEAR_MIPMAP_LINEAR = "linear-mipmap-linear"  # trilinear over a box-filtered mip pyramid


class TextureBoundary(StrEnum):
    WRAP = "wrap"  # repeat the texture
    CLAMP = "clamp"  # clamp to the edge texel


def interpolate(attributes: Tensor, rast: Rasterization, faces: Tensor) -> Tensor:
    """Barycentric interpolation. attributes [V, C] or [B, V, C], faces [F, 3] -> [B, H, W, C], 0 empty."""
    if attributes.ndim not in (2, 3):
        raise ValueError(f"attributes must be [V, C] or [B, V, C], got {tuple(attributes.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
    B, H, W = rast.triangle_id.shape
    V = attributes.shape[-2]
    faces = faces.to(device=attributes.device, dtype=torch.int64)
    if faces.numel() and int(faces.max()) >= V:
        raise ValueError(f"faces index attribute rows up to {int(faces.max())} but attributes have {V}")
    if attributes.ndim == 3 and attributes.shape[0] not in (1, B):
        raise ValueError(f"attribute batch {attributes.shape[0]} does not match rasterization batch {B}")
    tri = rast.triangle_id.clamp_min(0)  # [B, H, W]
    corner = faces[tri]  # [B, H, W, 3]
    if attributes.ndim == 2:
        vals = attributes[corner]  # [B, H, W, 3, C]
    else:
        bi = torch.arange(B, device=attributes.device).view(B, 1, 1, 1) if attributes.shape[0] == B else 0
        vals = attributes[bi, corner]  # [B, H, W, 3, C]
    out = (vals * rast.bary[..., None].to(vals.dtype)).sum(-2)  # [B, H, W, C]
    return torch.where(rast.mask[..., None], out, torch.zeros_like(out))


# ----------------------------------------------------------------------------------------- texture
def mip_pyramid(image: Tensor, max_mip_level: int | None = None) -> list[Tensor]:
    """Box-filtered pyramid of [B, Ht, Wt, C]; each level halves the size (floor, min 1) until 1x1."""
    levels = [image]
    x = image.permute(0, 3, 1, 2)  # [B, C, Ht, Wt]
    while (max_mip_level is None or len(levels) <= max_mip_level) and (x.shape[-1] > 1 or x.shape[-2] > 1):
        x = F.adaptive_avg_pool2d(x, (max(1, x.shape[-2] // 2), max(1, x.shape[-1] // 2)))
        levels.append(x.permute(0, 2, 3, 1))
    return levels


def _uv_derivatives(uv: Tensor) -> Tensor:  # [B, H, W, 2] -> [B, H, W, 4] (du/dx, du/dy, dv/dx, dv/dy)
    """One-sided finite differences, taking the smaller of forward/backward per axis (robust at
    silhouettes and UV seams, where one side jumps)."""
    def axis_diff(t: Tensor, dim: int) -> Tensor:
        d = torch.diff(t, dim=dim)
        fwd = torch.cat([d, d.narrow(dim, d.shape[dim] - 1, 1)], dim) if t.shape[dim] > 1 else torch.zeros_like(t)
        bwd = torch.cat([d.narrow(dim, 0, 1), d], dim) if t.shape[dim] > 1 else torch.zeros_like(t)
        return torch.where(fwd.abs() <= bwd.abs(), fwd, bwd)

    du_dx, dv_dx = axis_diff(uv, 2).unbind(-1)
    du_dy, dv_dy = axis_diff(uv, 1).unbind(-1)
    return torch.stack([du_dx, du_dy, dv_dx, dv_dy], -1)


def mip_level(uv_da: Tensor, tex_h: int, tex_w: int) -> Tensor:  # [B, H, W, 4] -> [B, H, W] float >= 0
    """Isotropic OpenGL level: log2 of the longer screen-axis footprint in level-0 texels."""
    dudx, dudy, dvdx, dvdy = uv_da.unbind(-1)
    lx = (dudx * tex_w) ** 2 + (dvdx * tex_h) ** 2
    ly = (dudy * tex_w) ** 2 + (dvdy * tex_h) ** 2
    return (0.5 * torch.log2(torch.maximum(lx, ly).clamp_min(1e-20))).clamp_min(0)


def texture(image: Tensor, uv: Tensor, *, filter: TextureFilter | str = TextureFilter.LINEAR,
            boundary: TextureBoundary | str = TextureBoundary.WRAP,
            uv_da: Tensor | None = None, max_mip_level: int | None = None) -> Tensor:
    """Sample image [Ht, Wt, C] or [B, Ht, Wt, C] at uv [B, H, W, 2] (texel convention: (0, 0) is the
    outer corner of the first texel in memory, texel centres at (i + 0.5) / Wt) -> [B, H, W, C].

    "linear-mipmap-linear" blends bilinear taps of the two nearest levels of a box-filtered pyramid;
    the level comes from uv_da [B, H, W, 4] = (du/dx, du/dy, dv/dx, dv/dy) per pixel, or, when uv_da is
    None, from finite differences of uv (not differentiated). Differentiable w.r.t. image and uv.
    """
    if filter not in set(TextureFilter):
        raise ValueError(f"unknown texture filter {filter!r}; choose one of {', '.join(TextureFilter)}")
    if boundary not in set(TextureBoundary):
        raise ValueError(f"unknown texture boundary {boundary!r}; choose one of {', '.join(TextureBoundary)}")
    filter, boundary = TextureFilter(filter), TextureBoundary(boundary)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4:
        raise ValueError(f"texture image must be [Ht, Wt, C] or [B, Ht, Wt, C], got {tuple(image.shape)}")
    if uv.ndim != 4 or uv.shape[-1] != 2:
        raise ValueError(f"uv must be [B, H, W, 2], got {tuple(uv.shape)}")
    B, H, W, _ = uv.shape
    if image.shape[0] not in (1, B):
        raise ValueError(f"texture batch {image.shape[0]} does not match uv batch {B}")
    if uv_da is not None and uv_da.shape != (B, H, W, 4):
        raise ValueError(f"uv_da must be [B, H, W, 4] = {(B, H, W, 4)}, got {tuple(uv_da.shape)}")
    image = image.expand(B, *image.shape[1:])
    Ht, Wt, C = image.shape[1:]
    wrap = boundary is TextureBoundary.WRAP
    uvf = uv.reshape(B, H * W, 2).to(image.dtype)
    if filter is TextureFilter.NEAREST:
        x = torch.floor(uvf[..., 0] * Wt).long()
        y = torch.floor(uvf[..., 1] * Ht).long()
        x = torch.remainder(x, Wt) if wrap else x.clamp(0, Wt - 1)
        y = torch.remainder(y, Ht) if wrap else y.clamp(0, Ht - 1)
        out = torch.gather(image.reshape(B, Ht * Wt, C), 1, (y * Wt + x)[..., None].expand(-1, -1, C))
        return out.reshape(B, H, W, C)
    levels = [image] if filter is TextureFilter.LINEAR else mip_pyramid(image, max_mip_level)
    if len(levels) == 1:
        zeros = torch.zeros(B, H * W, dtype=torch.int64, device=uv.device)
        out = bilinear_flat(image.reshape(B, Ht * Wt, C), uvf, zeros + Ht, zeros + Wt, zeros, wrap=wrap)
        return out.reshape(B, H, W, C)
    if uv_da is None:
        with torch.no_grad():
            level = mip_level(_uv_derivatives(uv.to(image.dtype)), Ht, Wt)
    else:
        level = mip_level(uv_da.to(image.dtype), Ht, Wt)
    level = level.reshape(B, H * W).clamp_max(len(levels) - 1)  # [B, P]
    flat = torch.cat([lv.reshape(B, -1, C) for lv in levels], 1)  # [B, N, C]
    sizes_h = torch.tensor([lv.shape[1] for lv in levels], device=uv.device)
    sizes_w = torch.tensor([lv.shape[2] for lv in levels], device=uv.device)
    offsets = torch.cumsum(sizes_h * sizes_w, 0) - sizes_h * sizes_w
    l0 = torch.floor(level).long().clamp_max(len(levels) - 1)  # [B, P]
    l1 = (l0 + 1).clamp_max(len(levels) - 1)
    frac = (level - l0.to(level.dtype))[..., None]  # [B, P, 1]
    a = bilinear_flat(flat, uvf, sizes_h[l0], sizes_w[l0], offsets[l0], wrap=wrap)
    b = bilinear_flat(flat, uvf, sizes_h[l1], sizes_w[l1], offsets[l1], wrap=wrap)
    return (a * (1 - frac) + b * frac).reshape(B, H, W, C)


# --------------------------------------------------------------------------------------- antialias
def edge_neighbours(faces: Tensor) -> Tensor:  # [F, 3] -> [F, 3] int64
    """Face across edge k = (vertex k, vertex k+1) of each face; -1 for boundary or non-manifold edges."""
    Fn = faces.shape[0]
    a, b = faces, faces.roll(-1, dims=1)
    key = (torch.minimum(a, b) * (int(faces.max()) + 1 if Fn else 1) + torch.maximum(a, b)).reshape(-1)
    order = torch.argsort(key, stable=True)
    sk = key[order]
    _, counts = torch.unique_consecutive(sk, return_counts=True)
    group_size = torch.repeat_interleave(counts, counts)  # [3F] size of each sorted edge's group
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    pos = torch.arange(len(sk), device=faces.device)
    partner = torch.where(pos == first, pos + 1, pos - 1).clamp(0, max(len(sk) - 1, 0))
    nb_sorted = torch.where(group_size == 2, order[partner] // 3, torch.full_like(order, -1))
    out = torch.empty_like(nb_sorted)
    out[order] = nb_sorted
    return out.reshape(Fn, 3)


def _pixel_centre(pix: Tensor, H: int, W: int, dtype: torch.dtype) -> Tensor:  # flat [P] -> [P, 2] pixels
    r = pix % (H * W)
    return torch.stack([(r % W).to(dtype) + 0.5, torch.div(r, W, rounding_mode="floor").to(dtype) + 0.5], -1)


def _edge_function(start: Tensor, direction: Tensor, pt: Tensor) -> Tensor:  # [P, 3, 2], [P, 3, 2], [P, 2] -> [P, 3]
    r = pt[:, None, :] - start
    return direction[..., 0] * r[..., 1] - direction[..., 1] * r[..., 0]


def antialias(color: Tensor, rast: Rasterization, clip: Tensor, faces: Tensor) -> Tensor:
    """Analytic silhouette antialiasing (after nvdiffrast, Laine et al. 2020). color [B, H, W, C].

    For each horizontally or vertically adjacent pixel pair with different triangle ids, the side with
    the smaller z/w (background = +inf) is the occluder p, covered by triangle T; the other pixel is q.
    The edge of T that the segment p -> q leaves T through is found with screen-space edge functions.
    If it is a silhouette edge (boundary, non-manifold, or its neighbour faces the other way) and the
    edge is closer to perpendicular to the pair (|dy| >= |dx| for horizontal pairs, |dx| > |dy| for
    vertical ones), let t in [0, 1] be where the edge crosses the segment between the centres. Then
    q gets (t - 1/2)(c_p - c_q) added when t > 1/2 (T covers that much of q's width), else p gets
    (1/2 - t)(c_q - c_p). Approximations: coverage is measured along the pair's axis through the pixel
    centre only (exact for a straight edge crossing the pixel's full height/width, not at corners);
    the colour of T inside q is c_p and the colour behind the edge inside p is c_q; contributions of
    several pairs to one pixel are summed from the input colours. Gradients reach the two edge
    vertices' clip positions through t (and both colours). Triangles with a vertex at w <= 0 are skipped.
    """
    if color.ndim != 4 or color.shape[:3] != rast.triangle_id.shape:
        raise ValueError(f"color must be [B, H, W, C] matching the rasterization {tuple(rast.triangle_id.shape)},"
                         f" got {tuple(color.shape)}")
    clip, faces = check_mesh_inputs(clip, faces)
    B, H, W, C = color.shape
    clip = clip.expand(B, *clip.shape[1:]) if clip.shape[0] == 1 else clip
    if clip.shape[0] != B:
        raise ValueError(f"clip batch {clip.shape[0]} does not match rasterization batch {B}")
    tri_id = rast.triangle_id.reshape(-1)  # [B*H*W]
    ndc = rast.ndc_z.detach().reshape(-1)
    idx = torch.arange(B * H * W, device=color.device).reshape(B, H, W)
    pairs = [(idx[:, :, :-1].reshape(-1), idx[:, :, 1:].reshape(-1), True),
             (idx[:, :-1, :].reshape(-1), idx[:, 1:, :].reshape(-1), False)]
    with torch.no_grad():
        v = clip[:, faces][..., (0, 1, 3)]  # [B, F, 3, 3]
        front = torch.linalg.det(v) < 0  # [B, F]
        all_w_pos = (v[..., 2] > 0).all(-1)  # [B, F]
        neighbours = edge_neighbours(faces)  # [F, 3]
    flat_color = color.reshape(B * H * W, C)
    out = flat_color
    for pa, pb, horizontal in pairs:
        differ = tri_id[pa] != tri_id[pb]
        pa, pb = pa[differ], pb[differ]
        a_front = ndc[pa] < ndc[pb]
        p = torch.where(a_front, pa, pb)  # occluder pixel
        q = torch.where(a_front, pb, pa)
        T = tri_id[p]
        b = torch.div(p, H * W, rounding_mode="floor")
        ok = (T >= 0) & all_w_pos[b, T.clamp_min(0)]
        p, q, T, b = p[ok], q[ok], T[ok], b[ok]
        verts = clip[b[:, None], faces[T]]  # [P, 3, 4] differentiable
        scr = torch.stack([(verts[..., 0] / verts[..., 3] + 1) * (W / 2),
                           (verts[..., 1] / verts[..., 3] + 1) * (H / 2)], -1)  # [P, 3, 2] pixel units

        cp, cq = _pixel_centre(p, H, W, scr.dtype), _pixel_centre(q, H, W, scr.dtype)
        s0 = scr  # [P, 3, 2] edge k runs from vertex k to vertex k+1
        d = scr.roll(-1, dims=1) - s0
        ep, eq = _edge_function(s0, d, cp), _edge_function(s0, d, cq)  # [P, 3]
        with torch.no_grad():
            crossing = (ep * eq) < 0
            t_all = torch.where(crossing, ep / torch.where(crossing, ep - eq, torch.ones_like(ep)),
                                torch.full_like(ep, 2.0))
            k = t_all.argmin(-1)  # [P] edge through which p -> q leaves T
            found = crossing.gather(1, k[:, None]).squeeze(1)
            nb = neighbours[T, k]
            silhouette = (nb < 0) | (front[b, nb.clamp_min(0)] != front[b, T])
            dk = d.detach().gather(1, k[:, None, None].expand(-1, 1, 2)).squeeze(1)  # [P, 2]
            axis_ok = dk[:, 1].abs() >= dk[:, 0].abs() if horizontal else dk[:, 0].abs() > dk[:, 1].abs()
            use = torch.nonzero(found & silhouette & axis_ok).squeeze(1)
        epk = ep[use].gather(1, k[use, None]).squeeze(1)
        eqk = eq[use].gather(1, k[use, None]).squeeze(1)
        t = epk / (epk - eqk)  # [U] differentiable crossing parameter from p's centre
        p, q = p[use], q[use]
        c_p, c_q = flat_color[p], flat_color[q]
        over = (t > 0.5)[:, None]
        delta_q = torch.where(over, (t - 0.5)[:, None] * (c_p - c_q), torch.zeros_like(c_p))
        delta_p = torch.where(over, torch.zeros_like(c_p), (0.5 - t)[:, None] * (c_q - c_p))
        out = out.index_add(0, q, delta_q).index_add(0, p, delta_p)
    return out.reshape(B, H, W, C)

