"""The last stage of a rig fit: a texture baked from the views onto the rig's own UVs.

Atlas. A rig's per-corner UVs may use several UDIM tiles (ICT-FaceKit: face in u 0-1, head in 1-2, mouth in
2-3, teeth in 3-4) and regions may overlap in UV (ICT's eyeballs reuse the face tile). Each face gets a *slot*:
(its tile, and its region unless the region is skin: face skin, scalp, ears and neck share their tiles). The
slots sit side by side in one [S, S] texture (slot k owns u in [k / T, (k + 1) / T), squeezed horizontally; v
keeps its tile fraction). ``RigTexture.uvs`` are these atlas UVs per corner of ``RigTexture.faces``.

Bake. Every texel of the atlas is rasterized (``texture_bake.rasterize_uv``) to its triangle + barycentrics, so
to a 3D surface point and normal of the fitted vertices; texels on both sides of a UV seam hold the same 3D
point, so they sample the same colour (seam-free), and a ``gutter_px`` ring is dilated around the charts. Per
view: project, keep the texel where the depth render of the rig agrees within ``occlusion_tolerance`` (head
sizes) and the mask is set, weight by cos(view angle)^``angle_power`` faded to 0 at grazing angles
(cos < ``min_cos``), sample the image bilinearly; blend the weighted mean. Confidence = weight / ``full_weight``
clamped to [0, 1].

Fill (never black). Texels below full confidence take a *fill* colour: the mirror texel (x -> -x in the rig's
template frame, found on the rig's own surface: the nearest template vertex to the mirrored point, then the
closest point on its incident triangles, read from the seen texture at that point's atlas UV) where the mirror
was seen, else the template colour (``template_texture`` sampled at the rig's own UV when given, else the
region's mean seen colour). To hide the seams the fill is shifted by a smooth correction: the difference seen -
fill on confident texels, extended into the rest by dilation and relaxed by ``smooth_iterations`` Jacobi sweeps
of Laplace's equation (a membrane, as in Poisson cloning) before blending by confidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at
import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor

from headforge.errors import CaptureError, InputError
from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import project_points, world_to_clip
from headforge.renderers.mesh_raster import rasterize
from headforge.representations.mesh import TexturedMesh
from headforge.representations.rig.head_rig import HeadRig, Region
from headforge.stages.texture_bake import dilate, rasterize_uv
from headforge.validation import Checked, Fraction, NonNegativeInt, Positive

STAGE = "rig texture bake"
SKIN = (Region.FACE_SKIN, Region.SCALP, Region.EARS, Region.NECK)


@dataclass(frozen=True)
class RigTextureConfig(Checked):
    size: Annotated[int, at.Ge(16), at.Le(8192)] = 1024
    regions: tuple[Region, ...] = (*SKIN, Region.EYES, Region.MOUTH_INTERIOR, Region.TEETH)
    angle_power: Positive = 4.0  # weight = cos(view angle)^p
    min_cos: Annotated[float, at.Ge(0), at.Lt(0.5)] = 0.1  # weight fades to 0 from 2 min_cos down to min_cos
    occlusion_tolerance: Positive = 0.01  # head sizes between the texel's depth and the rendered depth
    full_weight: Positive = 0.5  # blended weight at which a texel is fully seen (confidence 1)
    mirror: bool = True
    mirror_confidence: Fraction = 0.5  # a mirror texel is used when its confidence reaches this
    smooth_iterations: NonNegativeInt = 100
    gutter_px: NonNegativeInt = 4
    batch: Annotated[int, at.Ge(1), at.Le(64)] = 4  # views rendered at once for the depth test


@dataclass(frozen=True, eq=False)
class RigTexture:
    texture: Tensor  # [S, S, 3] float32 sRGB in [0, 1]
    confidence: Tensor  # [S, S] float32 in [0, 1]: how well the views saw each texel
    faces: Tensor  # [Fk] int64 rig faces in the atlas (the configured regions)
    uvs: Tensor  # [Fk, 3, 2] atlas UVs per corner (OBJ convention)
    covered: Tensor  # [S, S] bool texels inside a chart
    seen_fraction: float  # covered texels with confidence 1
    mirror_fraction: float  # covered texels filled (partly) from the mirror side
    template_fraction: float  # covered texels filled (partly) from the template colour


def atlas_layout(rig: HeadRig, regions: tuple[Region, ...]) -> tuple[Tensor, Tensor, int]:
    """-> (faces [Fk] of the regions, atlas uvs [Fk, 3, 2], number of slots T). See the module doc."""
    allowed = torch.zeros(rig.num_vertices, dtype=torch.bool)
    for r in regions:
        if r in rig.region_names:
            allowed |= rig.region_mask(r)
    faces = allowed[rig.faces].all(1).nonzero().squeeze(1)
    if len(faces) == 0:
        raise InputError(f"{STAGE}: the rig ({rig.source}) has no faces in the regions {[str(r) for r in regions]}",
                         fix=f"choose regions among {[str(r) for r in rig.region_names]}")
    uv = rig.uvs[faces].double()  # [Fk, 3, 2]
    tile = torch.floor(uv.mean(1)).long()  # [Fk, 2]
    skin = torch.tensor([rig.region_names[int(i)] in SKIN for i in range(len(rig.region_names))])
    reg = rig.regions[rig.faces[faces, 0]]
    group = torch.where(skin[reg], -1, reg)
    key = torch.stack([group, tile[:, 0], tile[:, 1]], 1)
    slots, slot = torch.unique(key, dim=0, return_inverse=True)
    T = len(slots)
    local = (uv - tile[:, None].double()).clamp(0, 1)
    atlas = torch.stack([(slot[:, None].double() + local[..., 0]) / T, local[..., 1]], -1)
    return faces, atlas, T


def _sample(image: Tensor, uv: Tensor) -> Tensor:  # [H, W, C], pixel coords [P, 2] -> [P, C] bilinear, clamped
    H, W = image.shape[:2]
    grid = torch.stack([uv[:, 0] / W * 2 - 1, uv[:, 1] / H * 2 - 1], -1).float()[None, None]
    out = F.grid_sample(image.float().permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[0, :, 0].T  # [P, C]


def view_weights(points: Tensor, normals: Tensor, cameras: Cameras, images: Tensor, masks: Tensor, depth: Tensor,
                 tol: float, config: RigTextureConfig) -> tuple[Tensor, Tensor]:
    """points/normals [P, 3] world, depth [N, H, W] rendered -> colour sum [P, 3], weight sum [P]."""
    acc, wsum = torch.zeros(len(points), 3, dtype=torch.float64), torch.zeros(len(points), dtype=torch.float64)
    uv, z = project_points(cameras.to(dtype=torch.float64), points.double())  # [N, P, 2], [N, P]
    H, W = depth.shape[1:]
    for i in range(len(cameras)):
        col, row = torch.floor(uv[i, :, 0]).long(), torch.floor(uv[i, :, 1]).long()
        inside = (z[i] > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
        d = depth[i][row.clamp(0, H - 1), col.clamp(0, W - 1)].double()
        visible = inside & (d > 0) & ((z[i] - d).abs() < tol)
        to_cam = F.normalize(cameras.centers()[i].double() - points.double(), dim=-1)
        cos = (normals.double() * to_cam).sum(-1)
        fade = ((cos - config.min_cos) / max(config.min_cos, 1e-6)).clamp(0, 1)
        m = _sample(masks[i][..., None], uv[i])[:, 0].double().clamp(0, 1)
        w = cos.clamp_min(0) ** config.angle_power * fade * m * visible
        acc += w[:, None] * _sample(images[i], uv[i]).double()
        wsum += w
    return acc, wsum


def mirror_points(rig: HeadRig, faces: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
    """Template-frame points [P, 3] -> (index into ``faces`` [P], barycentrics [P, 3]) of the closest point on the
    rig's own surface (those faces) to each point mirrored x -> -x."""
    q = points.double() * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    tmpl = rig.template.double()
    used = torch.unique(rig.faces[faces])
    _, near = cKDTree(tmpl[used].numpy()).query(q.numpy())
    vertex = used[torch.from_numpy(near)]  # [P]
    corners = rig.faces[faces]  # [Fk, 3]
    inc_v = corners.reshape(-1)
    inc_f = torch.arange(len(faces)).repeat_interleave(3)
    order = torch.argsort(inc_v, stable=True)
    inc_v, inc_f = inc_v[order], inc_f[order]
    start = torch.searchsorted(inc_v, vertex)
    count = torch.searchsorted(inc_v, vertex, right=True) - start
    K = int(count.max())
    k = torch.arange(K)
    cand = inc_f[(start[:, None] + k).clamp_max(len(inc_f) - 1)]  # [P, K]
    tri = tmpl[corners[cand]]  # [P, K, 3, 3]
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    v0, v1, v2 = b - a, c - a, q[:, None] - a
    d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
    d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
    den = (d00 * d11 - d01 * d01).clamp_min(1e-30)
    bv, bw = (d11 * d20 - d01 * d21) / den, (d00 * d21 - d01 * d20) / den
    bary = torch.stack([1 - bv - bw, bv, bw], -1).clamp_min(0)
    bary = bary / bary.sum(-1, keepdim=True).clamp_min(1e-30)
    dist = ((torch.einsum("pkc,pkcd->pkd", bary, tri) - q[:, None]) ** 2).sum(-1)
    dist = torch.where(k[None] < count[:, None], dist, torch.full_like(dist, torch.inf))
    best = dist.argmin(1)
    rows = torch.arange(len(q))
    return cand[rows, best], bary[rows, best]


