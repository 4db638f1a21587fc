"""Initial Gaussians for a capture: the masks' visual hull, or a random cloud in the capture bounds."""

from __future__ import annotations

import torch
from torch import Tensor

from headforge.errors import CaptureError
from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import project_points
from headforge.stages.views import ViewBatch


def _sample_pixels(images: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest-pixel lookup. images [N, H, W, C], uv [N, P, 2] -> values [N, P, C], inside [N, P] bool."""
    n, h, w, _ = images.shape
    col = uv[..., 0].floor().long()
    row = uv[..., 1].floor().long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1))
    values = torch.gather(images.reshape(n, h * w, -1), 1, flat[..., None].expand(-1, -1, images.shape[-1]))
    return values, inside


def visual_hull(cameras: Cameras, alphas: Tensor, lo: Tensor, hi: Tensor, resolution: int = 96,
                threshold: float = 0.5) -> Tensor:
    """Occupancy [R, R, R] (indexing x, y, z) of the voxels that project inside every mask that sees them.

    cameras [N]; alphas [N, H, W]; lo/hi [3] box corners. A voxel outside a view's image is not carved
    by that view; a voxel seen by no view is carved.
    """
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution) for i in range(3)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    keep = torch.ones(grid.shape[0], dtype=torch.bool)
    seen = torch.zeros(grid.shape[0], dtype=torch.int64)
    for i in range(len(cameras)):
        uv, z = project_points(cameras[i], grid.to(cameras.fx.dtype))
        a, inside = _sample_pixels(alphas[i:i + 1, ..., None], uv)
        inside = inside[0] & (z[0] > 0)
        keep &= ~inside | (a[0, :, 0] > threshold)
        seen += inside.long()
    return (keep & (seen > 0)).reshape(resolution, resolution, resolution)


def hull_surface_points(occupancy: Tensor, lo: Tensor, hi: Tensor, count: int,
                        generator: torch.Generator | None = None) -> Tensor:
    """``count`` points [count, 3] jittered inside the hull's boundary voxels (occupied, with an empty
    6-neighbour)."""
    occ = occupancy
    pad = torch.nn.functional.pad(occ[None, None].float(), (1, 1, 1, 1, 1, 1))[0, 0] > 0.5
    interior = occ.clone()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= torch.roll(pad, shift, axis)[1:-1, 1:-1, 1:-1]
    surface = (occ & ~interior).nonzero()
    if len(surface) == 0:
        raise CaptureError("the masks' visual hull is empty: no point projects inside every mask",
                           fix="check that the masks belong to the cameras (poses, image order), "
                               "or initialise randomly (--init random)")
    res = torch.tensor(occ.shape, dtype=torch.float32)
    voxel = (hi - lo) / (res - 1)
    pick = surface[torch.randint(len(surface), (count,), generator=generator)]
    jitter = torch.rand(count, 3, generator=generator) - 0.5
    return lo + (pick.float() + jitter) * voxel


def point_colors(points: Tensor, views: ViewBatch) -> Tensor:
    """Median colour [P, 3] of each point over the views whose image it projects into."""
    uv, z = project_points(views.cameras, points.to(views.cameras.fx.dtype))
    colors, inside = _sample_pixels(views.images, uv)
    inside &= z > 0
    if views.alphas is not None:
        a, _ = _sample_pixels(views.alphas[..., None], uv)
        inside &= a[..., 0] > 0.5
    colors = torch.where(inside[..., None], colors, torch.full_like(colors, float("nan")))
    med = colors.nanmedian(dim=0).values
    return torch.nan_to_num(med, nan=0.5).clamp(0, 1)


def random_points(lo: Tensor, hi: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    return lo + torch.rand(count, 3, generator=generator) * (hi - lo)
