"""UV unwrap and texture baking from a colour function.

- :func:`unwrap_uvs`: UVs by :func:`headforge.stages.uv_unwrap.unwrap` (xatlas under a time budget, or the
  cube-projection atlas). Geometry stays welded: ``faces`` is untouched and the per-corner UVs go to ``uvs`` /
  ``faces_uv`` (OBJ convention, v up).
- :func:`rasterize_uv`: the project's mesh rasterizer (:func:`headforge.renderers.mesh_raster.rasterize`) run
  in UV space: each UV vertex becomes the clip position (x, y, z, w) = (2u - 1, 1 - 2v, 0, 1), so pixel (i, j)
  of an (S s, S s) image is the sample at texel coordinates ((i + 0.5) / s, (j + 0.5) / s) with row 0 at the
  top of the texture (v = 1), the image convention of ``TexturedMesh.texture``. With w = 1 the perspective-
  correct barycentrics are the affine ones. All triangles share z, so where two touch (a shared edge: pixels
  on an edge count as inside) the smaller triangle id wins. Rows are rasterized in bands of ``_BAND_PIXELS``
  samples (the clip y is rescaled per band) to bound memory.
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

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from headforge.renderers.mesh_raster import rasterize
from headforge.representations.mesh import TexturedMesh
from headforge.stages.mesh_types import MeshExtractConfig, UnwrapMethod
from headforge.stages.uv_unwrap import unwrap

_BAND_PIXELS = 1 << 20  # samples rasterized at once (rows per band = this / row width)


def unwrap_uvs(mesh: TexturedMesh, cfg: MeshExtractConfig) -> tuple[TexturedMesh, UnwrapMethod]:
    """UVs per ``cfg`` -> (mesh with ``uvs`` [T, 2] and ``faces_uv`` [F, 3], the method actually used)."""
    atlas = unwrap(mesh.vertices.numpy(), mesh.faces.numpy(), mesh.vertex_normals().numpy(), cfg)
    return replace(mesh, uvs=torch.from_numpy(atlas.uvs), faces_uv=torch.from_numpy(atlas.faces_uv)), atlas.method


def rasterize_uv(uvs: Tensor, faces_uv: Tensor, size: int, supersample: int = 1, *, progress: bool = False
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Triangles in UV space -> the covered samples of the (S s, S s) sample grid.

    uvs [T, 2] (OBJ convention), faces_uv [F, 3]. Returns sample index [M] (row-major in the sample grid, row 0
    at the top), triangle [M] int64, barycentrics [M, 3] float64; each sample appears once.
    """
    n = size * supersample
    uv = uvs.to(torch.float64)
    clip = torch.stack([2 * uv[:, 0] - 1, 1 - 2 * uv[:, 1], torch.zeros_like(uv[:, 0]), torch.ones_like(uv[:, 0])],
                       -1)  # [T, 4]
    rows = max(1, _BAND_PIXELS // n)
    out_s, out_f, out_b = [], [], []
    for r0 in tqdm(range(0, n, rows), desc="rasterize uv", unit="band", disable=not progress):
        h = min(rows, n - r0)
        band = clip.clone()
        band[:, 1] = (clip[:, 1] + 1) * (n / h) - 1 - 2 * r0 / h  # global row j -> band row j - r0
        with torch.no_grad():
            r = rasterize(band, faces_uv, (h, n), backend="torch")
        tri = r.triangle_id[0].reshape(-1)  # [h n]
        hit = torch.nonzero(tri >= 0).squeeze(1)
        out_s.append(hit + r0 * n)
        out_f.append(tri[hit])
        out_b.append(r.bary[0].reshape(-1, 3)[hit])
    return torch.cat(out_s), torch.cat(out_f), torch.cat(out_b).clamp(0.0, 1.0)


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
                 device: torch.device | str | None = None) -> tuple[TexturedMesh, UnwrapMethod]:
    """Unwrap + bake ``color_fn(points [N, 3], view directions [N, 3]) -> rgb [N, 3]`` into a texture.

    Returns the mesh (same welded vertices and faces) with ``uvs``, ``faces_uv`` and ``texture``
    [S, S, 3] float32 in [0, 1] (sRGB as the colour function returns it), S = ``cfg.texture_size``, and the
    unwrap method used.
    """
    mesh, method = unwrap_uvs(mesh, cfg)
    return bake_onto_uvs(mesh, color_fn, cfg, device=device), method


def bake_onto_uvs(mesh: TexturedMesh, color_fn: Callable[[Tensor, Tensor], Tensor], cfg: MeshExtractConfig, *,
                  device: torch.device | str | None = None) -> TexturedMesh:
    """Bake ``color_fn`` into a new ``cfg.texture_size`` texture over the mesh's existing (non-overlapping) UVs."""
    if mesh.uvs is None or mesh.faces_uv is None:
        raise ValueError("bake_onto_uvs needs a mesh with uvs and faces_uv (use bake_texture to unwrap first)")
    size, ss = cfg.texture_size, cfg.bake_supersample
    sample, tri, bary = rasterize_uv(mesh.uvs, mesh.faces_uv, size, ss, progress=cfg.progress)  # [M], [M], [M, 3]
    fv = mesh.faces[tri]  # [M, 3]
    points = torch.einsum("mk,mkc->mc", bary, mesh.vertices.double()[fv])  # [M, 3]
    n = torch.einsum("mk,mkc->mc", bary, mesh.vertex_normals().double()[fv])  # [M, 3]
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    rgb = torch.empty(len(sample), 3, dtype=torch.float64)
    starts = range(0, len(sample), cfg.chunk)
    bar = tqdm(starts, desc="bake texture", unit="chunk", disable=not cfg.progress or len(starts) < 16)
    with torch.no_grad():
        for s in bar:
            p, d = points[s:s + cfg.chunk].float(), (-n[s:s + cfg.chunk]).float()
            if device is not None:
                p, d = p.to(device), d.to(device)
            rgb[s:s + cfg.chunk] = color_fn(p, d).reshape(-1, 3).double().cpu()
    if not bool(torch.isfinite(rgb).all()):
        raise RuntimeError("the colour function returned NaN or inf while baking the texture")
    sample, rgb = sample.numpy(), rgb.numpy()
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