def _relax(values: np.ndarray, fixed: np.ndarray, iterations: int) -> np.ndarray:
    """Jacobi sweeps of Laplace's equation on the free texels ([S, S, C], [S, S] bool fixed)."""
    v = values.copy()
    for _ in range(iterations):
        p = np.pad(v, ((1, 1), (1, 1), (0, 0)), mode="edge")
        avg = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) / 4
        v = np.where(fixed[..., None], v, avg)
    return v


@dataclass(frozen=True, eq=False)
class BakeLayers:
    """What a bake knows per covered texel before the fill is blended in (``bake_rig_layers``); texels are
    row-major indices ``texel`` [M] into the [S, S] atlas."""

    size: int  # S
    faces: Tensor  # [Fk] int64 rig faces in the atlas
    uvs: Tensor  # [Fk, 3, 2] float64 atlas UVs per corner
    texel: Tensor  # [M] int64
    region: Tensor  # [M] int64 index into rig.region_names of the texel's triangle
    seen: Tensor  # [M, 3] float64 weighted mean colour of the views (meaningless where weight is 0)
    weight: Tensor  # [M] float64 blended view weight
    confidence: Tensor  # [M] float64 weight / full_weight clamped to [0, 1]
    template: Tensor  # [M, 3] float64 template colour (template texture, else the region's mean seen colour)
    mirror: Tensor  # [M, 3] float64 the mirror texel's seen colour (valid where mirror_confidence > 0)
    mirror_confidence: Tensor  # [M] float64 (zeros when the config's ``mirror`` is off)


