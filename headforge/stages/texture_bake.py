"""UV unwrap (xatlas) and texture baking from a colour function.

- :func:`unwrap_uvs`: xatlas charts and packs the mesh into one square atlas of ``texture_size`` pixels with
  ``padding`` pixels between charts. Geometry stays welded: ``faces`` is untouched and the per-corner UVs go to
  ``uvs`` / ``faces_uv`` (OBJ convention, v up). xatlas' own image orientation does not matter: the texture
  is baked here against these uvs with texel (column, row) = (u W, (1 - v) H). Charting is xatlas' cost: about
  7 s per 30k faces on 2 busy CPU cores (a 100k-face mesh takes under a minute).
- :func:`rasterize_uv`: numpy scan conversion of the triangles in UV space on a grid of ``supersample`` x
  ``supersample`` samples per texel (sample centres at (i + 0.5) / supersample texels; pixels on an edge count
  as inside). -> per covered sample: its texel, its triangle and barycentrics.
- :func:`bake_texture` (= :func:`unwrap_uvs` + :func:`bake_onto_uvs`): colour at each sample =
  ``color_fn(point, -normal)`` (the surface as seen from straight in front, i.e. its diffuse-ish colour),
  with point and normal interpolated from the vertices; samples are averaged per texel. Charts are then
  dilated by ``texture_dilation`` pixels (empty texels take the mean of their filled 8-neighbours,
  repeatedly) so bilinear filtering and mip-mapping at chart borders do not pull in background; the remaining
  background gets the mean colour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from headforge.representations.mesh import TexturedMesh

if TYPE_CHECKING:
    from headforge.stages.mesh_extract import MeshExtractConfig

_MAX_PAIRS = 1 << 22  # candidate (triangle, sample) pairs tested at once (bounds memory)


def unwrap_uvs(mesh: TexturedMesh, *, texture_size: int = 1024, padding: int = 2) -> TexturedMesh:
    """xatlas charts + packing -> mesh with ``uvs`` [T, 2] and ``faces_uv`` [F, 3] (OBJ convention)."""
    import xatlas

    for resolution in (int(texture_size), 0):  # 0: xatlas sizes one atlas itself (if the first try spills over)
        atlas = xatlas.Atlas()
        atlas.add_mesh(mesh.vertices.numpy().astype(np.float32), mesh.faces.numpy().astype(np.uint32),
                       mesh.vertex_normals().numpy().astype(np.float32))
        pack = xatlas.PackOptions()
        pack.resolution = resolution
        pack.padding = int(padding)
        pack.bilinear = True
        atlas.generate(pack_options=pack)
        if atlas.atlas_count == 1:
            break
    else:
        raise RuntimeError(f"xatlas packed the charts into {atlas.atlas_count} atlases, expected one")
    vmapping, indices, uvs = atlas[0]  # [T] source vertex per uv vertex, [F, 3] into uvs, [T, 2] in [0, 1]
    indices = indices.astype(np.int64)
    if indices.shape != tuple(mesh.faces.shape) or not np.array_equal(vmapping[indices], mesh.faces.numpy()):
        raise RuntimeError("xatlas changed the face order or corners; cannot map its UVs back onto the mesh")
    return replace(mesh, uvs=torch.from_numpy(uvs.astype(np.float32)), faces_uv=torch.from_numpy(indices))


def rasterize_uv(corners: np.ndarray, height: int, width: int, supersample: int = 1
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangles in texel space -> covered samples of the (H s, W s) sample grid.

    corners: [F, 3, 2] (x, y) in texels, x right, y down, (0, 0) = the first texel's corner.
    Returns sample index [M] (row-major in the sample grid), triangle [M], barycentrics [M, 3];
    each sample appears once (a sample on an edge shared by two triangles goes to one of them).
    """
    s = supersample
    hs, ws = height * s, width * s
    p = corners.astype(np.float64) * s - 0.5  # [F, 3, 2] in sample-index units (sample i centre at i)
    x0 = np.clip(np.ceil(p[..., 0].min(1) - 1e-9), 0, ws - 1).astype(np.int64)  # [F]
    x1 = np.clip(np.floor(p[..., 0].max(1) + 1e-9), 0, ws - 1).astype(np.int64)
    y0 = np.clip(np.ceil(p[..., 1].min(1) - 1e-9), 0, hs - 1).astype(np.int64)
    y1 = np.clip(np.floor(p[..., 1].max(1) + 1e-9), 0, hs - 1).astype(np.int64)
    bw, bh = np.maximum(x1 - x0 + 1, 0), np.maximum(y1 - y0 + 1, 0)
    count = bw * bh  # [F] candidate samples per triangle
    a, b, c = p[:, 0], p[:, 1], p[:, 2]  # [F, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])  # [F] 2x signed
    count[np.abs(area) < 1e-12] = 0
    out_s, out_f, out_b = [], [], []
    csum = np.cumsum(count)
    start = 0
    while start < len(count):  # triangle batches with at most _MAX_PAIRS candidates (or one big triangle)
        stop = max(start + 1, int(np.searchsorted(csum, (csum[start - 1] if start else 0) + _MAX_PAIRS, "right")))
        f = np.repeat(np.arange(start, stop), count[start:stop])  # [P] triangle of each candidate
        if len(f):
            local = np.arange(len(f)) - np.repeat(np.cumsum(count[start:stop]) - count[start:stop], count[start:stop])
            sx = x0[f] + local % bw[f]
            sy = y0[f] + local // bw[f]
            q = np.stack([sx, sy], -1).astype(np.float64)  # [P, 2]

            def edge(u, v, q=q, f=f):  # 2x signed area of (u, v, q) -> [P]
                return (v[f, 0] - u[f, 0]) * (q[:, 1] - u[f, 1]) - (v[f, 1] - u[f, 1]) * (q[:, 0] - u[f, 0])

            bary = np.stack([edge(b, c), edge(c, a), edge(a, b)], -1) / area[f, None]  # [P, 3]
            inside = (bary >= -1e-9).all(-1)
            out_s.append(sy[inside] * ws + sx[inside])
            out_f.append(f[inside])
            out_b.append(bary[inside])
        start = stop
    sample, tri, bary = np.concatenate(out_s), np.concatenate(out_f), np.concatenate(out_b)
    sample, first = np.unique(sample, return_index=True)
    return sample, tri[first], np.clip(bary[first], 0.0, 1.0)


