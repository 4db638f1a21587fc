"""Occupancy grid for empty-space skipping (Instant-NGP; nerfacc's ``OccGridEstimator``, one level).

A binary grid of ``resolution^3`` cells over the field's box. During training, every ``update_every`` steps,
cells are re-scored: all cells while ``step < warmup_steps``, afterwards a quarter of the cells drawn uniformly
plus as many currently occupied ones. A cell's score is ``density(random point in the cell) * step_size``
(an opacity estimate), kept as ``occs = max(occs * ema_decay, score)``; the binary grid is
``occs > min(occ_thre, mean of the positive occs)`` (nerfacc's rule). Ray marching places uniform steps of
``step_size`` between the box entry and exit and keeps those whose midpoint falls in an occupied cell.

The grid starts fully occupied (safe before the first update). Cell (i, j, k) covers x in
lo + [i, i + 1) * size / res (and so on), stored as ``binaries[i, j, k]`` like nerfacc.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import annotated_types as at
import torch
from torch import Tensor, nn

from headforge.renderers.samples import PackedSamples, Sampling
from headforge.validation import Checked, Count, Fraction, NonNegative, NonNegativeInt, Positive


@dataclass(frozen=True)
class OccupancyConfig(Checked):
    resolution: Annotated[int, at.Ge(1), at.Le(1024)] = 128  # cells per side (1024^3 bytes: 1 GiB)
    step_size: Positive | None = None  # marching step in metres; None: box diagonal / 512
    occ_thre: NonNegative = 0.01
    ema_decay: Fraction = 0.95
    warmup_steps: NonNegativeInt = 256
    update_every: Count = 16
    chunk: Count = 1 << 16  # points per density evaluation during updates


def cell_points(indices: Tensor, res: int, lo: Tensor, hi: Tensor, jitter: Tensor) -> Tensor:
    """Flat cell indices [N] + jitter [N, 3] in [0, 1) -> world points [N, 3] inside those cells."""
    ijk = torch.stack([indices // (res * res), (indices // res) % res, indices % res], -1)  # [N, 3]
    return lo + (ijk.to(lo.dtype) + jitter) / res * (hi - lo)


def point_cells(points: Tensor, res: int, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """World points [N, 3] -> flat cell index [N] (clamped) and inside-box mask [N]."""
    u = (points - lo) / (hi - lo)  # [N, 3]
    inside = ((u >= 0) & (u <= 1)).all(-1)
    ijk = (u * res).floor().long().clamp(0, res - 1)
    return (ijk[:, 0] * res + ijk[:, 1]) * res + ijk[:, 2], inside


def ema_update(occs: Tensor, indices: Tensor, scores: Tensor, decay: float) -> Tensor:  # [C], [N], [N] -> [C]
    out = occs.clone()
    out[indices] = torch.maximum(occs[indices] * decay, scores)
    return out


def sdf_occupancy_density(sdf: Tensor, cell_diagonal: float, step_size: float) -> Tensor:  # [N, 1] -> [N, 1]
    """A stand-in density that scores an SDF field's cells by distance alone: ``1 / step_size`` (a cell score of 1)
    where ``sdf < cell_diagonal``, else 0.

    With |grad sdf| ~ 1 (the eikonal loss), any point of a cell that holds surface is within one cell diagonal of
    it, so no cell the surface passes through is skipped however sharp the density gets; cells inside stay occupied
    (early stopping drops their samples). Scoring with VolSDF's density instead marks the cells just outside the
    surface empty once beta is small (opacity per step below ``occ_thre`` a few beta out), and the surface then
    cannot grow into them."""
    return (sdf < cell_diagonal).to(sdf.dtype) / step_size


def binarize(occs: Tensor, occ_thre: float) -> Tensor:  # [C] -> [C] bool
    positive = occs[occs > 0]
    thre = min(occ_thre, float(positive.mean())) if len(positive) else occ_thre
    return occs > thre


class OccupancyGrid(nn.Module):
    """Buffers only (occs, binaries); bounds in metres, usually the field's box."""

    def __init__(self, cfg: OccupancyConfig, bounds_lo: Tensor, bounds_hi: Tensor):
        super().__init__()
        self.cfg = cfg
        res = cfg.resolution
        self.register_buffer("lo", torch.as_tensor(bounds_lo, dtype=torch.float32).clone())
        self.register_buffer("hi", torch.as_tensor(bounds_hi, dtype=torch.float32).clone())
        self.register_buffer("occs", torch.zeros(res ** 3))
        self.register_buffer("binaries", torch.ones(res, res, res, dtype=torch.bool))
        diag = float((self.hi - self.lo).norm())
        self.step_size = cfg.step_size if cfg.step_size is not None else diag / 512

    @property
    def n_cells(self) -> int:
        return self.cfg.resolution ** 3

    @property
    def cell_diagonal(self) -> float:  # metres
        return float(((self.hi - self.lo) / self.cfg.resolution).norm())

    def occupied_fraction(self) -> float:
        return float(self.binaries.float().mean())

    @torch.no_grad()
    def update(self, step: int, density_fn: Callable[[Tensor], Tensor], generator: torch.Generator | None = None):
        """Re-score cells with ``density_fn`` (points [N, 3] -> sigma [N, 1]) and re-binarise."""
        dev = self.occs.device
        if step < self.cfg.warmup_steps:
            indices = torch.arange(self.n_cells, device=dev)
        else:
            n = self.n_cells // 4
            uniform = torch.randint(self.n_cells, (n,), generator=generator).to(dev)
            occupied = self.binaries.flatten().nonzero()[:, 0]
            if len(occupied) > n:
                occupied = occupied[torch.randint(len(occupied), (n,), generator=generator).to(dev)]
            indices = torch.cat([uniform, occupied])
        jitter = torch.rand(len(indices), 3, generator=generator).to(dev)
        pts = cell_points(indices, self.cfg.resolution, self.lo, self.hi, jitter)
        scores = torch.cat([density_fn(c).reshape(-1) for c in pts.split(self.cfg.chunk)]) * self.step_size
        self.occs.copy_(ema_update(self.occs, indices, scores.to(self.occs), self.cfg.ema_decay))
        self.binaries.copy_(binarize(self.occs, self.cfg.occ_thre).view_as(self.binaries))

    def update_every_n_steps(self, step: int, density_fn: Callable[[Tensor], Tensor],
                             generator: torch.Generator | None = None) -> bool:
        if step % self.cfg.update_every == 0:
            self.update(step, density_fn, generator)
            return True
        return False

    def occupied(self, points: Tensor) -> Tensor:  # [N, 3] -> [N] bool (False outside the box)
        idx, inside = point_cells(points, self.cfg.resolution, self.lo.to(points), self.hi.to(points))
        return self.binaries.flatten()[idx] & inside

    @torch.no_grad()
    def march(self, origins: Tensor, directions: Tensor, t_near: Tensor, t_far: Tensor, hit: Tensor,
              stratified: bool, skip: bool = True, generator: torch.Generator | None = None) -> PackedSamples:
        """Uniform steps of ``step_size`` from t_near (+ U[0, step) if stratified) to t_far [R]; with ``skip``
        only the steps whose midpoint lies in an occupied cell are kept. The last step is cut at t_far."""
        R = origins.shape[0]
        step = self.step_size
        start = t_near.clone()
        if stratified:
            start = start + torch.rand(R, generator=generator).to(start) * step
        span = torch.where(hit, t_far - start, torch.zeros_like(start)).clamp_min(0)
        n_max = int(math.ceil(float(span.max()) / step)) if R > 0 else 0
        k = torch.arange(n_max, device=origins.device, dtype=origins.dtype)
        t0 = start[:, None] + k * step  # [R, n_max]
        t1 = torch.minimum(t0 + step, t_far[:, None])
        keep = (t0 < t_far[:, None]) & hit[:, None]
        if skip and n_max > 0:
            mids = origins[:, None] + directions[:, None] * ((t0 + t1) / 2)[..., None]  # [R, n_max, 3]
            keep &= self.occupied(mids.reshape(-1, 3)).view(R, n_max)
        rays = torch.arange(R, device=origins.device)[:, None].expand(R, n_max)
        return PackedSamples(rays[keep], t0[keep], t1[keep], R)

    def sampler(self, skip: bool = True) -> OccupancySampler:
        return OccupancySampler(self, skip)


@dataclass(frozen=True)
class OccupancySampler:
    """The :class:`~headforge.renderers.samples.RaySampler` for ``render_rays``; ``skip=False`` marches the same
    steps without skipping (the reference for "same render, fewer samples")."""

    grid: OccupancyGrid
    skip: bool = True

    def sample(self, origins: Tensor, directions: Tensor, t_near: Tensor, t_far: Tensor, hit: Tensor,
               stratified: bool) -> Sampling:
        return Sampling(self.grid.march(origins, directions, t_near, t_far, hit, stratified, self.skip))