def bake_rig_layers(rig: HeadRig, vertices: Tensor, cameras: Cameras, images: Tensor, masks: Tensor,
                    config: RigTextureConfig | None = None, template_texture: Tensor | None = None) -> BakeLayers:
    """The bake's per-texel sources (seen colour and confidence, template, mirror); ``bake_rig_texture`` blends
    them. Arguments as ``bake_rig_texture``."""
    config = config or RigTextureConfig()
    N = len(cameras)
    if vertices.shape != rig.template.shape or not bool(torch.isfinite(vertices).all()):
        raise InputError(f"{STAGE}: vertices must be finite [{rig.num_vertices}, 3] (got {list(vertices.shape)})",
                         fix="pass the fitted rig's world vertices (rig_params.world_vertices)")
    if images.ndim != 4 or images.shape[0] != N or masks.shape != images.shape[:3]:
        raise CaptureError(f"{STAGE}: images {list(images.shape)} / masks {list(masks.shape)} do not match "
                           f"{N} cameras", fix="pass one image [H, W, 3] and mask [H, W] per view")
    if not (bool(torch.isfinite(images).all()) and bool(torch.isfinite(masks).all())):
        raise InputError(f"{STAGE}: images or masks hold non-finite values", fix="check the capture's images")
    faces, atlas, _ = atlas_layout(rig, config.regions)
    S = config.size
    sample, tri, bary = rasterize_uv(atlas.reshape(-1, 2), torch.arange(3 * len(faces)).reshape(-1, 3), S)
    corners = rig.faces[faces[tri]]  # [M, 3]
    verts = vertices.double()
    points = torch.einsum("mk,mkc->mc", bary, verts[corners])
    normals = F.normalize(torch.einsum("mk,mkc->mc", bary, TexturedMesh(verts, rig.faces).vertex_normals()[corners]),
                          dim=-1)
    size = float((verts.max(0).values - verts.min(0).values).max())
    centre = verts.mean(0)
    dist = (cameras.centers().double() - centre).norm(dim=-1)
    near, far = max(1e-4, float(dist.min()) - 2 * size), float(dist.max()) + 2 * size
    W, H = cameras.same_size()
    acc = torch.zeros(len(sample), 3, dtype=torch.float64)
    wsum = torch.zeros(len(sample), dtype=torch.float64)
    occluders = rig.faces[faces]
    for s in range(0, N, config.batch):
        idx = list(range(s, min(N, s + config.batch)))
        cams = cameras[idx].to(dtype=torch.float32)
        with torch.no_grad():
            depth = rasterize(world_to_clip(cams, verts.float(), near, far), occluders, (H, W)).depth
        a, w = view_weights(points, normals, cams, images[idx], masks[idx], depth, config.occlusion_tolerance * size,
                            config)
        acc, wsum = acc + a, wsum + w
    seen = acc / wsum.clamp_min(1e-12)[:, None]
    conf = (wsum / config.full_weight).clamp(0, 1)
    texel = sample
    img_seen = torch.zeros(S * S, 3, dtype=torch.float64).index_copy(0, texel, seen * (wsum > 0)[:, None])
    img_conf = torch.zeros(S * S, dtype=torch.float64).index_copy(0, texel, conf)
    # template colour: the given texture at the rig's own UVs, else the mean seen colour of the texel's region
    region = rig.regions[corners[:, 0]]
    if template_texture is not None:
        uv_rig = torch.einsum("mk,mkc->mc", bary, rig.uvs[faces[tri]].double()) % 1.0
        Ht, Wt = template_texture.shape[:2]
        template = _sample(template_texture, torch.stack([uv_rig[:, 0] * Wt, (1 - uv_rig[:, 1]) * Ht], -1)).double()
    else:
        template = torch.zeros(len(sample), 3, dtype=torch.float64)
        wr = torch.zeros(len(rig.region_names), dtype=torch.float64).index_add_(0, region, wsum)
        cr = torch.zeros(len(rig.region_names), 3, dtype=torch.float64).index_add_(0, region, acc)
        overall = acc.sum(0) / wsum.sum().clamp_min(1e-12) if float(wsum.sum()) > 0 else torch.full((3,), 0.5)
        means = torch.where(wr[:, None] > 0, cr / wr.clamp_min(1e-12)[:, None], overall.to(cr))
        template = means[region]
    mirror = torch.zeros(len(sample), 3, dtype=torch.float64)
    mconf = torch.zeros(len(sample), dtype=torch.float64)
    if config.mirror:  # every texel, so that the seam correction compares like with like
        tmpl_pts = torch.einsum("mk,mkc->mc", bary, rig.template.double()[corners])
        mf, mb = mirror_points(rig, faces, tmpl_pts)
        muv = torch.einsum("mk,mkc->mc", mb, atlas[mf])  # OBJ uv in the atlas
        px = torch.stack([muv[:, 0] * S, (1 - muv[:, 1]) * S], -1)
        both = torch.cat([(img_seen * img_conf[:, None]), img_conf[:, None]], -1).reshape(S, S, 4)
        got = _sample(both, px).double()
        mconf = got[:, 3]
        mirror = got[:, :3] / mconf.clamp_min(1e-12)[:, None]
    return BakeLayers(S, faces, atlas, texel, region, seen, wsum, conf, template, mirror, mconf)


