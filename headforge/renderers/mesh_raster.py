"""Differentiable triangle rasterization in pure torch (nvdiffrast conventions).

Conventions:
- Input positions are homogeneous clip coordinates (see ``geometry.rays.opencv_projection_matrix``).
  Pixel (i, j) (column i, row j) of an (H, W) image has its centre at NDC
  x = 2(i + 0.5)/W - 1, y = 2(j + 0.5)/H - 1, so row 0 is at NDC y = -1 (nvdiffrast's memory layout).
- A fragment is kept where the pixel centre lies inside the triangle, w > 0 and -1 <= z/w <= 1. The
  test is done in 2D homogeneous coordinates (Olano & Greer 1997): for the pixel p = (x, y, 1) and the
  triangle's (x, y, w) columns v0, v1, v2, the edge functions e_i = p . (v_j x v_k) give the
  perspective-correct barycentrics b = e / sum(e) and the surface w = det[v0 v1 v2] / sum(e). This is
  exactly equivalent to clipping the triangle against the near/far planes and w > 0, so triangles
  crossing w = 0 are rasterized correctly (their visible part only) instead of being dropped.
  Pixels exactly on an edge count as inside (no top-left rule); shared-edge ties go to the depth test.
- The nearest fragment (smallest z/w) wins; equal depths go to the smaller triangle id. Depth test and
  tie-break are one exact ``scatter_reduce(amin)`` on an int64 key (monotonic float bits of z/w in the
  high bits, triangle id in the low ``bit_length(F - 1)`` bits; for float32 inputs no depth bit is lost
  while F <= 2**29).
- Front faces are counter-clockwise seen from outside (headforge's mesh convention). With the y-down
  NDC of the OpenCV projection this means det[v0 v1 v2] < 0; ``cull_backfaces`` drops det >= 0.

Visibility (which triangle covers which pixel) is computed without autograd; barycentrics, depth and
z/w are then recomputed differentiably for the winning (pixel, triangle) pairs only, so gradients with
respect to clip positions are exact at interior pixels (silhouette gradients come from
:func:`headforge.renderers.mesh_shading.antialias`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.renderers import mesh_backends

_KEY_EMPTY = torch.iinfo(torch.int64).max
_CHUNK_PAIRS = 1 << 21  # candidate (triangle, pixel) pairs processed at once (bounds memory)


@dataclass(frozen=True)
class Rasterization:
    triangle_id: Tensor  # [B, H, W] int64, -1 where no triangle covers the pixel centre
    bary: Tensor  # [B, H, W, 3] perspective-correct barycentrics, 0 where empty; differentiable
    depth: Tensor  # [B, H, W] clip w of the surface (camera z for headforge's projection), 0 where empty
    ndc_z: Tensor  # [B, H, W] z/w in [-1, 1], +inf where empty (so min-compositing needs no mask)

    @property
    def mask(self) -> Tensor:  # [B, H, W] bool
        return self.triangle_id >= 0

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.triangle_id.shape[1]), int(self.triangle_id.shape[2])


def check_mesh_inputs(clip: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Validate shapes; returns clip [B, V, 4] (float) and faces [F, 3] int64."""
    if clip.ndim == 2:
        clip = clip[None]
    if clip.ndim != 3 or clip.shape[-1] != 4:
        raise ValueError(f"clip positions must be [B, V, 4] or [V, 4], got {tuple(clip.shape)}")
    if not clip.is_floating_point():
        raise ValueError(f"clip positions must be floating point, got {clip.dtype}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
    if faces.is_floating_point():
        raise ValueError(f"faces must be an integer tensor, got {faces.dtype}")
    faces = faces.to(device=clip.device, dtype=torch.int64)
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= clip.shape[1]):
        raise ValueError(f"faces index vertices outside [0, {clip.shape[1]})")
    return clip, faces