def dilate(image: np.ndarray, filled: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Grow filled texels into empty ones: [H, W, C], [H, W] bool -> same, ``iterations`` rings."""
    image, filled = image.copy(), filled.copy()
    for _ in range(iterations):
        if filled.all():
            break
        img_p = np.pad(image * filled[..., None], ((1, 1), (1, 1), (0, 0)))
        msk_p = np.pad(filled.astype(np.float64), 1)
        acc = np.zeros_like(image)
        cnt = np.zeros(filled.shape)
        h, w = filled.shape
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if dy == 1 and dx == 1:
                    continue
                acc += img_p[dy:dy + h, dx:dx + w]
                cnt += msk_p[dy:dy + h, dx:dx + w]
        grow = ~filled & (cnt > 0)
        image[grow] = acc[grow] / cnt[grow, None]
        filled = filled | grow
    return image, filled


def bake_texture(mesh: TexturedMesh, color_fn: Callable[[Tensor, Tensor], Tensor], cfg: MeshExtractConfig, *,
                 device: torch.device | str | None = None) -> TexturedMesh:
    """xatlas unwrap + bake ``color_fn(points [N, 3], view directions [N, 3]) -> rgb [N, 3]`` into a texture.

    Returns the mesh (same welded vertices and faces) with ``uvs``, ``faces_uv`` and ``texture``
    [S, S, 3] float32 in [0, 1] (sRGB as the colour function returns it), S = ``cfg.texture_size``.
    """
    mesh = unwrap_uvs(mesh, texture_size=cfg.texture_size, padding=cfg.texture_padding)
    return bake_onto_uvs(mesh, color_fn, cfg, device=device)


def bake_onto_uvs(mesh: TexturedMesh, color_fn: Callable[[Tensor, Tensor], Tensor], cfg: MeshExtractConfig, *,
                  device: torch.device | str | None = None) -> TexturedMesh:
    """Bake ``color_fn`` into a new ``cfg.texture_size`` texture over the mesh's existing (non-overlapping) UVs."""
    if mesh.uvs is None or mesh.faces_uv is None:
        raise ValueError("bake_onto_uvs needs a mesh with uvs and faces_uv (use bake_texture to unwrap first)")
    size, ss = cfg.texture_size, cfg.bake_supersample
    uv = mesh.uvs.numpy()[mesh.faces_uv.numpy()].astype(np.float64)  # [F, 3, 2]
    corners = np.stack([uv[..., 0] * size, (1 - uv[..., 1]) * size], -1)  # [F, 3, 2] texel x, y (y down)
    sample, tri, bary = rasterize_uv(corners, size, size, ss)  # [M], [M], [M, 3]
    verts, normals = mesh.vertices.double().numpy(), mesh.vertex_normals().double().numpy()
    fv = mesh.faces.numpy()[tri]  # [M, 3]
    points = np.einsum("mk,mkc->mc", bary, verts[fv])  # [M, 3]
    n = np.einsum("mk,mkc->mc", bary, normals[fv])  # [M, 3]
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    rgb = np.empty((len(sample), 3), dtype=np.float64)
    starts = range(0, len(sample), cfg.chunk)
    bar = tqdm(starts, desc="bake texture", unit="chunk", disable=not cfg.progress or len(starts) < 16)
    with torch.no_grad():
        for s in bar:
            p = torch.as_tensor(points[s:s + cfg.chunk], dtype=torch.float32)
            d = torch.as_tensor(-n[s:s + cfg.chunk], dtype=torch.float32)
            if device is not None:
                p, d = p.to(device), d.to(device)
            rgb[s:s + cfg.chunk] = color_fn(p, d).reshape(-1, 3).double().cpu().numpy()
    if not np.isfinite(rgb).all():
        raise RuntimeError("the colour function returned NaN or inf while baking the texture")
    texel = (sample // (size * ss) // ss) * size + (sample % (size * ss)) // ss  # [M] row-major texel index
    cnt = np.bincount(texel, minlength=size * size).astype(np.float64)  # [S*S]
    acc = np.stack([np.bincount(texel, weights=rgb[:, c], minlength=size * size) for c in range(3)], -1)
    filled = cnt > 0
    image = np.zeros((size * size, 3))
    image[filled] = acc[filled] / cnt[filled, None]
    image, filled2 = dilate(image.reshape(size, size, 3), filled.reshape(size, size), cfg.texture_dilation)
    if filled.any():
        image[~filled2] = image[filled.reshape(size, size)].mean(0)
    texture = torch.from_numpy(np.clip(image, 0.0, 1.0).astype(np.float32))
    return replace(mesh, texture=texture)