def bake_rig_texture(rig: HeadRig, vertices: Tensor, cameras: Cameras, images: Tensor, masks: Tensor,
                     config: RigTextureConfig | None = None, template_texture: Tensor | None = None) -> RigTexture:
    """Bake the views onto the rig's UVs (see the module doc). vertices [V, 3] fitted, world; images
    [N, H, W, 3] sRGB in [0, 1]; masks [N, H, W]; ``template_texture`` [Ht, Wt, 3] in the rig's own UV layout."""
    config = config or RigTextureConfig()
    layers = bake_rig_layers(rig, vertices, cameras, images, masks, config, template_texture)
    S, texel, seen, conf = layers.size, layers.texel, layers.seen, layers.confidence
    fill = layers.template.clone()
    mirror_used = torch.zeros(len(texel), dtype=torch.bool)
    if config.mirror:
        mirror_used = layers.mirror_confidence >= config.mirror_confidence
        fill = torch.where(mirror_used[:, None], layers.mirror, fill)
    covered = torch.zeros(S * S, dtype=torch.bool)
    covered[texel] = True
    fixed = torch.zeros(S * S, dtype=torch.bool)
    fixed[texel[conf >= 1]] = True
    corr = torch.zeros(S * S, 3, dtype=torch.float64)
    corr[texel] = (seen - fill) * (conf >= 1)[:, None]
    corr_np, _ = dilate(corr.reshape(S, S, 3).numpy(), fixed.reshape(S, S).numpy(), S)
    corr_np = _relax(corr_np, fixed.reshape(S, S).numpy(), config.smooth_iterations)
    corr_t = torch.from_numpy(corr_np).reshape(S * S, 3)[texel] if bool(fixed.any()) else torch.zeros_like(fill)
    out = conf[:, None] * seen + (1 - conf[:, None]) * (fill + corr_t)
    return layers_texture(layers, out, config.gutter_px, mirror_used)


