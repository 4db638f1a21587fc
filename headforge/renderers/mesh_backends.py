"""Optional GPU rasterization backends (nvdiffrast, pytorch3d) behind :func:`mesh_raster.rasterize`.

A backend only computes *visibility*: the triangle id [B, H, W] (int64, -1 empty) covering each pixel
centre. ``mesh_raster.resolve_surface`` then recomputes barycentrics, w and z/w differentiably from
the clip positions, so every backend yields the same outputs and gradients up to ties and edge pixels.

nvdiffrast (``nvdiffrast.torch.rasterize``): output channels are (u, v, z/w, triangle_id + 1) with
0 in the last channel for empty pixels; its interpolate kernel uses b0 = u, b1 = v, b2 = 1 - u - v
(u weights vertex 0, v vertex 1). Its pixel centres and memory layout (row 0 at NDC y = -1) are the
ones headforge uses, and it clips against -w <= z <= w like the torch path. The id is stored as a
float32, so it is exact only for meshes below 2**24 triangles. nvdiffrast never culls; with
``cull_backfaces`` each batch element is rasterized with its own front-facing subset of the faces.

pytorch3d (``pytorch3d.renderer.mesh.rasterize_meshes``): NDC has +x left and +y up with the shorter
image side spanning [-1, 1], so x and y are negated and scaled by (W, H) / min(H, W). It projects
vertices itself (x/w, y/w), so triangles with a vertex at w <= 0 or outside the near/far slab are
dropped (the torch and nvdiffrast paths clip them exactly); zbuf uses w, which orders fragments like
z/w for any projection whose z/w increases with w (headforge's does).
"""

from __future__ import annotations

import importlib.util
from enum import StrEnum

import torch
from torch import Tensor


class MeshBackend(StrEnum):
    AUTO = "auto"  # nvdiffrast, then pytorch3d, for CUDA inputs when installed; else torch
    TORCH = "torch"
    NVDIFFRAST = "nvdiffrast"
    PYTORCH3D = "pytorch3d"


_NVDR_CONTEXTS: dict[torch.device, object] = {}


def has_nvdiffrast() -> bool:
    if not torch.cuda.is_available() or importlib.util.find_spec("nvdiffrast") is None:
        return False
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        return False
    return True


def has_pytorch3d() -> bool:
    if not torch.cuda.is_available() or importlib.util.find_spec("pytorch3d") is None:
        return False
    try:
        from pytorch3d.renderer.mesh import rasterize_meshes  # noqa: F401
    except ImportError:
        return False
    return True


def select_backend(backend: MeshBackend | str, clip: Tensor) -> MeshBackend:
    """Resolve "auto" and check that an explicitly requested backend can run on ``clip``."""
    try:
        backend = MeshBackend(backend)
    except ValueError:
        raise ValueError(f"unknown rasterizer backend {backend!r}; choose one of {', '.join(MeshBackend)}") from None
    if backend is MeshBackend.TORCH:
        return backend
    if backend is MeshBackend.AUTO:
        if clip.is_cuda and has_nvdiffrast():
            return MeshBackend.NVDIFFRAST
        if clip.is_cuda and has_pytorch3d():
            return MeshBackend.PYTORCH3D
        return MeshBackend.TORCH
    available = has_nvdiffrast() if backend is MeshBackend.NVDIFFRAST else has_pytorch3d()
    if not available:
        raise ValueError(f"rasterizer backend {backend!r} is not available: it needs CUDA and the "
                         f"{backend} package (install it, or use backend='torch')")
    if not clip.is_cuda:
        raise ValueError(f"rasterizer backend {backend!r} needs CUDA tensors; clip is on {clip.device}")
    return backend


def front_facing(clip: Tensor, faces: Tensor) -> Tensor:  # [B, V, 4], [F, 3] -> [B, F] bool
    """det[v0 v1 v2] of the (x, y, w) columns < 0 <=> counter-clockwise seen from outside (y-down NDC)."""
    v = clip[:, faces][..., (0, 1, 3)]  # [B, F, 3, 3]
    return torch.linalg.det(v) < 0


def _nvdr_context(device: torch.device):
    import nvdiffrast.torch as dr

    if device not in _NVDR_CONTEXTS:
        _NVDR_CONTEXTS[device] = dr.RasterizeCudaContext(device=device)
    return _NVDR_CONTEXTS[device]


@torch.no_grad()
def visibility_nvdiffrast(clip: Tensor, faces: Tensor, height: int, width: int,
                          cull_backfaces: bool) -> Tensor:
    """Triangle ids [B, H, W] int64 from nvdiffrast (see module docstring for its conventions)."""
    import nvdiffrast.torch as dr

    ctx = _nvdr_context(clip.device)
    pos = clip.detach().float().contiguous()  # [B, V, 4]
    if not cull_backfaces:
        rast, _ = dr.rasterize(ctx, pos, faces.int().contiguous(), resolution=[height, width])
        return rast[..., 3].long() - 1  # [B, H, W]; channel 3 is triangle_id + 1, 0 = empty
    front = front_facing(clip.detach(), faces)  # [B, F]
    out = []
    for b in range(clip.shape[0]):
        keep = torch.nonzero(front[b]).squeeze(1)  # [F'] original ids of the kept faces
        if keep.numel() == 0:
            out.append(torch.full((height, width), -1, dtype=torch.int64, device=clip.device))
            continue
        rast, _ = dr.rasterize(ctx, pos[b:b + 1].contiguous(), faces[keep].int().contiguous(),
                               resolution=[height, width])
        local = rast[0, ..., 3].long() - 1
        out.append(torch.where(local >= 0, keep[local.clamp_min(0)], local))
    return torch.stack(out)


@torch.no_grad()
def visibility_pytorch3d(clip: Tensor, faces: Tensor, height: int, width: int,
                         cull_backfaces: bool) -> Tensor:
    """Triangle ids [B, H, W] int64 from pytorch3d's rasterizer (see module docstring)."""
    from pytorch3d.renderer.mesh import rasterize_meshes
    from pytorch3d.structures import Meshes

    pos = clip.detach().float()
    w = pos[..., 3]  # [B, V]
    inside = (w > 0) & (pos[..., 2].abs() <= w)  # [B, V] in front of the camera, within near/far
    safe_w = torch.where(w > 0, w, torch.ones_like(w))
    scale = min(height, width)
    verts = torch.stack([-pos[..., 0] / safe_w * (width / scale), -pos[..., 1] / safe_w * (height / scale),
                         w], -1)  # [B, V, 3] pytorch3d NDC (+x left, +y up), z = view depth
    keep = inside[:, faces].all(-1)  # [B, F]
    if cull_backfaces:
        keep &= front_facing(clip.detach(), faces)
    kept = [torch.nonzero(keep[b]).squeeze(1) for b in range(clip.shape[0])]  # original ids per element
    meshes = Meshes(verts=list(verts), faces=[faces[k] for k in kept])
    pix_to_face, _, _, _ = rasterize_meshes(meshes, image_size=(height, width), faces_per_pixel=1,
                                            blur_radius=0.0, perspective_correct=False)
    p2f = pix_to_face[..., 0]  # [B, H, W] packed index, -1 empty
    first = meshes.mesh_to_faces_packed_first_idx()  # [B]
    out = torch.full_like(p2f, -1)
    for b in range(clip.shape[0]):
        local = p2f[b] - first[b]
        out[b] = torch.where(p2f[b] >= 0, kept[b][local.clamp(0, max(len(kept[b]) - 1, 0))], -1)
    return out.long()
