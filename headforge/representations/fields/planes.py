"""Tri-plane (EG3D) and tri-grid (PanoHead) feature encodings.

Points are in [-1, 1]^3 (the field maps its bounding box there). The three planes and their axes:

====== ============== ============== ===================
plane  column (grid x) row (grid y)   depth (tri-grid)
====== ============== ============== ===================
xy     x              y              z
xz     x              z              y
yz     y              z              x
====== ============== ============== ===================

- **Tri-plane**: ``planes`` [3, C, R, R]; each plane is sampled bilinearly with ``grid_sample``
  (``align_corners=False``: texel centres at (i + 0.5) / R * 2 - 1, ``padding_mode="border"``).
- **Tri-grid**: ``volumes`` [3, C, D, R, R]; plane k gets D slices along its normal (the depth column above)
  and is sampled trilinearly with the 5-D ``grid_sample`` (same conventions). This separates features in front
  of and behind the plane, e.g. the face (z > 0) from the back of the head for the xy plane. With D = 1 the
  depth coordinate is clamped onto the single slice (border padding), so tri-grid(D=1) equals the tri-plane.

The three features are **summed** (EG3D, PanoHead) into C channels (``reduce="sum"``) or **concatenated**
into 3 C channels (``reduce="concat"``, plane order xy, xz, yz).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import annotated_types as at
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headforge.validation import MAX_IMAGE_SIDE, Checked, Count, Positive

PLANE_AXES = ((0, 1, 2), (0, 2, 1), (1, 2, 0))  # (column, row, depth) axis of each plane: xy, xz, yz


class Reduce(StrEnum):
    SUM = "sum"  # add the three planes' features
    CONCAT = "concat"  # concatenate them (3x the channels)


@dataclass(frozen=True)
class PlaneConfig(Checked):
    resolution: Annotated[int, at.Ge(2), at.Le(MAX_IMAGE_SIDE)] = 128  # R (each plane is R x R texels)
    channels: Count = 16  # C per plane
    depth: Count = 1  # D slices per plane for the tri-grid (ignored by the tri-plane)
    reduce: Reduce = Reduce.SUM
    init_scale: Positive = 0.1  # features ~ N(0, init_scale^2)

    @property
    def output_dim(self) -> int:
        return self.channels * (3 if self.reduce is Reduce.CONCAT else 1)


def _reduce(feats: list[Tensor], reduce: Reduce) -> Tensor:  # 3 x [N, C] -> [N, C] or [N, 3C]
    return feats[0] + feats[1] + feats[2] if reduce == Reduce.SUM else torch.cat(feats, -1)


def sample_triplane(planes: Tensor, x: Tensor, reduce: Reduce = Reduce.SUM) -> Tensor:
    """planes [3, C, R, R], x [N, 3] in [-1, 1] -> [N, C] (sum) or [N, 3C] (concat)."""
    if planes.ndim != 4 or planes.shape[0] != 3:
        raise ValueError(f"tri-plane features must be [3, C, R, R], got {tuple(planes.shape)}")
    feats = []
    for k, (a, b, _) in enumerate(PLANE_AXES):
        grid = torch.stack([x[:, a], x[:, b]], -1)[None, :, None, :].to(planes.dtype)  # [1, N, 1, 2]
        out = F.grid_sample(planes[k:k + 1], grid, mode="bilinear", padding_mode="border",
                            align_corners=False)  # [1, C, N, 1]
        feats.append(out[0, :, :, 0].T)  # [N, C]
    return _reduce(feats, reduce)


def sample_trigrid(volumes: Tensor, x: Tensor, reduce: Reduce = Reduce.SUM) -> Tensor:
    """volumes [3, C, D, R, R], x [N, 3] in [-1, 1] -> [N, C] (sum) or [N, 3C] (concat)."""
    if volumes.ndim != 5 or volumes.shape[0] != 3:
        raise ValueError(f"tri-grid features must be [3, C, D, R, R], got {tuple(volumes.shape)}")
    feats = []
    for k, (a, b, d) in enumerate(PLANE_AXES):
        grid = torch.stack([x[:, a], x[:, b], x[:, d]], -1)[None, :, None, None, :].to(volumes.dtype)  # [1,N,1,1,3]
        out = F.grid_sample(volumes[k:k + 1], grid, mode="bilinear", padding_mode="border",
                            align_corners=False)  # [1, C, N, 1, 1]
        feats.append(out[0, :, :, 0, 0].T)  # [N, C]
    return _reduce(feats, reduce)


class TriPlaneEncoding(nn.Module):
    def __init__(self, cfg: PlaneConfig):
        super().__init__()
        self.cfg = cfg
        R, C = cfg.resolution, cfg.channels
        self.planes = nn.Parameter(torch.randn(3, C, R, R) * cfg.init_scale)

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    def forward(self, x: Tensor) -> Tensor:  # [..., 3] in [-1, 1] -> [..., C or 3C]
        shape = x.shape[:-1]
        return sample_triplane(self.planes, x.reshape(-1, 3), self.cfg.reduce).reshape(*shape, self.output_dim)


class TriGridEncoding(nn.Module):
    def __init__(self, cfg: PlaneConfig):
        super().__init__()
        self.cfg = cfg
        R, C, D = cfg.resolution, cfg.channels, cfg.depth
        self.volumes = nn.Parameter(torch.randn(3, C, D, R, R) * cfg.init_scale)

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    def forward(self, x: Tensor) -> Tensor:  # [..., 3] in [-1, 1] -> [..., C or 3C]
        shape = x.shape[:-1]
        return sample_trigrid(self.volumes, x.reshape(-1, 3), self.cfg.reduce).reshape(*shape, self.output_dim)

    @classmethod
    def from_triplane(cls, triplane: TriPlaneEncoding, depth: int = 1) -> TriGridEncoding:
        """A tri-grid whose D slices all copy the tri-plane (equal to it for any point)."""
        cfg = PlaneConfig(triplane.cfg.resolution, triplane.cfg.channels, depth, triplane.cfg.reduce,
                          triplane.cfg.init_scale)
        grid = cls(cfg)
        with torch.no_grad():
            grid.volumes.copy_(triplane.planes[:, :, None].expand_as(grid.volumes))
        return grid
