"""Packed ray samples and the sampler protocol shared by the volume renderer and its samplers.

Samples are packed like nerfacc's flattened format: ``ray_indices`` [S] (sorted, each ray's samples
contiguous and ordered by t), ``t_starts``/``t_ends`` [S]; rays may hold any number of samples (zero
included). volume.py composites them; occupancy.py and proposal.py produce them (:class:`RaySampler`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import Tensor


@dataclass(frozen=True)
class PackedSamples:
    ray_indices: Tensor  # [S] int64, sorted
    t_starts: Tensor  # [S]
    t_ends: Tensor  # [S]
    n_rays: int

    def __len__(self) -> int:
        return self.ray_indices.shape[0]

    @property
    def t_mids(self) -> Tensor:  # [S]
        return (self.t_starts + self.t_ends) / 2

    def positions(self, origins: Tensor, directions: Tensor) -> Tensor:  # [R, 3] x2 -> [S, 3]
        return origins[self.ray_indices] + directions[self.ray_indices] * self.t_mids[:, None]

    def select(self, keep: Tensor) -> PackedSamples:  # [S] bool
        return PackedSamples(self.ray_indices[keep], self.t_starts[keep], self.t_ends[keep], self.n_rays)


@dataclass(frozen=True)
class ProposalLevel:
    edges: Tensor  # [R, M + 1] sample edges (ray distance) of one proposal level
    weights: Tensor  # [R, M] its rendering weights (with grad to the proposal network)


@dataclass(frozen=True)
class Sampling:
    samples: PackedSamples
    proposal_levels: tuple[ProposalLevel, ...] = ()
    final_edges: Tensor | None = None  # [R, n + 1] when samples are n per ray (proposal sampling)


class RaySampler(Protocol):
    """Occupancy grids and proposal samplers: place samples on rays (already clipped to the box)."""

    def sample(self, origins: Tensor, directions: Tensor, t_near: Tensor, t_far: Tensor, hit: Tensor,
               stratified: bool) -> Sampling: ...