def _check_resolution(resolution) -> tuple[int, int]:
    if len(resolution) != 2 or int(resolution[0]) <= 0 or int(resolution[1]) <= 0:
        raise ValueError(f"resolution must be (height, width) with positive sizes, got {resolution}")
    return int(resolution[0]), int(resolution[1])


def homogeneous_edges(tri: Tensor) -> tuple[Tensor, Tensor]:  # [N, 3, 4] -> ([N, 3, 3], [N])
    """Rows c_i = v_j x v_k of the (x, y, w) columns, and det = v0 . (v1 x v2)."""
    v = tri[..., (0, 1, 3)]  # [N, 3, 3] vertex i's (x, y, w)
    c = torch.linalg.cross(v.roll(-1, dims=-2), v.roll(-2, dims=-2))  # [N, 3, 3] c_i = v_{i+1} x v_{i+2}
    det = (v[..., 0, :] * c[..., 0, :]).sum(-1)  # [N]
    return c, det


def _pixel_bounds(tri: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Integer pixel ranges [i0, i1] x [j0, j1] (inclusive) of each triangle's part inside the near/far
    slab (-w <= z <= w). tri [N, 3, 4] -> four [N] int64; empty ranges have i1 < i0."""
    d = torch.stack([tri[..., 3] + tri[..., 2], tri[..., 3] - tri[..., 2]], -1)  # [N, 3, 2] plane values
    a, b = tri, tri.roll(-1, dims=-2)  # [N, 3, 4] edge k = (k, k+1)
    da, db = d, d.roll(-1, dims=-2)  # [N, 3, 2]
    crosses = (da * db) < 0  # [N, 3, 2]
    t = torch.where(crosses, da / torch.where(crosses, da - db, torch.ones_like(da)), torch.zeros_like(da))
    pts = a[..., None, :] + t[..., None] * (b - a)[..., None, :]  # [N, 3, 2, 4] edge/plane intersections
    pd = torch.stack([pts[..., 3] + pts[..., 2], pts[..., 3] - pts[..., 2]], -1)  # [N, 3, 2, 2]
    tol = 1e-6 * (pts[..., 3].abs() + pts[..., 2].abs())  # [N, 3, 2]
    other = torch.stack([pd[..., 0, 1], pd[..., 1, 0]], -1)  # the other plane's value at each point
    ok_pts = crosses & (other >= -tol)  # [N, 3, 2]
    ok_vert = (d >= 0).all(-1)  # [N, 3]
    cand = torch.cat([tri, pts.flatten(-3, -2)], -2)  # [N, 9, 4]
    ok = torch.cat([ok_vert, ok_pts.flatten(-2)], -1) & (cand[..., 3] > 0)  # [N, 9]
    w = torch.where(ok, cand[..., 3], torch.ones_like(cand[..., 3]))
    # continuous pixel index (pixel i's centre -> i), clamped so huge values survive the int cast
    px = ((cand[..., 0] / w + 1) * (width / 2) - 0.5).clamp(-2.0, width + 1.0)  # [N, 9]
    py = ((cand[..., 1] / w + 1) * (height / 2) - 0.5).clamp(-2.0, height + 1.0)
    inf = torch.full_like(px, float("inf"))
    eps = 1e-4
    i0 = torch.ceil(torch.where(ok, px, inf).amin(-1) - eps).clamp(0, width)  # [N]
    i1 = torch.floor(torch.where(ok, px, -inf).amax(-1) + eps).clamp(-1, width - 1)
    j0 = torch.ceil(torch.where(ok, py, inf).amin(-1) - eps).clamp(0, height)
    j1 = torch.floor(torch.where(ok, py, -inf).amax(-1) + eps).clamp(-1, height - 1)
    none = ~ok.any(-1)
    i1 = torch.where(none, i0 - 1, i1)
    return i0.long(), i1.long(), j0.long(), j1.long()


def _depth_keys(ndc_z: Tensor, tri_id: Tensor, id_bits: int) -> Tensor:  # [M], [M] -> [M] int64
    """Order-preserving int64 key: float64 bits of z/w (sign-folded) with the id in the low bits."""
    bits = ndc_z.to(torch.float64).view(torch.int64)
    mono = bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF)
    return ((mono >> id_bits) << id_bits) | tri_id


@torch.no_grad()
def visibility_torch(clip: Tensor, faces: Tensor, height: int, width: int, cull_backfaces: bool) -> Tensor:
    """Triangle id per pixel centre. clip [B, V, 4], faces [F, 3] -> [B, H, W] int64 (-1 empty)."""
    B, F = clip.shape[0], faces.shape[0]
    zbuf = torch.full((B * height * width,), _KEY_EMPTY, dtype=torch.int64, device=clip.device)
    if F == 0:
        return torch.full((B, height, width), -1, dtype=torch.int64, device=clip.device)
    tri = clip[:, faces].reshape(B * F, 3, 4)  # [N, 3, 4], N = B * F
    c, det = homogeneous_edges(tri)
    keep = (det != 0) & torch.isfinite(det)
    if cull_backfaces:
        keep &= det < 0
    e_rows = c * det.sign()[:, None, None]  # [N, 3, 3] e_i(p) >= 0 inside
    z_plane = (tri[..., 2:3] * c).sum(-2) / torch.where(keep, det, torch.ones_like(det))[:, None]  # [N, 3]
    i0, i1, j0, j1 = _pixel_bounds(tri, height, width)
    nx, ny = (i1 - i0 + 1).clamp_min(0), (j1 - j0 + 1).clamp_min(0)
    count = torch.where(keep, nx * ny, torch.zeros_like(nx))  # [N]
    live = torch.nonzero(count > 0).squeeze(1)  # [L]
    if live.numel() == 0:
        return torch.full((B, height, width), -1, dtype=torch.int64, device=clip.device)
    table = torch.cat([e_rows.reshape(-1, 9), z_plane], -1)[live]  # [L, 12]
    batch_offset = torch.div(torch.arange(B * F, device=clip.device), F, rounding_mode="floor") * (height * width)
    ints = torch.stack([i0, j0, nx, batch_offset], -1)[live]  # [L, 4] (i0, j0, nx, batch pixel offset)
    ids = live % F  # [L] face id within the mesh
    id_bits = max(1, (F - 1).bit_length())
    counts = count[live]
    ends = counts.cumsum(0)  # [L]
    # split the live triangles into chunks of about _CHUNK_PAIRS candidate pairs each
    marks = torch.arange(_CHUNK_PAIRS, max(int(ends[-1]), _CHUNK_PAIRS), _CHUNK_PAIRS, device=clip.device)
    bounds = torch.searchsorted(ends, marks, right=True).tolist()
    starts = [0, *sorted(set(bounds))]
    stops = [*starts[1:], len(live)]
    sx, sy = 2.0 / width, 2.0 / height
    for a, b in zip(starts, stops, strict=True):
        if b <= a:
            continue
        n = counts[a:b]  # [T]
        total = int(n.sum())
        local_tri = torch.repeat_interleave(torch.arange(b - a, device=clip.device), n, output_size=total)  # [M]
        first = (ends[a:b] - n - (ends[a - 1] if a > 0 else 0))[local_tri]  # [M]
        local = torch.arange(total, device=clip.device) - first
        ti = ints[a:b][local_tri]  # [M, 4]
        row = torch.div(local, ti[:, 2], rounding_mode="floor")
        col = ti[:, 0] + local - row * ti[:, 2]
        row = row + ti[:, 1]
        x = (col.to(clip.dtype) + 0.5) * sx - 1  # [M] NDC of the pixel centre
        y = (row.to(clip.dtype) + 0.5) * sy - 1
        co = table[a:b][local_tri]  # [M, 12]
        e0 = co[:, 0] * x + co[:, 1] * y + co[:, 2]
        e1 = co[:, 3] * x + co[:, 4] * y + co[:, 5]
        e2 = co[:, 6] * x + co[:, 7] * y + co[:, 8]
        zz = co[:, 9] * x + co[:, 10] * y + co[:, 11]
        inside = (e0 >= 0) & (e1 >= 0) & (e2 >= 0) & (e0 + e1 + e2 > 0) & (zz >= -1) & (zz <= 1)
        sel = torch.nonzero(inside).squeeze(1)
        if sel.numel() == 0:
            continue
        pix = ti[sel, 3] + row[sel] * width + col[sel]
        keys = _depth_keys(zz[sel], ids[a:b][local_tri[sel]], id_bits)
        zbuf.scatter_reduce_(0, pix, keys, reduce="amin")
    tri_id = torch.where(zbuf == _KEY_EMPTY, torch.full_like(zbuf, -1), zbuf & ((1 << id_bits) - 1))
    return tri_id.reshape(B, height, width)


def resolve_surface(clip: Tensor, faces: Tensor, triangle_id: Tensor) -> Rasterization:
    """Differentiable barycentrics, w and z/w at the pixel centres for given ids [B, H, W]."""
    B, H, W = triangle_id.shape
    flat = triangle_id.reshape(-1)
    idx = torch.nonzero(flat >= 0).squeeze(1)  # [P]
    bi = torch.div(idx, H * W, rounding_mode="floor")
    pix = idx - bi * (H * W)
    row = torch.div(pix, W, rounding_mode="floor")
    col = pix - row * W
    tri = clip[bi[:, None], faces[flat[idx]]]  # [P, 3, 4]
    p = torch.stack([(col.to(clip.dtype) + 0.5) * (2.0 / W) - 1, (row.to(clip.dtype) + 0.5) * (2.0 / H) - 1,
                     torch.ones(len(idx), dtype=clip.dtype, device=clip.device)], -1)  # [P, 3]
    c, det = homogeneous_edges(tri)  # [P, 3, 3], [P]
    e = (c * p[:, None, :]).sum(-1)  # [P, 3]
    s = e.sum(-1)  # [P]
    bary = e / s[:, None]
    w = det / s
    ndc_z = (bary * tri[..., 2]).sum(-1) / w
    n = B * H * W
    bary_full = clip.new_zeros(n, 3).index_put((idx,), bary)
    depth_full = clip.new_zeros(n).index_put((idx,), w)
    ndc_full = clip.new_full((n,), float("inf")).index_put((idx,), ndc_z)
    return Rasterization(triangle_id, bary_full.reshape(B, H, W, 3), depth_full.reshape(B, H, W),
                         ndc_full.reshape(B, H, W))


def rasterize(clip: Tensor, faces: Tensor, resolution: tuple[int, int], *,
              backend: mesh_backends.MeshBackend | str = mesh_backends.MeshBackend.AUTO,
              cull_backfaces: bool = False) -> Rasterization:
    """Rasterize triangles. clip [B, V, 4] or [V, 4] clip coordinates, faces [F, 3], resolution (H, W).

    ``backend``: "auto" (nvdiffrast, then pytorch3d, for CUDA inputs when installed; else torch),
    "torch", "nvdiffrast" or "pytorch3d". Backends only decide visibility; the differentiable
    barycentrics/depth are always recomputed here, so outputs and gradients share one definition.
    """
    clip, faces = check_mesh_inputs(clip, faces)
    height, width = _check_resolution(resolution)
    name = mesh_backends.select_backend(backend, clip)
    if name is mesh_backends.MeshBackend.NVDIFFRAST:
        tri_id = mesh_backends.visibility_nvdiffrast(clip, faces, height, width, cull_backfaces)
    elif name is mesh_backends.MeshBackend.PYTORCH3D:
        tri_id = mesh_backends.visibility_pytorch3d(clip, faces, height, width, cull_backfaces)
    else:
        tri_id = visibility_torch(clip, faces, height, width, cull_backfaces)
    return resolve_surface(clip, faces, tri_id)
