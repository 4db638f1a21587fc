"""Which points cameras see: a depth-map test, for evaluating geometry only where a capture observed it.

A reconstruction from images can only recover surface some camera saw. Scans carry more than that: the LPS head
has a closed mouth cavity behind its lips, about a tenth of its area, that no camera outside the head can see.
Geometry benchmarks therefore score the scan's *observed* surface, as the DTU benchmark does with its observation
masks, next to the whole-scan figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from headforge.geometry.cameras import Cameras
from headforge.geometry.rays import project_points


def depth_map_visibility(points: Tensor, cameras: Cameras, depths: Sequence[Tensor], tolerance: float,
                         chunk: int = 1 << 18) -> Tensor:
    """How many cameras see each point: points [P, 3] (world), N cameras, N depth maps [H, W] -> counts [P] int64.

    A camera sees a point when the point projects inside its image, in front of it, onto a pixel whose depth map
    holds a surface (depth > 0) no more than ``tolerance`` (metres, camera-space z) in front of the point's own
    depth. The pixel is the one the point falls in (depth maps are sampled at pixel centres, no interpolation:
    interpolating across a silhouette invents surfaces); ``tolerance`` must cover the depth change within one
    pixel on slanted surfaces and the depth maps' quantisation.
    """
    if points.ndim != 2 or points.shape[-1] != 3:
        raise ValueError(f"points must be [P, 3], got {tuple(points.shape)}")
    if len(depths) != len(cameras):
        raise ValueError(f"{len(cameras)} cameras but {len(depths)} depth maps")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 metres, got {tolerance}")
    counts = torch.zeros(len(points), dtype=torch.int64)
    for i, depth in enumerate(depths):
        h, w = depth.shape
        if (h, w) != (int(cameras.height[i]), int(cameras.width[i])):
            raise ValueError(f"depth map {i} is {w}x{h} but {cameras.name(i)} is "
                             f"{int(cameras.width[i])}x{int(cameras.height[i])}")
        cam, depth = cameras[i], depth.double()
        for s in range(0, len(points), chunk):
            p = points[s:s + chunk].to(cameras.fx.dtype)
            uv, z = project_points(cam, p)  # [1, p, 2], [1, p]
            uv, z = uv[0].double(), z[0].double()
            col, row = uv[:, 0].floor().long(), uv[:, 1].floor().long()
            inside = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
            d = torch.zeros_like(z)
            d[inside] = depth[row[inside], col[inside]]
            counts[s:s + chunk] += (inside & (d > 0) & (z - d <= tolerance)).long()
    return counts