def layers_texture(layers: BakeLayers, colors: Tensor, gutter_px: int, mirror_used: Tensor) -> RigTexture:
    """A ``RigTexture`` from the final colour of every covered texel (colors [M, 3] float64): written into the
    atlas, the gutter dilated ``gutter_px`` texels, the rest of the atlas the mean colour; ``mirror_used`` [M]
    bool says which partly seen texels took the mirror side (for the reported fractions)."""
    S, texel, conf = layers.size, layers.texel, layers.confidence
    covered = torch.zeros(S * S, dtype=torch.bool)
    covered[texel] = True
    img_conf = torch.zeros(S * S, dtype=torch.float64).index_copy(0, texel, conf)
    image = torch.zeros(S * S, 3, dtype=torch.float64).index_copy(0, texel, colors).reshape(S, S, 3).numpy()
    cov = covered.reshape(S, S).numpy()
    image, grown = dilate(image, cov, gutter_px)
    if not grown.all():
        image[~grown] = image[cov].mean(0)
    partial = conf < 1
    M = max(1, len(texel))
    return RigTexture(torch.from_numpy(np.clip(image, 0, 1)).float(), img_conf.reshape(S, S).float(), layers.faces,
                      layers.uvs.float(), covered.reshape(S, S), float((~partial).sum()) / M,
                      float((partial & mirror_used).sum()) / M, float((partial & ~mirror_used).sum()) / M)


def rig_textured_mesh(rig: HeadRig, vertices: Tensor, texture: RigTexture) -> TexturedMesh:
    """The fitted rig as a ``TexturedMesh`` (the atlas's faces, per-corner UVs, the baked texture) for export
    and held-out renders. vertices [V, 3] world; vertices outside the atlas's regions stay unreferenced."""
    uvs, faces_uv = torch.unique(texture.uvs.reshape(-1, 2).float(), dim=0, return_inverse=True)  # shared rows once
    return TexturedMesh(vertices.float(), rig.faces[texture.faces], uvs=uvs, faces_uv=faces_uv.reshape(-1, 3),
                        texture=texture.texture, vertex_labels=rig.regions,
                        label_names=tuple(str(r) for r in rig.region_names))
